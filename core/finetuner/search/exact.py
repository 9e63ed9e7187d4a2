"""Exact nearest-neighbour search: chunked matrix products with a running top-k.

The index is read in chunks of rows and the queries in blocks, so the only large temporary is one
``query block x index chunk`` score matrix (64 MiB at the defaults) whatever the index size. Each
chunk's best ``k`` per query are merged into a running top-k.

Excluded pairs (the query itself, or an index item with the query's id) get a score of ``-inf``
before selection, so ``k`` candidates per chunk always leave ``k`` real results when that many
exist: no extra candidates have to be fetched, however many items one id excludes.

Ties go to the lower index position, across chunks too. ``torch.topk`` picks arbitrarily among
equal scores at its cut-off, so a row whose k-th and (k+1)-th scores are equal is re-selected
with an explicit rule; the merge then orders by score and position (see ``order_candidates``).
"""

from __future__ import annotations

__all__ = ["exact_top_k"]

import numpy as np
import torch

from .constants import DEFAULT_INDEX_ROWS, DEFAULT_QUERY_ROWS
from .inputs import Embeddings, Exclusions
from .scoring import order_candidates, prepare_index, prepare_queries


def exact_top_k(
    queries: Embeddings,
    index: Embeddings,
    limit: int,
    distance: str,
    exclusions: Exclusions,
    *,
    query_rows: int = DEFAULT_QUERY_ROWS,
    index_rows: int = DEFAULT_INDEX_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """Ranking scores and index positions of each query's best ``min(limit, index rows)``.

    Rows are best first; a position is ``-1`` (score ``-inf``) where exclusion left too few.
    """
    k = min(limit, index.num_rows)
    num_queries = queries.num_rows
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
        take = above | (level & (level.cumsum(dim=1) <= needed))
        chosen = take.nonzero()[:, 1].view(-1, k)
        columns[ambiguous] = chosen.numpy()
        values[ambiguous] = sub.gather(1, chosen).numpy()
    return values, columns
