"""finetuner-evaluation: retrieval metrics for embeddings.

``evaluate_embeddings`` searches each query's nearest neighbours (exactly, or approximately with
annoy) and returns the eight metrics of METRICS.md. annoy is imported only when it is used.
"""

from __future__ import annotations

from finetuner_evaluation._annoy import DEFAULT_N_TREES, DEFAULT_SEARCH_K_FACTOR
from finetuner_evaluation._callback import EvaluationCallback
from finetuner_evaluation._cli import finetuner_add_commands
from finetuner_evaluation._evaluate import (
    AUTO_ANNOY_MIN_INDEX_ROWS,
    SEARCHES,
    EvaluationResult,
    evaluate_embeddings,
)
from finetuner_evaluation._metrics import METRIC_NAMES
from finetuner_evaluation._scoring import DISTANCES

__all__ = [
    "AUTO_ANNOY_MIN_INDEX_ROWS",
    "DEFAULT_N_TREES",
    "DEFAULT_SEARCH_K_FACTOR",
    "DISTANCES",
    "METRIC_NAMES",
    "SEARCHES",
    "EvaluationCallback",
    "EvaluationResult",
    "evaluate_embeddings",
    "finetuner_add_commands",
]

__version__ = "0.1.0"
