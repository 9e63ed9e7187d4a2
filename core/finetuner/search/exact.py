"""Exact nearest-neighbour search: chunked matrix products with a running top-k.

The queries are read in blocks and the index in chunks, so the only large temporary is one
``query block x index chunk`` score tile; each tile's best ``k`` per query are merged into a
running top-k. :func:`plan_chunks` sizes blocks and chunks from a memory budget (512 MiB by
default): the search's extra memory beyond its inputs and its ``(queries, k)`` result stays
within the budget whatever the number of queries or index rows (a million rows of dimension 384
need no more than ten). Only a single query whose ``2k`` merge candidates alone exceed the
budget goes over it.

Excluded pairs (the query itself, or an index item with the query's id) get a score of ``-inf``
before selection, so ``k`` candidates per chunk always leave ``k`` real results when that many
exist: no extra candidates have to be fetched, however many items one id excludes.

Ties go to the lower index position, across chunks too. ``torch.topk`` picks arbitrarily among
equal scores at its cut-off, so a row whose k-th and (k+1)-th scores are equal is re-selected
with an explicit rule; the merge then orders by score and position (see ``order_candidates``).
Results do not depend on the chunk sizes.
"""

from __future__ import annotations

__all__ = ["exact_top_k", "plan_chunks"]

import numpy as np
import torch

from .constants import DEFAULT_MEMORY_BUDGET, DEFAULT_QUERY_ROWS
from .inputs import Embeddings, Exclusions
from .scoring import order_candidates, prepare_index, prepare_queries

#: Bytes per cell of the score tile: the float32 score, and at most as much again four times
#: over for a row whose cut-off is tied (its copy, comparison masks, an int32 running count).
_TILE_CELL_BYTES = 24
#: Bytes per vector component of a prepared row: the float32 copy, a temporary, the result.
_ROW_COMPONENT_BYTES = 12
#: Bytes per query and result slot of the merge: a tile's k+1 candidates, the 2k concatenated
#: scores and positions, their sort order and the kept k.
_MERGE_SLOT_BYTES = 96
#: The budget prefers index chunks of at least this many rows to taller query blocks.
_MIN_INDEX_ROWS = 1_024


def plan_chunks(
    num_queries: int, num_index: int, dim: int, k: int, memory_budget: int
) -> tuple[int, int]:
    """``(query_rows, index_rows)`` whose temporaries fit in *memory_budget* bytes.

    Query blocks of up to ``DEFAULT_QUERY_ROWS``, halved while the index chunk that fits beside
    them would be narrower than ``min(index rows, 1,024)``; the chunk then takes what is left.
    """
    row_bytes = _ROW_COMPONENT_BYTES * (dim + 1)
    query_rows = max(1, min(num_queries, DEFAULT_QUERY_ROWS))
    while True:
        fixed = query_rows * (row_bytes + _MERGE_SLOT_BYTES * k)
        index_rows = (memory_budget - fixed) // (query_rows * _TILE_CELL_BYTES + row_bytes)
        if index_rows >= min(num_index, _MIN_INDEX_ROWS) or query_rows == 1:
            break
        query_rows = max(1, query_rows // 2)
    return query_rows, int(min(max(index_rows, 1), num_index))


def exact_top_k(
    queries: Embeddings,
    index: Embeddings,
    limit: int,
    distance: str,
    exclusions: Exclusions,
    *,
    query_rows: int | None = None,
    index_rows: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> tuple[np.ndarray, np.ndarray]:
    """Ranking scores and index positions of each query's best ``min(limit, index rows)``.

    Rows are best first; a position is ``-1`` (score ``-inf``) where exclusion left too few.
    Block and chunk sizes come from *memory_budget* (bytes, see :func:`plan_chunks`) unless
    ``query_rows`` / ``index_rows`` fix them; the results are the same either way.
    """
    k = min(limit, index.num_rows)
    num_queries = queries.num_rows
    planned = plan_chunks(num_queries, index.num_rows, index.dim, k, memory_budget)
    query_rows = query_rows or planned[0]
    index_rows = index_rows or planned[1]
    best_scores = np.full((num_queries, k), -np.inf, dtype=np.float32)
    best_positions = np.full((num_queries, k), -1, dtype=np.int64)
    with torch.no_grad():
        for c0 in range(0, index.num_rows, index_rows):
            chunk = prepare_index(index.rows(c0, c0 + index_rows), distance)
            c1 = c0 + chunk.shape[0]
            chunk_t = chunk.T
            for b0 in range(0, num_queries, query_rows):
                block = prepare_queries(queries.rows(b0, b0 + query_rows), distance)
                b1 = b0 + block.shape[0]
                scores = block @ chunk_t
                _mask_excluded(scores, exclusions, b0, b1, c0, c1)
                cand_scores, cand_positions = _chunk_top_k(scores, k)
                del scores
                best_scores[b0:b1], best_positions[b0:b1] = order_candidates(
                    np.concatenate([best_scores[b0:b1], cand_scores], axis=1),
                    np.concatenate([best_positions[b0:b1], cand_positions + c0], axis=1),
                    k,
                )
    best_positions[np.isneginf(best_scores)] = -1
    return best_scores, best_positions


def _mask_excluded(
    scores: torch.Tensor, exclusions: Exclusions, b0: int, b1: int, c0: int, c1: int
) -> None:
    query_pos, index_pos = exclusions.for_queries(b0, b1)
    inside = (index_pos >= c0) & (index_pos < c1)
    if inside.any():
        rows = torch.from_numpy(query_pos[inside] - b0)
        cols = torch.from_numpy(index_pos[inside] - c0)
        scores[rows, cols] = float("-inf")


def _chunk_top_k(scores: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best columns of each row under the ties rule (all, if fewer), in any order."""
    num_rows, width = scores.shape
    if width <= k:
        every = np.broadcast_to(np.arange(width, dtype=np.int64), (num_rows, width))
        return scores.numpy(), every
    top_values, top_columns = torch.topk(scores, k + 1, dim=1, sorted=True)
    values, columns = top_values.numpy(), top_columns.numpy()
    ambiguous = np.flatnonzero(values[:, k - 1] == values[:, k])
    values, columns = values[:, :k].copy(), columns[:, :k].copy()
    if ambiguous.size:
        # Everything above the k-th score, then the lowest columns that equal it.
        rows = torch.from_numpy(ambiguous)
        sub = scores[rows]
        cutoff = torch.from_numpy(values[ambiguous, k - 1 :])
        above = sub > cutoff
        level = sub == cutoff
        needed = k - above.sum(dim=1, keepdim=True)
        take = above | (level & (level.cumsum(dim=1, dtype=torch.int32) <= needed))
        chosen = take.nonzero()[:, 1].view(-1, k)
        columns[ambiguous] = chosen.numpy()
        values[ambiguous] = sub.gather(1, chosen).numpy()
    return values, columns
