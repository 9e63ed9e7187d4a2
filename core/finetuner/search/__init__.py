"""Nearest-neighbour search over embedding matrices: exact, or approximate with annoy.

Used by :func:`finetuner.mine_hard_negatives` and by the evaluation plugin. Every search returns,
per query, ranking scores ("higher is better" for every distance, see :mod:`.scoring`) and index
positions, best first, with ties going to the lower index position. The exact search
(:func:`exact_top_k`) reads queries and index in chunks sized from a memory budget, so its
memory grows with neither;
:func:`annoy_top_k` lets annoy propose candidates and scores them exactly, and
:func:`recall_against_exact` measures how many of the exact results it found. annoy is imported
only when an approximate search runs.

Importing this package is light: the constants load at once, the functions (torch, numpy) on
first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .constants import (
    ANNOY_MIN_INDEX_ROWS,
    DEFAULT_INDEX_ROWS,
    DEFAULT_MEMORY_BUDGET,
    DEFAULT_N_TREES,
    DEFAULT_QUERY_ROWS,
    DEFAULT_SEARCH_K_FACTOR,
    DISTANCES,
)

if TYPE_CHECKING:
    from .annoy import annoy_top_k, resolve_search_k
    from .exact import exact_top_k, plan_chunks
    from .inputs import (
        Embeddings,
        Exclusions,
        empty_exclusions,
        exclusions_by_id,
        exclusions_by_position,
    )
    from .recall import DEFAULT_RECALL_QUERIES, recall_against_exact
    from .scoring import order_candidates, prepare_index, prepare_queries, reported_scores

__all__ = [
    "ANNOY_MIN_INDEX_ROWS",
    "DEFAULT_INDEX_ROWS",
    "DEFAULT_MEMORY_BUDGET",
    "DEFAULT_N_TREES",
    "DEFAULT_QUERY_ROWS",
    "DEFAULT_RECALL_QUERIES",
    "DEFAULT_SEARCH_K_FACTOR",
    "DISTANCES",
    "Embeddings",
    "Exclusions",
    "annoy_top_k",
    "empty_exclusions",
    "exact_top_k",
    "exclusions_by_id",
    "exclusions_by_position",
    "order_candidates",
    "plan_chunks",
    "prepare_index",
    "prepare_queries",
    "recall_against_exact",
    "reported_scores",
    "resolve_search_k",
]

_LAZY = {
    "annoy_top_k": "annoy",
    "resolve_search_k": "annoy",
    "exact_top_k": "exact",
    "plan_chunks": "exact",
    "Embeddings": "inputs",
    "Exclusions": "inputs",
    "empty_exclusions": "inputs",
    "exclusions_by_id": "inputs",
    "exclusions_by_position": "inputs",
    "DEFAULT_RECALL_QUERIES": "recall",
    "recall_against_exact": "recall",
    "order_candidates": "scoring",
    "prepare_index": "scoring",
    "prepare_queries": "scoring",
    "reported_scores": "scoring",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'finetuner.search' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
