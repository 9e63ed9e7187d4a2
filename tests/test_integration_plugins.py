"""First-party plugins together, through their real entry points.

Skipped where the plugins are not installed (the ``core`` tox environment), required where
``FINETUNER_REQUIRE_PLUGINS=1`` (the ``plugins`` environment).
"""

from __future__ import annotations

import os

import pytest
import torch

import finetuner
from finetuner.plugins import discover
from finetuner.testing import make_tiny_data, run_recorded_fit

NEEDED = {
    "EvaluationCallback",
    "EarlyStopping",
    "BestModelCheckpoint",
    "TrainingCheckpoint",
    "WiSEFTCallback",
}
installed = {info.class_name for info in discover().callbacks}
missing = NEEDED - installed
if missing:
    if os.environ.get("FINETUNER_REQUIRE_PLUGINS") == "1":
        raise RuntimeError(
            f"FINETUNER_REQUIRE_PLUGINS=1 but these plugins are missing: {sorted(missing)}"
        )
    pytest.skip(f"first-party plugins not installed: {sorted(missing)}", allow_module_level=True)

EvaluationCallback = finetuner.callback.EvaluationCallback
EarlyStopping = finetuner.callback.EarlyStopping
BestModelCheckpoint = finetuner.callback.BestModelCheckpoint


def _noisy_data(seed):
    """Overlapping classes, so retrieval metrics have room to move."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(5, 16, generator=gen)
    return [
        (centres[c] + 1.2 * torch.randn(16, generator=gen), c) for c in range(5) for _ in range(30)
    ]


@pytest.mark.parametrize("order", ["consumers-first", "producer-first"])
def test_early_stopping_on_an_evaluation_metric_in_either_order(tmp_path, order):
    evaluation = EvaluationCallback(query_data=_noisy_data(2), limit=10)
    stopper = EarlyStopping(monitor="precision_at_k", patience=0, min_delta=0.5)
    best = BestModelCheckpoint(monitor="mlp_precision_at_k")
    callbacks = (
        [stopper, best, evaluation] if order == "consumers-first" else [evaluation, best, stopper]
    )
    result = run_recorded_fit(
        tmp_path, callbacks=callbacks, train_data=_noisy_data(1), epochs=5, loss="SupConLoss"
    )
    history = result.run.metric_history()
    # min_delta=0.5 cannot be met by precision in [0, 1] after the first epoch: stop after epoch 2
    assert [r["epoch"] for r in history if r["stage"] == "epoch"] == [0, 1]
    for record in history:
        assert "mlp_precision_at_k" in record["metrics"]  # every publish had the producer's keys
    metrics = result.run.metrics()
    assert set(metrics["before"]) >= {
        f"mlp_{m}" for m in ("precision_at_k", "recall_at_k", "ndcg_at_k")
    }


def test_evaluation_metrics_improve_on_the_demo_data(tmp_path):
    from finetuner.demo import demo_options

    options = demo_options(runs_dir=tmp_path, epochs=2)
    run = finetuner.fit(**options)
    metrics = run.metrics()
    assert metrics["after"]["mlp_precision_at_k"] > metrics["before"]["mlp_precision_at_k"]


def test_examples_are_gathered(tmp_path):
    evaluation = EvaluationCallback(
        query_data=make_tiny_data(seed=3), gather_examples=True, num_example_queries=3, limit=4
    )
    result = run_recorded_fit(tmp_path, callbacks=[evaluation], epochs=1)
    examples = result.run.example_results()
    assert set(examples) == {"before", "after"}
    assert len(examples["after"]) == 3
    assert all(len(matches) == 4 for matches in examples["after"].values())
