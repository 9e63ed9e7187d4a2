"""``mine_hard_negatives``: embed queries and corpus, search, filter, write training rows."""

from __future__ import annotations

__all__ = ["MiningSummary", "mine_hard_negatives"]

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, close_matches_hint
from ..search import ANNOY_MIN_INDEX_ROWS, DEFAULT_N_TREES
from .inputs import QueryGroups, group_pairs, read_corpus, read_pairs
from .model import encode_texts, progress_bar, resolve_model
from .select import SAMPLINGS, Selection, select_negatives

logger = logging.getLogger("finetuner.mining")

SEARCHES = ("auto", "exact", "annoy")
_CALLER = "mine_hard_negatives"
_QUERY_BLOCK = 4_096  # queries per search call: one progress step
# Larger blocks than evaluation's defaults (1,024 x 16,384): on 2 cores, 10,000 x 100,000 x 384
# searches in about a fifth less time, for a 256 MiB score matrix instead of 64 MiB.
_SEARCH_QUERY_ROWS = 2_048
_SEARCH_INDEX_ROWS = 32_768


@dataclass(frozen=True)
class MiningSummary:
    """What mining did: sizes, how many candidates each filter dropped, queries kept."""

    queries: int
    corpus: int
    search: str
    candidates: int
    known_positive: int
    outside_range: int
    margin: int
    max_score: int
    eligible: int
    queries_kept: int
    queries_dropped: int
    num_negatives: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"mined {self.queries_kept} of {self.queries} queries ({self.num_negatives} "
            f"negatives each) against {self.corpus} documents ({self.search} search); "
            f"{self.queries_dropped} queries dropped for having fewer than {self.num_negatives} "
            f"usable candidates.\n"
            f"candidates: {self.candidates}; dropped as known positive: {self.known_positive}, "
            f"outside the range: {self.outside_range}, by the margin: {self.margin}, "
            f"by max_score: {self.max_score}; usable: {self.eligible}."
        )


def _check_options(
    num_negatives: int,
    range_min: int,
    range_max: int,
    margin: float | None,
    max_score: float | None,
    sampling: str,
    search: str,
    batch_size: int,
) -> None:
    def whole(name: str, value: Any, least: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{_CALLER}: {name} must be an integer >= {least}, not {value!r}.")

    whole("num_negatives", num_negatives, 1)
    whole("range_min", range_min, 0)
    whole("range_max", range_max, 1)
    whole("batch_size", batch_size, 1)
    if range_max - range_min < num_negatives:
        raise ConfigError(
            f"{_CALLER}: range_min={range_min} and range_max={range_max} leave "
            f"{max(range_max - range_min, 0)} ranks, fewer than num_negatives={num_negatives}; "
            "raise range_max or lower range_min."
        )
    for name, value in (("margin", margin), ("max_score", max_score)):
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise ConfigError(f"{_CALLER}: {name} must be a finite number or None, not {value!r}.")
    for option, given, choices in (("sampling", sampling, SAMPLINGS), ("search", search, SEARCHES)):
        if given not in choices:
            allowed = ", ".join(f"'{c}'" for c in choices)
            hint = close_matches_hint(given, choices) if isinstance(given, str) else ""
            raise ConfigError(f"{_CALLER}: unknown {option} {given!r}; use one of {allowed}.{hint}")


def _search(
    queries: np.ndarray, corpus: np.ndarray, k: int, use_annoy: bool, advance: Callable[[int], None]
) -> tuple[np.ndarray, np.ndarray]:
    from ..search import Embeddings, annoy_top_k, empty_exclusions, exact_top_k

    index = Embeddings(corpus, "corpus embeddings", caller=_CALLER)
    index.check_finite()
    none = empty_exclusions()
    if use_annoy:
        found = annoy_top_k(
            Embeddings(queries, "query embeddings", caller=_CALLER),
            index,
            k,
            "cosine",
            none,
            n_trees=DEFAULT_N_TREES,
            search_k=None,
            caller=_CALLER,
        )
        advance(queries.shape[0])
        return found
    scores, positions = [], []
    for start in range(0, queries.shape[0], _QUERY_BLOCK):
        block = Embeddings(
            queries[start : start + _QUERY_BLOCK], "query embeddings", caller=_CALLER
        )
        block.check_finite()
        s, p = exact_top_k(
            block,
            index,
            k,
            "cosine",
            none,
            query_rows=_SEARCH_QUERY_ROWS,
            index_rows=_SEARCH_INDEX_ROWS,
        )
        scores.append(s)
        positions.append(p)
        advance(block.num_rows)
    return np.concatenate(scores), np.concatenate(positions)


def _normalized(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


def _lowest_positive_scores(
    groups: QueryGroups,
    query_emb: np.ndarray,
    doc_index: dict[str, int],
    corpus_emb: np.ndarray,
    encode_texts: Callable[[list[str]], np.ndarray],
) -> np.ndarray:
    """Per query, the lowest cosine similarity to one of its positives."""
    missing = list(
        dict.fromkeys(t for texts in groups.positives for t in texts if t not in doc_index)
    )
    extra = encode_texts(missing) if missing else corpus_emb[:0]
    extra_index = {text: i for i, text in enumerate(missing)}
    query_pos, vectors = [], []
    for q, texts in enumerate(groups.positives):
        for text in texts:
            query_pos.append(q)
            i = doc_index.get(text)
            vectors.append(corpus_emb[i] if i is not None else extra[extra_index[text]])
    qpos = np.asarray(query_pos, dtype=np.int64)
    sims = (_normalized(query_emb[qpos]) * _normalized(np.stack(vectors))).sum(axis=1)
    lowest = np.full(len(groups.queries), np.inf, dtype=np.float32)
    np.minimum.at(lowest, qpos, sims.astype(np.float32))
    return lowest


def _pair_codes(groups: QueryGroups, doc_index: dict[str, int]) -> tuple[np.ndarray, int]:
    """``query * documents + document`` of every known positive in the corpus, and the most
    one query has."""
    query_pos, doc_pos = (np.asarray(p, dtype=np.int64) for p in groups.pair_positions(doc_index))
    most = int(np.bincount(query_pos).max()) if query_pos.size else 0
    return query_pos * len(doc_index) + doc_pos, most


def _documents(corpus: Any, groups: QueryGroups) -> list[str]:
    """The distinct corpus texts, in order; by default every positive."""
    texts = (
        read_corpus(corpus) if corpus is not None else [p for ps in groups.positives for p in ps]
    )
    return list(dict.fromkeys(texts))


def _result(
    groups: QueryGroups,
    documents: list[str],
    selection: Selection,
    use_annoy: bool,
    num_negatives: int,
) -> tuple[list[dict[str, Any]], MiningSummary]:
    rows = [
        {"query": query, "pos": list(pos), "neg": [documents[i] for i in chosen]}
        for query, pos, chosen, kept in zip(
            groups.queries, groups.positives, selection.positions.tolist(), selection.kept
        )
        if kept
    ]
    summary = MiningSummary(
        queries=len(groups.queries),
        corpus=len(documents),
        search="annoy" if use_annoy else "exact",
        num_negatives=num_negatives,
        **selection.counts,
    )
    return rows, summary


def mine_from_embeddings(
    groups: QueryGroups,
    documents: list[str],
    query_emb: np.ndarray,
    corpus_emb: np.ndarray,
    *,
    num_negatives: int = 5,
    range_min: int = 0,
    range_max: int = 100,
    margin: float | None = None,
    max_score: float | None = None,
    sampling: str = "top",
    search: str = "auto",
    seed: int = 0,
    positive_scores: Callable[[], np.ndarray] | None = None,
    advance: Callable[[int], None] = lambda n: None,
) -> tuple[list[dict[str, Any]], MiningSummary]:
    """The search, filters and rows of :func:`mine_hard_negatives`, on given embeddings.

    *documents* are distinct texts (row ``i`` of *corpus_emb* embeds ``documents[i]``);
    *positive_scores* computes each query's lowest positive score when *margin* needs it.
    """
    doc_index = {text: i for i, text in enumerate(documents)}
    num_docs = len(documents)
    pair_codes, most_known = _pair_codes(groups, doc_index)
    use_annoy = search == "annoy" or (search == "auto" and num_docs >= ANNOY_MIN_INDEX_ROWS)
    # range_max results besides the known positives: these take no rank
    k = min(num_docs, range_max + most_known)
    scores, positions = _search(query_emb, corpus_emb, k, use_annoy, advance)
    rows_times_docs = np.arange(len(groups.queries), dtype=np.int64)[:, None] * num_docs
    known = np.isin(rows_times_docs + positions, pair_codes)
    lowest = None
    if margin is not None:
        lowest = (
            positive_scores()
            if positive_scores is not None
            else _lowest_positive_scores(groups, query_emb, doc_index, corpus_emb, _no_encoding)
        )
    selection = select_negatives(
        scores,
        positions,
        known,
        lowest,
        num_negatives=num_negatives,
        range_min=range_min,
        range_max=range_max,
        margin=margin,
        max_score=max_score,
        sampling=sampling,
        seed=seed,
    )
    return _result(groups, documents, selection, use_annoy, num_negatives)


def _no_encoding(texts: list[str]) -> np.ndarray:
    raise ConfigError(
        f"{_CALLER}: margin needs the positives' embeddings, and {len(texts)} positives are "
        "not in the corpus; pass positive_scores."
    )


def mine_hard_negatives(
    model: Any,
    pairs: Any,
    corpus: Any = None,
    *,
    num_negatives: int = 5,
    range_min: int = 0,
    range_max: int = 100,
    margin: float | None = None,
    max_score: float | None = None,
    sampling: str = "top",
    batch_size: int = 32,
    seed: int = 0,
    search: str = "auto",
    model_options: Mapping[str, Any] | None = None,
    progress: bool = True,
    return_summary: bool = False,
) -> Any:
    """Mine hard negatives for (query, positive) *pairs*: training rows for in-batch losses.

    Returns one ``{"query": str, "pos": [str, ...], "neg": [str, ...]}`` dict per distinct
    query that has *num_negatives* usable candidates (others are dropped and counted), which
    ``finetuner.fit`` takes as training data; with *return_summary* also a
    :class:`MiningSummary`. The summary is logged (logger ``finetuner.mining``, INFO). See
    ``docs/concepts/mining.md`` for the filters and :mod:`finetuner.mining.select` for the rules.
    """
    _check_options(
        num_negatives, range_min, range_max, margin, max_score, sampling, search, batch_size
    )
    groups = group_pairs(read_pairs(pairs))
    documents = _documents(corpus, groups)
    embedder = resolve_model(model, model_options, batch_size)
    with progress_bar(progress) as task:

        def embed(texts: list[str], what: str) -> np.ndarray:
            return encode_texts(embedder, texts, batch_size, task(f"encoding {what}", len(texts)))

        query_emb, corpus_emb = embed(groups.queries, "queries"), embed(documents, "corpus")

        doc_index = {text: i for i, text in enumerate(documents)}
        rows, summary = mine_from_embeddings(
            groups,
            documents,
            query_emb,
            corpus_emb,
            num_negatives=num_negatives,
            range_min=range_min,
            range_max=range_max,
            margin=margin,
            max_score=max_score,
            sampling=sampling,
            search=search,
            seed=seed,
            positive_scores=lambda: _lowest_positive_scores(
                groups, query_emb, doc_index, corpus_emb, lambda texts: embed(texts, "positives")
            ),
            advance=task("searching", len(groups.queries)),
        )
    logger.info("%s", summary)
    return (rows, summary) if return_summary else rows
