"""The search's options and defaults, in a module that imports nothing (no torch, no annoy)."""

from __future__ import annotations

__all__ = [
    "ANNOY_MIN_INDEX_ROWS",
    "DEFAULT_INDEX_ROWS",
    "DEFAULT_N_TREES",
    "DEFAULT_QUERY_ROWS",
    "DEFAULT_SEARCH_K_FACTOR",
    "DISTANCES",
]

DISTANCES = ("cosine", "euclidean", "sqeuclidean")

#: Exact search reads the index in chunks of this many rows, the queries in blocks of
#: ``DEFAULT_QUERY_ROWS``: one block x chunk float32 score matrix is 64 MiB.
DEFAULT_QUERY_ROWS = 1_024
DEFAULT_INDEX_ROWS = 16_384

#: annoy's forest size, and ``search_k`` as a multiple of ``n_trees x candidates``.
DEFAULT_N_TREES = 10
DEFAULT_SEARCH_K_FACTOR = 10

#: Hard-negative mining searches with annoy from this many corpus documents on (more than
#: 100,000), exactly below; evaluation has its own, higher switch (exactness matters there).
ANNOY_MIN_INDEX_ROWS = 100_001
