"""The search's options and defaults, in a module that imports nothing (no torch, no annoy)."""

from __future__ import annotations

__all__ = [
    "ANNOY_MIN_INDEX_ROWS",
    "DEFAULT_INDEX_ROWS",
    "DEFAULT_MEMORY_BUDGET",
    "DEFAULT_N_TREES",
    "DEFAULT_QUERY_ROWS",
    "DEFAULT_SEARCH_K_FACTOR",
    "DISTANCES",
]

DISTANCES = ("cosine", "euclidean", "sqeuclidean")

#: Exact search sizes its query blocks and index chunks so that its temporaries (score tile,
#: prepared rows, top-k merge) stay within this many bytes, whatever the sizes. At dimension 384
#: and k=20 that is a tile of 1,024 queries x about 15,000 index rows.
DEFAULT_MEMORY_BUDGET = 512 * 2**20

#: The largest query block the budget may choose, and the index chunk that goes with it at the
#: default budget (a 1,024 x 16,384 float32 score tile is 64 MiB).
DEFAULT_QUERY_ROWS = 1_024
DEFAULT_INDEX_ROWS = 16_384

#: annoy's forest size, and ``search_k`` as a multiple of ``n_trees x candidates``.
DEFAULT_N_TREES = 10
DEFAULT_SEARCH_K_FACTOR = 10

#: Hard-negative mining searches with annoy from this many corpus documents on (more than
#: 100,000), exactly below; evaluation has its own, higher switch (exactness matters there).
ANNOY_MIN_INDEX_ROWS = 100_001
