"""``evaluate_embeddings``: check the inputs, search, score, average."""

from __future__ import annotations

__all__ = [
    "AUTO_ANNOY_MIN_INDEX_ROWS",
    "SEARCHES",
    "EvaluationResult",
    "evaluate_embeddings",
]

import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, overload

import numpy as np
import torch

from finetuner.search import (
    annoy_top_k,
    exact_top_k,
    recall_against_exact,
    reported_scores,
)
from finetuner_evaluation._constants import (
    AUTO_ANNOY_MIN_INDEX_ROWS,
    DEFAULT_N_TREES,
    DISTANCES,
    SEARCHES,
)
from finetuner_evaluation._errors import ConfigError, DataError, unknown_choice_message
from finetuner_evaluation._inputs import (
    Embeddings,
    Exclusions,
    empty_exclusions,
    encode_pair,
    exclusions_by_id,
    exclusions_by_position,
)
from finetuner_evaluation._metrics import mean_metrics, query_scores, relevance_matrix

_DETAIL_ROWS = 1_024
_CALLER = "evaluate_embeddings"


@dataclass(frozen=True, slots=True)
class EvaluationResult:
    """The metrics and what they were computed from (``return_details=True``).

    ``indices`` and ``scores`` are ``(queries, limit)``, best first. ``indices`` holds index
    positions (query positions when the queries are their own index), ``-1`` where fewer than
    ``limit`` results exist. ``scores`` holds cosine similarity, or the (squared) euclidean
    distance, and NaN where there is no result. Queries whose label has no other relevant item
    (``R = 0``) are not in the means; ``num_queries_skipped`` counts them. ``relevant`` flags
    each result that is relevant, and ``query_ndcg`` is each query's ``ndcg_at_k`` (NaN where
    the query cannot be scored). ``annoy_recall`` (annoy search only, else ``None``) is the
    mean share of each query's exact top-``limit`` that annoy found, checked with exact search
    on up to 1,000 queries drawn at random.
    """

    metrics: Mapping[str, float]
    num_queries_scored: int
    num_queries_skipped: int
    approximate: bool
    search: str
    distance: str
    limit: int
    indices: np.ndarray
    scores: np.ndarray
    relevant: np.ndarray | None = None
    query_ndcg: np.ndarray | None = None
    annoy_recall: float | None = None


@overload
def evaluate_embeddings(
    query_embeddings: Any,
    query_labels: Any,
    index_embeddings: Any = ...,
    index_labels: Any = ...,
    *,
    limit: int = ...,
    distance: str = ...,
    exclude_self: bool = ...,
    search: str = ...,
    query_ids: Any = ...,
    index_ids: Any = ...,
    n_trees: int = ...,
    search_k: int | None = ...,
    return_details: Literal[False] = ...,
    _chunk_rows: int | None = ...,
) -> dict[str, float]: ...


@overload
def evaluate_embeddings(
    query_embeddings: Any,
    query_labels: Any,
    index_embeddings: Any = ...,
    index_labels: Any = ...,
    *,
    limit: int = ...,
    distance: str = ...,
    exclude_self: bool = ...,
    search: str = ...,
    query_ids: Any = ...,
    index_ids: Any = ...,
    n_trees: int = ...,
    search_k: int | None = ...,
    return_details: Literal[True],
    _chunk_rows: int | None = ...,
) -> EvaluationResult: ...


def evaluate_embeddings(
    query_embeddings: Any,
    query_labels: Any,
    index_embeddings: Any = None,
    index_labels: Any = None,
    *,
    limit: int = 20,
    distance: str = "cosine",
    exclude_self: bool = True,
    search: str = "exact",
    query_ids: Any = None,
    index_ids: Any = None,
    n_trees: int = DEFAULT_N_TREES,
    search_k: int | None = None,
    return_details: bool = False,
    _chunk_rows: int | None = None,
) -> dict[str, float] | EvaluationResult:
    """Retrieval metrics of labelled embeddings, as defined in METRICS.md.

    Each query retrieves its ``limit`` nearest index items; a result is relevant when it has the
    query's label. Without ``index_embeddings`` the queries are searched among themselves and
    ``exclude_self`` drops each query's own position. With an index, ``exclude_self`` drops index
    items whose id (``index_ids``) equals the query's id (``query_ids``); without ids nothing is
    dropped. ``R``, the number of relevant items, does not count dropped ones.

    Returns the mean of each of the eight metrics over the queries with ``R > 0`` (NaN if there
    are none) as a dict of floats, or an :class:`EvaluationResult` when ``return_details``.

    ``search`` is ``"exact"``, ``"annoy"`` (approximate; ``n_trees`` and ``search_k`` tune it,
    ``search_k=None`` meaning ``10 * n_trees * candidates``) or ``"auto"`` (annoy from
    :data:`AUTO_ANNOY_MIN_INDEX_ROWS` index rows on). Ties in score go to the lower position.
    """
    _check_options(limit, distance, search, n_trees, search_k, _chunk_rows)
    queries = Embeddings(query_embeddings, "query_embeddings", caller=_CALLER)
    self_search = index_embeddings is None
    if self_search:
        if index_labels is not None:
            raise DataError(
                "evaluate_embeddings: index_labels was given without index_embeddings; "
                "pass both, or neither to search the queries among themselves."
            )
        if query_ids is not None or index_ids is not None:
            raise DataError(
                "evaluate_embeddings: query_ids/index_ids only apply with index_embeddings; "
                "without an index each query's own position is excluded."
            )
        index = queries
    else:
        if index_labels is None:
            raise DataError(
                "evaluate_embeddings: index_embeddings was given without index_labels; "
                "pass one label per index row."
            )
        index = Embeddings(index_embeddings, "index_embeddings", caller=_CALLER)
        if index.dim != queries.dim:
            raise DataError(
                f"evaluate_embeddings: query_embeddings have {queries.dim} dimensions but "
                f"index_embeddings have {index.dim}; both must come from the same model."
            )
    queries.check_finite()
    if not self_search:
        index.check_finite()
    _check_result_memory(limit, queries.num_rows, index.num_rows)

    query_codes, index_codes = encode_pair(
        query_labels,
        None if self_search else index_labels,
        names=("query_labels", "index_labels"),
        counts=(queries.num_rows, index.num_rows),
    )
    if index_codes is None:
        index_codes = query_codes
    exclusions = _exclusions(
        exclude_self, self_search, query_ids, index_ids, queries.num_rows, index.num_rows
    )

    use_annoy, ranking, positions = ranked_search(
        queries,
        index,
        limit,
        distance,
        exclusions,
        search=search,
        n_trees=n_trees,
        search_k=search_k,
        chunk_rows=_chunk_rows,
    )

    positions_np = _pad(positions, limit, -1)
    num_relevant = np.bincount(index_codes, minlength=int(query_codes.max()) + 1)[query_codes]
    num_relevant = num_relevant - exclusions.removed_relevant(query_codes, index_codes)
    relevance = relevance_matrix(positions_np, query_codes, index_codes)
    metrics, num_scored = mean_metrics(relevance, num_relevant)
    if not return_details:
        return metrics
    annoy_recall = None
    if use_annoy:  # how much of the exact top-k annoy found, on a sample of queries
        annoy_recall, _ = recall_against_exact(
            queries, index, positions, limit, distance, exclusions
        )

    scores = np.empty(ranking.shape, dtype=np.float32)
    for start in range(0, queries.num_rows, _DETAIL_ROWS):
        stop = start + _DETAIL_ROWS
        block_positions = positions[start:stop]
        result_rows = None
        if distance != "cosine":
            result_rows = index.take(np.maximum(block_positions, 0).ravel())
            result_rows = result_rows.view(*block_positions.shape, index.dim)
        scores[start:stop] = reported_scores(
            torch.from_numpy(ranking[start:stop]), queries.rows(start, stop), result_rows, distance
        ).numpy()
    scores = _pad(scores, limit, np.nan)
    positions_np.setflags(write=False)
    scores.setflags(write=False)
    return EvaluationResult(
        metrics=MappingProxyType(metrics),
        num_queries_scored=num_scored,
        num_queries_skipped=queries.num_rows - num_scored,
        approximate=use_annoy,
        search="annoy" if use_annoy else "exact",
        distance=distance,
        limit=limit,
        indices=positions_np,
        scores=scores,
        relevant=relevance,
        query_ndcg=query_scores(relevance, num_relevant, "ndcg_at_k"),
        annoy_recall=annoy_recall,
    )


def ranked_search(
    queries: Any,
    index: Any,
    limit: int,
    distance: str,
    exclusions: Any,
    *,
    search: str,
    n_trees: int,
    search_k: int | None,
    chunk_rows: int | None = None,
    caller: str = _CALLER,
) -> tuple[bool, np.ndarray, np.ndarray]:
    """``(annoy was used, scores, positions)`` of each query's best *limit* index rows:
    annoy for ``search='annoy'`` (or ``'auto'`` on a large index), else exact search."""
    use_annoy = search == "annoy" or (
        search == "auto" and index.num_rows >= AUTO_ANNOY_MIN_INDEX_ROWS
    )
    if use_annoy:
        ranking, positions = annoy_top_k(
            queries,
            index,
            limit,
            distance,
            exclusions,
            n_trees=n_trees,
            search_k=search_k,
            caller=caller,
        )
    else:
        ranking, positions = exact_top_k(
            queries,
            index,
            limit,
            distance,
            exclusions,
            query_rows=chunk_rows,
            index_rows=chunk_rows,
        )
    return use_annoy, ranking, positions


def _check_options(
    limit: Any,
    distance: Any,
    search: Any,
    n_trees: Any,
    search_k: Any,
    chunk_rows: Any,
) -> None:
    if not _is_int(limit) or limit < 1:
        raise ConfigError(
            f"evaluate_embeddings: limit must be a whole number of at least 1, got {limit!r}."
        )
    if distance not in DISTANCES:
        raise ConfigError(unknown_choice_message("distance", distance, DISTANCES))
    if search not in SEARCHES:
        raise ConfigError(unknown_choice_message("search", search, SEARCHES))
    if not _is_int(n_trees) or n_trees < 1:
        raise ConfigError(
            f"evaluate_embeddings: n_trees must be a whole number of at least 1, got {n_trees!r}."
        )
    if search_k is not None and (not _is_int(search_k) or search_k < 1):
        raise ConfigError(
            "evaluate_embeddings: search_k must be None (the default) or a whole number of at "
            f"least 1, got {search_k!r}."
        )
    if chunk_rows is not None and (not _is_int(chunk_rows) or chunk_rows < 1):
        raise ConfigError(
            f"evaluate_embeddings: _chunk_rows must be at least 1, got {chunk_rows!r}."
        )


# Each (query, result) cell of the ranked lists costs its position, score and relevance, and
# the per-query metrics' float64 temporaries: about this many bytes in all.
_RESULT_CELL_BYTES = 64


def _available_memory() -> int | None:
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def _check_result_memory(limit: int, num_queries: int, num_index: int) -> None:
    """Refuse a *limit* whose ``(queries, limit)`` results would not fit in memory, before
    they are allocated (a MemoryError later would say nothing of the cause)."""
    needed = num_queries * limit * _RESULT_CELL_BYTES
    available = _available_memory()
    if available is None or needed <= available:
        return
    raise ConfigError(
        f"evaluate_embeddings: limit={limit} needs about {needed / 2**30:,.1f} GiB for the "
        f"ranked results of {num_queries} queries, and this machine has "
        f"{available / 2**30:,.1f} GiB free; lower limit (the index has {num_index} rows, so "
        f"a limit above {num_index} finds nothing more)."
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _exclusions(
    exclude_self: bool,
    self_search: bool,
    query_ids: Any,
    index_ids: Any,
    num_queries: int,
    num_index: int,
) -> Exclusions:
    if not exclude_self:
        return empty_exclusions()
    if self_search:
        return exclusions_by_position(num_queries)
    if query_ids is None and index_ids is None:
        return empty_exclusions()
    if query_ids is None or index_ids is None:
        missing = "query_ids" if query_ids is None else "index_ids"
        raise DataError(
            f"evaluate_embeddings: {missing} is missing; exclude_self with an index compares "
            "query ids to index ids, so pass both (or neither to exclude nothing)."
        )
    query_id_codes, index_id_codes = encode_pair(
        query_ids, index_ids, names=("query_ids", "index_ids"), counts=(num_queries, num_index)
    )
    assert index_id_codes is not None
    return exclusions_by_id(query_id_codes, index_id_codes)


def _pad(values: np.ndarray, width: int, fill: float) -> np.ndarray:
    if values.shape[1] == width:
        return values
    padded = np.full((values.shape[0], width), fill, dtype=values.dtype)
    padded[:, : values.shape[1]] = values
    return padded


def truncate_vectors(vectors: np.ndarray, dim: int) -> np.ndarray:
    """The first *dim* components of each vector, scaled back to unit L2 norm (Matryoshka
    truncation, as ``finetuner.encode(..., truncate_dim=dim)`` does)."""
    head = np.asarray(vectors[:, :dim], dtype=np.float32)
    return head / np.clip(np.linalg.norm(head, axis=1, keepdims=True), 1e-12, None)
