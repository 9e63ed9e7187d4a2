"""Approximate nearest-neighbour search with annoy.

annoy only proposes candidates. Their scores are then computed exactly with the same code as the
exact search, excluded pairs are dropped and the rest ordered by the common ties rule, so the only
approximation is which candidates annoy finds.
"""

from __future__ import annotations

__all__ = ["annoy_top_k", "resolve_search_k"]

from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .constants import DEFAULT_SEARCH_K_FACTOR
from .inputs import Embeddings, Exclusions
from .scoring import order_candidates, prepare_index, prepare_queries

_ANNOY_SEED = 1234
_ROWS = 4_096
_RESCORE_ROWS = 1_024
_METRICS: dict[str, Any] = {
    "cosine": "angular",
    "euclidean": "euclidean",
    "sqeuclidean": "euclidean",
}


def resolve_search_k(search_k: int | None, n_trees: int, num_candidates: int) -> int:
    """annoy inspects about ``search_k`` nodes per query; by default 10x annoy's own default."""
    if search_k is not None:
        return search_k
    return DEFAULT_SEARCH_K_FACTOR * n_trees * num_candidates


def annoy_top_k(
    queries: Embeddings,
    index: Embeddings,
    limit: int,
    distance: str,
    exclusions: Exclusions,
    *,
    n_trees: int,
    search_k: int | None,
    caller: str = "search",
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`exact_top_k`, with candidates from an annoy forest built over the index."""
    try:
        from annoy import AnnoyIndex  # loaded only when an approximate search runs
    except ImportError as exc:
        raise ConfigError(
            f"{caller}: search='annoy' needs the annoy package "
            f"({exc}); install it with 'pip install annoy' or use search='exact'."
        ) from exc

    num_queries, num_index = queries.num_rows, index.num_rows
    k = min(limit, num_index)
    num_candidates = min(num_index, k + exclusions.max_per_query)
    nodes = resolve_search_k(search_k, n_trees, num_candidates)

    forest = AnnoyIndex(index.dim, _METRICS[distance])
    forest.set_seed(_ANNOY_SEED)
    for start in range(0, num_index, _ROWS):
        # A memoryview row is the fastest sequence annoy reads (no Python float list).
        for offset, row in enumerate(index.rows(start, start + _ROWS).numpy()):
            forest.add_item(start + offset, memoryview(row))
    forest.build(n_trees, n_jobs=-1)

    candidates = np.full((num_queries, num_candidates), -1, dtype=np.int64)
    for start in range(0, num_queries, _ROWS):
        for offset, row in enumerate(queries.rows(start, start + _ROWS).numpy()):
            found = forest.get_nns_by_vector(memoryview(row), num_candidates, search_k=nodes)
            candidates[start + offset, : len(found)] = found
    forest.unload()

    excluded_codes = exclusions.query_pos * num_index + exclusions.index_pos
    best_scores = np.empty((num_queries, k), dtype=np.float32)
    best_positions = np.empty((num_queries, k), dtype=np.int64)
    with torch.no_grad():
        for start in range(0, num_queries, _RESCORE_ROWS):
            stop = min(start + _RESCORE_ROWS, num_queries)
            block = candidates[start:stop]
            pair_codes = np.arange(start, stop, dtype=np.int64)[:, None] * num_index + block
            usable = (block >= 0) & ~np.isin(pair_codes, excluded_codes)
            positions = np.where(usable, block, -1)
            query_vectors = prepare_queries(queries.rows(start, stop), distance)
            index_vectors = prepare_index(index.take(np.maximum(positions, 0).ravel()), distance)
            index_vectors = index_vectors.view(stop - start, num_candidates, -1)
            scores = torch.bmm(index_vectors, query_vectors.unsqueeze(2)).squeeze(2).numpy()
            scores[~usable] = -np.inf
            best_scores[start:stop], best_positions[start:stop] = order_candidates(
                scores, positions, k
            )
    best_positions[np.isneginf(best_scores)] = -1
    return best_scores, best_positions
