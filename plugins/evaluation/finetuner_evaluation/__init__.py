"""finetuner-evaluation: retrieval metrics for embeddings.

``evaluate_embeddings`` searches each query's nearest neighbours (exactly, or approximately with
annoy) and returns the eight metrics of METRICS.md; ``evaluate_qrels`` scores queries against a
corpus with graded relevance judgments, at several cut-offs. Importing this package is light: the
callback, the options and the metric names import neither torch nor annoy, and
``evaluate_embeddings`` and ``EvaluationResult`` (which import torch) load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from finetuner_evaluation._callback import EvaluationCallback
from finetuner_evaluation._constants import (
    AUTO_ANNOY_MIN_INDEX_ROWS,
    DEFAULT_N_TREES,
    DEFAULT_SEARCH_K_FACTOR,
    DISTANCES,
    METRIC_NAMES,
    QRELS_METRIC_NAMES,
    SEARCHES,
)

if TYPE_CHECKING:
    from finetuner_evaluation._evaluate import EvaluationResult, evaluate_embeddings
    from finetuner_evaluation._graded import QrelsResult, evaluate_qrels

__all__ = [
    "AUTO_ANNOY_MIN_INDEX_ROWS",
    "DEFAULT_N_TREES",
    "DEFAULT_SEARCH_K_FACTOR",
    "DISTANCES",
    "METRIC_NAMES",
    "QRELS_METRIC_NAMES",
    "SEARCHES",
    "EvaluationCallback",
    "EvaluationResult",
    "QrelsResult",
    "evaluate_embeddings",
    "evaluate_qrels",
]

__version__ = "0.1.0"

# Names whose module imports torch, loaded on first use.
_LAZY = {
    "EvaluationResult": "finetuner_evaluation._evaluate",
    "evaluate_embeddings": "finetuner_evaluation._evaluate",
    "QrelsResult": "finetuner_evaluation._graded",
    "evaluate_qrels": "finetuner_evaluation._graded",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'finetuner_evaluation' has no attribute '{name}'")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
