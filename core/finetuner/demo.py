"""The built-in demos, evaluating before and after when the evaluation plugin is installed:
a small MLP fine-tuned on scikit-learn's digits, and (``text=True``) the bundled MiniLM
fine-tuned for product search with in-batch negatives."""

from __future__ import annotations

import os
from typing import Any

from . import fit
from .errors import PluginError
from .plugins import resolve_callback_class

__all__ = ["TEXT_DEMO_MODEL", "demo_options", "run_demo", "text_demo_options"]

TEXT_DEMO_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


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


def text_demo_options(
    *, epochs: int = 1, runs_dir: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """MiniLM on ``products-train`` with MultipleNegativesRankingLoss and duplicate-free
    batches; nDCG at 10 on the 300 held-back queries against the 3,000-listing corpus."""
    callbacks: list[Any] = []
    try:
        evaluation = resolve_callback_class("EvaluationCallback")
        callbacks.append(
            evaluation(
                query_data="products-queries",
                index_data="products-corpus",
                limit=10,
                caption="minilm",
            )
        )
    except PluginError:
        pass
    return {
        "model": TEXT_DEMO_MODEL,
        "train_data": "products-train",
        "loss": "MultipleNegativesRankingLoss",
        "optimizer": "AdamW",
        "learning_rate": 5e-5,
        "epochs": epochs,
        "batch_size": 32,
        "callbacks": callbacks,
        "experiment_name": "demo-text",
        "seed": 7,
        "runs_dir": runs_dir,
    }


def run_demo(
    *, epochs: int | None = None, runs_dir: str | os.PathLike[str] | None = None, text: bool = False
) -> Any:
    """Fit the digits demo (5 epochs by default) or, with *text*, the text demo (1 epoch)."""
    if text:
        return fit(**text_demo_options(epochs=epochs or 1, runs_dir=runs_dir))
    return fit(**demo_options(epochs=epochs or 5, runs_dir=runs_dir))
