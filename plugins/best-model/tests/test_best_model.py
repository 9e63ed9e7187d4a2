from __future__ import annotations

import numpy as np
import pytest
import torch

import finetuner
from finetuner.callback import Callback
from finetuner.errors import ConfigError
from finetuner.testing import ScriptedProducer, make_tiny_data, run_recorded_fit
from finetuner_best_model import BestModelCheckpoint


class WeightSnapshots(Callback):
    """Keeps a copy of the weights at the end of every epoch."""

    def __init__(self):
        self.by_epoch = {}

    def finetuner_on_epoch_end(self, ctx, event):
        self.by_epoch[event.epoch] = {k: v.clone() for k, v in ctx.model.state_dict().items()}


@pytest.mark.parametrize("order", ["checkpoint-first", "checkpoint-last"])
def test_restores_the_best_epoch_for_the_artifact_and_after_metrics(tmp_path, order):
    producer = ScriptedProducer("probe_score", [0.1, 0.3, 0.9, 0.5, 0.4])  # best: epoch 2 (index 1)
    best = BestModelCheckpoint(monitor="probe_score")
    snapshots = WeightSnapshots()
    callbacks = (
        [best, producer, snapshots] if order == "checkpoint-first" else [snapshots, producer, best]
    )
    result = run_recorded_fit(
        tmp_path, callbacks=callbacks, epochs=4, learning_rate=0.05, loss="SupConLoss"
    )
    assert best.best_epoch == 1
    artifact = finetuner.get_model(result.run.artifact_path).module.state_dict()
    for key, tensor in snapshots.by_epoch[1].items():
        torch.testing.assert_close(artifact[key], tensor, rtol=0, atol=0)
    assert any(
        not torch.equal(snapshots.by_epoch[3][k], v) for k, v in snapshots.by_epoch[1].items()
    )
    log = result.run.log_path.read_text()
    assert "Model improved from -inf to 0.300!" in log
    assert "Model improved from 0.300 to 0.900!" in log
    assert log.count("Model did not improve") == 2


def test_after_metrics_are_computed_on_the_best_weights(tmp_path):
    eval_data = make_tiny_data(seed=9)
    best = BestModelCheckpoint(monitor="probe_score")
    producer = ScriptedProducer("probe_score", [0.0, 1.0, 0.5, 0.2])  # best: first epoch
    result = run_recorded_fit(
        tmp_path,
        callbacks=[best, producer],
        epochs=3,
        eval_data=eval_data,
        learning_rate=0.05,
        loss="SupConLoss",
    )
    history = result.run.metric_history()
    first_epoch_val = next(r for r in history if r["stage"] == "epoch")["metrics"]["val_loss"]
    after_val = result.run.metrics()["after"]["val_loss"]
    assert after_val == pytest.approx(first_epoch_val, abs=1e-6)


def test_val_loss_default_monitor(tmp_path):
    result = run_recorded_fit(
        tmp_path, callbacks=[BestModelCheckpoint()], epochs=2, eval_data=make_tiny_data(seed=2)
    )
    assert "Model improved from inf to" in result.run.log_path.read_text()


def test_monitor_nothing_provides(tmp_path):
    with pytest.raises(
        ConfigError, match="BestModelCheckpoint monitors 'val_loss', which nothing provides"
    ):
        run_recorded_fit(tmp_path, callbacks=[BestModelCheckpoint()])


def test_unknown_mode():
    with pytest.raises(ConfigError, match="unknown mode 'best'"):
        BestModelCheckpoint(mode="best")


def test_state_dict_keeps_the_weights(tmp_path):
    best = BestModelCheckpoint(monitor="probe_score")
    run_recorded_fit(
        tmp_path, callbacks=[best, ScriptedProducer("probe_score", [0.0, 0.5])], epochs=1
    )
    state = best.state_dict()
    assert state["best"] == 0.5 and state["best_epoch"] == 0
    assert all(isinstance(t, torch.Tensor) for t in state["weights"]["model"].values())
    again = BestModelCheckpoint(monitor="probe_score")
    again.load_state_dict(state)
    assert again.best_epoch == 0
    np.testing.assert_array_equal(
        next(iter(again.state_dict()["weights"]["model"].values())).numpy(),
        next(iter(state["weights"]["model"].values())).numpy(),
    )
