from __future__ import annotations

import pytest
import torch

import finetuner
from finetuner.callback import Callback
from finetuner.errors import ConfigError, PluginError
from finetuner.testing import ScriptedProducer, run_recorded_fit
from finetuner_best_model import BestModelCheckpoint
from finetuner_wiseft import WiSEFTCallback, merge_weights


class Snapshots(Callback):
    def __init__(self):
        self.start = None
        self.by_epoch = {}

    def finetuner_on_fit_begin(self, ctx):
        self.start = {k: v.clone() for k, v in ctx.model.state_dict().items()}

    def finetuner_on_epoch_end(self, ctx, event):
        self.by_epoch[event.epoch] = {k: v.clone() for k, v in ctx.model.state_dict().items()}


def test_merge_is_the_weighted_average():
    pre = {"w": torch.tensor([0.0, 10.0]), "steps": torch.tensor(3)}
    tuned = {"w": torch.tensor([1.0, 20.0]), "steps": torch.tensor(7)}
    merged = merge_weights(pre, tuned, 0.4)
    torch.testing.assert_close(merged["w"], torch.tensor([0.4, 14.0]))
    assert merged["steps"].item() == 7  # integer buffers keep the fine-tuned value
    torch.testing.assert_close(merge_weights(pre, tuned, 0.0)["w"], pre["w"])
    torch.testing.assert_close(merge_weights(pre, tuned, 1.0)["w"], tuned["w"])


def test_artifact_holds_the_merged_weights(tmp_path):
    snapshots = Snapshots()
    alpha = 0.25
    result = run_recorded_fit(
        tmp_path,
        callbacks=[WiSEFTCallback(alpha=alpha), snapshots],
        epochs=2,
        learning_rate=0.05,
        loss="SupConLoss",
    )
    final = snapshots.by_epoch[1]
    artifact = finetuner.get_model(result.run.artifact_path).module.state_dict()
    for key in final:
        expected = (1 - alpha) * snapshots.start[key] + alpha * final[key]
        torch.testing.assert_close(artifact[key], expected, rtol=1e-6, atol=1e-7)
    assert any(not torch.equal(artifact[k], final[k]) for k in final)


@pytest.mark.parametrize("wiseft_first", [True, False])
def test_merge_starts_from_the_restored_best_weights(tmp_path, wiseft_first):
    snapshots = Snapshots()
    best = BestModelCheckpoint(monitor="probe_score")
    producer = ScriptedProducer("probe_score", [0.0, 0.9, 0.1, 0.2])  # best: first epoch
    wiseft = WiSEFTCallback(alpha=0.5)
    callbacks = (
        [wiseft, best, producer, snapshots] if wiseft_first else [snapshots, producer, best, wiseft]
    )
    result = run_recorded_fit(
        tmp_path, callbacks=callbacks, epochs=3, learning_rate=0.05, loss="SupConLoss"
    )
    artifact = finetuner.get_model(result.run.artifact_path).module.state_dict()
    for key, best_weights in snapshots.by_epoch[0].items():
        expected = 0.5 * snapshots.start[key] + 0.5 * best_weights
        torch.testing.assert_close(artifact[key], expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, "half", True])
def test_alpha_outside_zero_one(alpha):
    with pytest.raises(ConfigError, match="alpha must be a number between 0 and 1"):
        WiSEFTCallback(alpha=alpha)


def test_keys_must_match():
    with pytest.raises(
        PluginError, match=r"different keys \(only pre-trained: b; only fine-tuned: c\)"
    ):
        merge_weights(
            {"a": torch.zeros(1), "b": torch.zeros(1)},
            {"a": torch.zeros(1), "c": torch.zeros(1)},
            0.5,
        )


def test_shapes_must_match():
    with pytest.raises(PluginError, match="'a' has shape"):
        merge_weights({"a": torch.zeros(2)}, {"a": torch.zeros(3)}, 0.5)
