"""``evaluate_qrels``: retrieval metrics from graded relevance judgments, at several cut-offs.

Each query retrieves its ``max(k)`` best corpus documents (score descending, equal scores in
corpus order, as every search of :mod:`finetuner.search` ranks them); the metrics at each
cut-off ``k`` read the first ``k`` of them. A document is relevant when its grade is above 0;
``R`` is the number of relevant documents judged for the query. ``dcg`` sums
``grade / log2(rank + 1)`` (grades at or below 0 gain nothing) and ``ndcg`` divides it by the
DCG of the ideal list: the query's judged grades, highest first, cut at ``k``. The other
metrics are those of METRICS.md on the binary relevance (``map`` is ``average_precision``,
divided by ``min(R, k)``, and ``mrr`` is ``reciprocal_rank``). Queries with ``R = 0`` (no
judgment, or none above 0) are left out of the means and counted.
"""

from __future__ import annotations

__all__ = ["QrelsResult", "evaluate_qrels", "graded_metrics"]

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from finetuner_evaluation._constants import (
    DEFAULT_N_TREES,
    QRELS_METRIC_NAMES,
)
from finetuner_evaluation._errors import DataError
from finetuner_evaluation._evaluate import _check_options, _pad, ranked_search
from finetuner_evaluation._inputs import (
    Embeddings,
    empty_exclusions,
    encode_pair,
    exclusions_by_id,
)
from finetuner_evaluation._metrics import per_query_metrics
from finetuner_evaluation._qrels import (
    check_cutoffs,
    check_distinct,
    check_judgments,
    qrels_source,
    read_qrels,
)

_CALLER = "evaluate_qrels"
_BINARY_NAMES = {
    "precision": "precision_at_k",
    "recall": "recall_at_k",
    "f1_score": "f1_score_at_k",
    "hit": "hit_at_k",
    "map": "average_precision",
    "mrr": "reciprocal_rank",
}


@dataclass(frozen=True, slots=True)
class QrelsResult:
    """The means and what they were computed from.

    ``metrics`` maps ``{name}_at_{k}`` to the mean over scored queries. ``per_query`` maps the
    same keys to one value per query (NaN for a skipped query). ``indices`` is
    ``(queries, max(k))``: corpus positions, best first, ``-1`` past the corpus's end.
    """

    metrics: Mapping[str, float]
    per_query: Mapping[str, np.ndarray]
    num_queries_scored: int
    num_queries_skipped: int
    approximate: bool
    search: str
    distance: str
    cutoffs: tuple[int, ...]
    indices: np.ndarray


def evaluate_qrels(
    query_embeddings: Any,
    query_ids: Sequence[Any],
    corpus_embeddings: Any,
    corpus_ids: Sequence[Any],
    qrels: Any,
    *,
    k: Any = (1, 10, 100),
    distance: str = "cosine",
    exclude_self: bool = True,
    search: str = "exact",
    n_trees: int = DEFAULT_N_TREES,
    search_k: int | None = None,
    return_details: bool = False,
) -> dict[str, float] | QrelsResult:
    """Graded retrieval metrics of query and corpus embeddings against relevance judgments.

    ``qrels`` is a ``{query id: {document id: grade}}`` mapping, a TREC qrels file or a BEIR
    TSV; every id it names must be in ``query_ids`` / ``corpus_ids`` (distinct strings, one
    per embedding row). ``k`` is one cut-off or several. ``exclude_self`` drops a corpus
    document whose id equals the query's, from the results and from the judgments.
    ``search`` and ``distance`` are those of :func:`evaluate_embeddings`.

    Returns ``{name}_at_{k}`` means (the names of ``QRELS_METRIC_NAMES``), or a
    :class:`QrelsResult` when ``return_details``.
    """
    cutoffs = check_cutoffs(_CALLER, k)
    limit = max(cutoffs)
    _check_options(limit, distance, search, n_trees, search_k, None)
    queries = Embeddings(query_embeddings, "query_embeddings", caller=_CALLER)
    corpus = Embeddings(corpus_embeddings, "corpus_embeddings", caller=_CALLER)
    if corpus.dim != queries.dim:
        raise DataError(
            f"{_CALLER}: query_embeddings have {queries.dim} dimensions but corpus_embeddings "
            f"have {corpus.dim}; both must come from the same model."
        )
    queries.check_finite()
    corpus.check_finite()
    qids, dids = (
        _ids(query_ids, "query_ids", queries.num_rows),
        _ids(corpus_ids, "corpus_ids", corpus.num_rows),
    )
    judgments = read_qrels(qrels)
    check_judgments(judgments, qids, dids, ("query_ids", "corpus_ids", qrels_source(qrels)))
    use_annoy, positions = _search(
        queries, corpus, (qids, dids), limit, distance, exclude_self, search, n_trees, search_k
    )
    positions = _pad(positions, limit, -1)
    gains, ideal, relevant = judged_gains(
        positions, qids, dids, judgments, exclude_self=exclude_self
    )
    per_query = graded_metrics(gains, ideal, cutoffs, num_relevant=relevant)
    scored = ~np.isnan(per_query[f"{QRELS_METRIC_NAMES[0]}_at_{cutoffs[0]}"])
    count = int(scored.sum())
    metrics = {
        key: float(values[scored].mean()) if count else float("nan")
        for key, values in per_query.items()
    }
    if not return_details:
        return metrics
    positions.setflags(write=False)
    return QrelsResult(
        metrics=MappingProxyType(metrics),
        per_query=MappingProxyType(per_query),
        num_queries_scored=count,
        num_queries_skipped=queries.num_rows - count,
        approximate=use_annoy,
        search="annoy" if use_annoy else "exact",
        distance=distance,
        cutoffs=cutoffs,
        indices=positions,
    )


def _search(
    queries: Embeddings,
    corpus: Embeddings,
    ids: tuple[list[str], list[str]],
    limit: int,
    distance: str,
    exclude_self: bool,
    search: str,
    n_trees: int,
    search_k: int | None,
) -> tuple[bool, np.ndarray]:
    """Whether annoy ran, and each query's best ``limit`` corpus positions."""
    qids, dids = ids
    exclusions = empty_exclusions()
    if exclude_self:
        q_codes, d_codes = encode_pair(
            qids, dids, names=("query_ids", "corpus_ids"), counts=(len(qids), len(dids))
        )
        assert d_codes is not None
        exclusions = exclusions_by_id(q_codes, d_codes)
    use_annoy, _, positions = ranked_search(
        queries,
        corpus,
        limit,
        distance,
        exclusions,
        search=search,
        n_trees=n_trees,
        search_k=search_k,
        caller=_CALLER,
    )
    return use_annoy, positions


def _ids(values: Sequence[Any], name: str, rows: int) -> list[str]:
    ids = [str(v) for v in values]
    if len(ids) != rows:
        raise DataError(
            f"{_CALLER}: {name} has {len(ids)} ids but there are {rows} embedding rows; pass "
            "one id per row."
        )
    check_distinct(ids, name)
    return ids


def judged_gains(
    positions: np.ndarray,
    query_ids: list[str],
    corpus_ids: list[str],
    judgments: Mapping[str, Mapping[str, int]],
    *,
    exclude_self: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The grade of each result (0 when unjudged or absent); each query's judged grades above
    0, highest first, cut or zero-padded to the width of *positions*; and ``R``, each query's
    number of relevant documents, which may exceed that width."""
    num_queries, width = positions.shape
    corpus_row = {doc_id: row for row, doc_id in enumerate(corpus_ids)}
    ideal = np.zeros((num_queries, width), dtype=np.float64)
    relevant = np.zeros(num_queries, dtype=np.int64)
    keys, grades = [], []
    for row, qid in enumerate(query_ids):
        judged = {
            corpus_row[d]: g
            for d, g in judgments.get(qid, {}).items()
            if g > 0 and not (exclude_self and d == qid)
        }
        best = sorted(judged.values(), reverse=True)[:width]
        ideal[row, : len(best)] = best
        relevant[row] = len(judged)
        keys.extend(row * len(corpus_ids) + col for col in judged)
        grades.extend(judged.values())
    gains = np.zeros((num_queries, width), dtype=np.float64)
    if keys:
        order = np.argsort(keys)
        sorted_keys = np.asarray(keys, dtype=np.int64)[order]
        sorted_grades = np.asarray(grades, dtype=np.float64)[order]
        wanted = np.arange(num_queries, dtype=np.int64)[:, None] * len(corpus_ids) + positions
        at = np.minimum(np.searchsorted(sorted_keys, wanted), len(sorted_keys) - 1)
        hit = (positions >= 0) & (sorted_keys[at] == wanted)
        gains[hit] = sorted_grades[at[hit]]
    return gains, ideal, relevant


def graded_metrics(
    gains: np.ndarray,
    ideal: np.ndarray,
    cutoffs: Sequence[int],
    *,
    num_relevant: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Every metric at every cut-off, per query; NaN for queries with no relevant document.

    ``gains`` is ``(queries, max(cutoffs))``, the grade at each rank; ``ideal`` the same shape,
    each query's relevant grades highest first. ``num_relevant`` is ``R`` per query; without
    it, ``R`` is the count of non-zeros of ``ideal``, which is right only when no query has
    more relevant documents than ``max(cutoffs)`` (recall divides by the whole ``R``).
    """
    if num_relevant is None:
        num_relevant = (ideal > 0).sum(axis=1)
    scored = num_relevant > 0
    out: dict[str, np.ndarray] = {}
    for k in cutoffs:
        discounts = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
        binary = per_query_metrics(gains[scored, :k] > 0, num_relevant[scored])
        dcg = gains[scored, :k] @ discounts
        values = {name: binary[_BINARY_NAMES[name]] for name in _BINARY_NAMES}
        values["dcg"] = dcg
        values["ndcg"] = dcg / (ideal[scored, :k] @ discounts)
        for name in QRELS_METRIC_NAMES:
            column = np.full(gains.shape[0], np.nan)
            column[scored] = values[name]
            out[f"{name}_at_{k}"] = column
    return out
