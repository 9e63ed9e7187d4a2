"""How much of the exact top-k an approximate search found, checked on a sample of queries."""

from __future__ import annotations

__all__ = ["DEFAULT_RECALL_QUERIES", "recall_against_exact"]

import numpy as np

from .constants import DEFAULT_MEMORY_BUDGET
from .exact import exact_top_k
from .inputs import Embeddings, Exclusions

#: The exact check searches at most this many queries, drawn at random (seeded).
DEFAULT_RECALL_QUERIES = 1_000


def recall_against_exact(
    queries: Embeddings,
    index: Embeddings,
    found: np.ndarray,
    limit: int,
    distance: str,
    exclusions: Exclusions,
    *,
    sample_size: int = DEFAULT_RECALL_QUERIES,
    seed: int = 0,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> tuple[float, int]:
    """The mean share of each query's exact top ``min(limit, index rows)`` present in *found*.

    *found* holds the approximate search's index positions, ``(queries, k)`` with ``-1`` for
    none. Exact search runs on all queries, or on ``sample_size`` of them drawn with *seed*.
    Returns the recall (NaN when no sampled query has an exact result) and the number of
    queries checked. Where the exact k-th score is tied, an approximate result with that same
    score but another position counts as a miss.
    """
    num_queries, num_index = queries.num_rows, index.num_rows
    if sample_size >= num_queries:
        rows = np.arange(num_queries, dtype=np.int64)
    else:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(num_queries, size=sample_size, replace=False))
    sampled = Embeddings(queries.take(rows).numpy(), queries.name, caller=queries.caller)
    _, exact = exact_top_k(
        sampled, index, limit, distance, exclusions.subset(rows), memory_budget=memory_budget
    )
    line = np.arange(rows.size, dtype=np.int64)[:, None] * num_index
    approx = found[rows]
    approx_codes = (line + approx)[approx >= 0]
    present = np.isin(line + exact, approx_codes) & (exact >= 0)
    wanted = (exact >= 0).sum(axis=1)
    usable = wanted > 0
    if not usable.any():
        return float("nan"), int(rows.size)
    shares = present.sum(axis=1)[usable] / wanted[usable]
    return float(shares.mean()), int(rows.size)
