"""The built-in demo: fine-tune a small MLP on scikit-learn's digits, evaluating before and
after when the evaluation plugin is installed."""

from __future__ import annotations

import os
from typing import Any

from . import fit
from .errors import PluginError
from .plugins import resolve_callback_class

__all__ = ["demo_options", "run_demo"]


def demo_options(
    *, epochs: int = 5, runs_dir: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    callbacks: list[Any] = []
    try:
        evaluation = resolve_callback_class("EvaluationCallback")
        callbacks.append(evaluation(query_data="digits-eval", index_data="digits-train", limit=20))
    except PluginError:
        pass  # not installed: the demo trains and reports losses only
    return {
        "model": "mlp",
        "model_options": {"hidden_sizes": [128, 64]},
        "train_data": "digits-train",
        "eval_data": "digits-eval",
        "loss": "SupConLoss",
        "loss_options": {"temperature": 0.1},
        "learning_rate": 1e-3,
        "epochs": epochs,
        "batch_size": 64,
        "num_items_per_class": 8,
        "callbacks": callbacks,
        "experiment_name": "demo",
        "seed": 7,
        "runs_dir": runs_dir,
    }


def run_demo(*, epochs: int = 5, runs_dir: str | os.PathLike[str] | None = None) -> Any:
    return fit(**demo_options(epochs=epochs, runs_dir=runs_dir))
