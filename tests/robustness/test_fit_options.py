"""Broken options of ``finetuner.fit``: each is refused before training with the error type
of its kind and a message that names the option; and a fit that diverges fails, naming the
epoch, instead of finishing with NaN embeddings."""

from __future__ import annotations

import math
import os

import pytest
import torch

import finetuner
from finetuner.errors import ConfigError, TrainingDivergedError
from finetuner.runs import RunStatus
from finetuner.testing import make_tiny_data

NAN, INF = float("nan"), float("inf")
TOO_MANY_WORKERS = (os.cpu_count() or 1) + 1


def _fit(**options):
    settings = dict(
        model="mlp",
        train_data=make_tiny_data(),
        model_options={"hidden_sizes": [16, 8]},
        epochs=1,
        batch_size=8,
        seed=0,
    )
    settings.update(options)
    return finetuner.fit(**settings)


# (id, options, the exception type, a regular expression the message must match)
BROKEN_OPTIONS = [
    # the 'lr' of the optimizer options follows the rule of learning_rate
    ("lr-huge", dict(optimizer_options={"lr": 1e6}), ConfigError, r"optimizer_options.*'lr'.*10"),
    ("lr-negative", dict(optimizer_options={"lr": -1}), ConfigError, r"optimizer_options.*'lr'"),
    ("lr-text", dict(optimizer_options={"lr": "0.1"}), ConfigError, r"optimizer_options.*number"),
    ("lr-nan", dict(optimizer_options={"lr": NAN}), ConfigError, r"optimizer_options.*finite"),
    (
        "loss-lr-huge",
        dict(loss="ArcFaceLoss", loss_optimizer="SGD", loss_optimizer_options={"lr": 1e9}),
        ConfigError,
        r"loss_optimizer_options.*'lr'",
    ),
    ("learning-rate-nan", dict(learning_rate=NAN), ConfigError, r"learning_rate.*finite"),
    ("learning-rate-inf", dict(learning_rate=INF), ConfigError, r"learning_rate.*finite"),
    # optimizer_options of the wrong shape
    ("optimizer-options-list", dict(optimizer_options=[1, 2]), ConfigError, r"optimizer_options"),
    ("optimizer-options-text", dict(optimizer_options="lr=0.1"), ConfigError, r"optimizer_options"),
    (
        "optimizer-options-unknown",
        dict(optimizer_options={"lrr": 0.1}),
        ConfigError,
        r"optimizer_options: Adam has no option 'lrr'.*Did you mean 'lr'",
    ),
    (
        "loss-optimizer-options-unknown",
        dict(loss="ArcFaceLoss", loss_optimizer="SGD", loss_optimizer_options={"momentun": 0.9}),
        ConfigError,
        r"loss_optimizer_options: SGD has no option 'momentun'.*Did you mean 'momentum'",
    ),
    # loss options that make the loss meaningless
    (
        "temperature-zero",
        dict(loss="SupConLoss", loss_options={"temperature": 0}),
        ConfigError,
        r"loss_options: SupConLoss option 'temperature' must be greater than 0",
    ),
    (
        "temperature-negative",
        dict(loss="NTXentLoss", loss_options={"temperature": -0.5}),
        ConfigError,
        r"loss_options: NTXentLoss option 'temperature'",
    ),
    (
        "margin-nan",
        dict(loss="TripletMarginLoss", loss_options={"margin": NAN}),
        ConfigError,
        r"loss_options: TripletMarginLoss option 'margin' is nan",
    ),
    (
        "margin-inf",
        dict(loss="TripletMarginLoss", loss_options={"margin": INF}),
        ConfigError,
        r"option 'margin' is inf",
    ),
    (
        "margin-negative",
        dict(loss="TripletMarginLoss", loss_options={"margin": -1.0}),
        ConfigError,
        r"option 'margin' must be at least 0",
    ),
    (
        "margin-text",
        dict(loss="TripletMarginLoss", loss_options={"margin": "wide"}),
        ConfigError,
        r"option 'margin' takes a number",
    ),
    (
        "scale-negative",
        dict(loss="ArcFaceLoss", loss_options={"scale": -1}),
        ConfigError,
        r"ArcFaceLoss option 'scale' must be greater than 0",
    ),
    (
        "miner-margin-nan",
        dict(miner="TripletMarginMiner", miner_options={"margin": NAN}),
        ConfigError,
        r"miner_options: TripletMarginMiner option 'margin' is nan",
    ),
    (
        "swap-text",
        dict(loss="TripletMarginLoss", loss_options={"swap": "yes"}),
        ConfigError,
        r"TripletMarginLoss option 'swap' takes true or false",
    ),
    (
        "distance-a-name",
        dict(loss="TripletMarginLoss", loss_options={"distance": "cosine"}),
        ConfigError,
        r"option 'distance' takes a pytorch-metric-learning object",
    ),
    (
        "matryoshka-weight-nan",
        dict(
            loss="MatryoshkaLoss",
            loss_options={"loss": "TripletMarginLoss", "dims": [4, 8], "weights": [1, NAN]},
        ),
        ConfigError,
        r"MatryoshkaLoss 'weights' must be a list of finite numbers",
    ),
    # optimizer and scheduler values of the wrong kind
    (
        "betas-a-number",
        dict(optimizer_options={"betas": 0.9}),
        ConfigError,
        r"optimizer_options: Adam option 'betas' takes a list",
    ),
    (
        "weight-decay-text",
        dict(optimizer_options={"weight_decay": "x"}),
        ConfigError,
        r"Adam option 'weight_decay' takes a number",
    ),
    (
        "weight-decay-nan",
        dict(optimizer_options={"weight_decay": NAN}),
        ConfigError,
        r"Adam option 'weight_decay' is nan",
    ),
    (
        "num-cycles-text",
        dict(scheduler="cosine", scheduler_options={"num_cycles": "x"}),
        ConfigError,
        r"scheduler_options: num_cycles must be a finite number",
    ),
    (
        "lr-end-nan",
        dict(scheduler="polynomial", scheduler_options={"lr_end": NAN}),
        ConfigError,
        r"scheduler_options: lr_end",
    ),
    (
        "training-steps-true",
        dict(scheduler="linear", scheduler_options={"num_training_steps": True}),
        ConfigError,
        r"scheduler_options: num_training_steps",
    ),
    # seeds, workers and other bounds
    ("seed-2-to-the-32", dict(seed=2**32), ConfigError, r"option 'seed'.*4294967295"),
    ("seed-2-to-the-64", dict(seed=2**64), ConfigError, r"option 'seed'"),
    ("seed-negative", dict(seed=-1), ConfigError, r"option 'seed'"),
    ("seed-float", dict(seed=1.5), ConfigError, r"option 'seed'"),
    (
        "workers-over-cpus",
        dict(num_workers=TOO_MANY_WORKERS),
        ConfigError,
        r"option 'num_workers'.*CPUs.*os\.cpu_count",
    ),
    ("workers-10000", dict(num_workers=10_000), ConfigError, r"option 'num_workers'"),
    ("clip-value-inf", dict(gradient_clip_value=INF), ConfigError, r"gradient_clip_value.*finite"),
    ("clip-norm-nan", dict(gradient_clip_norm=NAN), ConfigError, r"gradient_clip_norm.*finite"),
    ("val-split-nan", dict(val_split=NAN), ConfigError, r"option 'val_split'"),
    ("runs-dir-int", dict(runs_dir=5), ConfigError, r"option 'runs_dir': expected a folder path"),
    ("model-none", dict(model=None), ConfigError, r"option 'model'.*NoneType"),
]


@pytest.mark.parametrize(
    ("options", "error", "names"),
    [case[1:] for case in BROKEN_OPTIONS],
    ids=[case[0] for case in BROKEN_OPTIONS],
)
def test_a_broken_option_is_refused_naming_it(options, error, names):
    with pytest.raises(error, match=names) as caught:
        _fit(**options)
    assert "Value error," not in str(caught.value)


def test_the_message_of_a_validator_has_no_pydantic_prefix():
    with pytest.raises(ConfigError) as caught:
        _fit(model=None)
    assert str(caught.value).startswith("option 'model': expected a model name")


def test_an_lr_within_the_limits_trains():
    run = _fit(optimizer_options={"lr": 0.01})
    assert run.status()["status"] == "FINISHED"


def test_a_positive_temperature_trains():
    run = _fit(loss="SupConLoss", loss_options={"temperature": 0.1})
    assert run.status()["status"] == "FINISHED"


# --- divergence -------------------------------------------------------------------------------


class NaNInEvalAfter(torch.nn.Module):
    """Trains normally; in eval mode its embeddings are NaN once it has trained *steps* batches
    (a model whose evaluation diverged while the training loss looked fine)."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(8, 4)
        self.steps = steps
        self.register_buffer("trained", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        out = self.linear(x)
        if self.training:
            self.trained += 1
            return out
        return out * NAN if int(self.trained) >= self.steps else out


class BrokenStatistics(torch.nn.Module):
    """A running statistic (as batch norm keeps) that training makes NaN: the training loss is
    fine, and every embedding of the trained model is NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(8, 4)
        self.register_buffer("running_mean", torch.zeros(4))

    def forward(self, x):
        out = self.linear(x)
        if self.training:
            self.running_mean.fill_(NAN)
            return out
        return out - self.running_mean


def _failed(runs_dir):
    [run] = finetuner.list_runs(runs_dir=runs_dir)
    return run.status()


def test_a_nan_validation_loss_fails_the_run_with_its_epoch(tmp_path):
    # 40 items in batches of 8: five batches an epoch, so the validation after epoch 1 is NaN
    with pytest.raises(TrainingDivergedError, match=r"val_loss=nan at epoch 1;.*learning rate"):
        finetuner.fit(
            NaNInEvalAfter(steps=5),
            make_tiny_data(),
            eval_data=make_tiny_data(seed=1),
            epochs=3,
            batch_size=8,
            seed=0,
            runs_dir=tmp_path,
        )
    status = _failed(tmp_path)
    assert status["status"] == RunStatus.FAILED.value
    assert "val_loss=nan at epoch 1" in status["reason"] and status["phase"] == "evaluate"


def test_nan_weights_fail_the_run_before_the_artifact(tmp_path):
    with pytest.raises(TrainingDivergedError, match=r"model 'model'.*running_mean.*precision='32'"):
        finetuner.fit(BrokenStatistics(), make_tiny_data(), epochs=1, batch_size=8, seed=0)
    status = _failed(os.environ["FINETUNER_RUNS_DIR"])
    assert status["status"] == RunStatus.FAILED.value and status["phase"] == "artifact"


class NaNScore(finetuner.callback.Callback):
    """A metric producer whose score is NaN after training."""

    def provided_metrics(self, ctx):
        return ["probe_score"]

    def finetuner_evaluate(self, ctx, event):
        return {"probe_score": NAN if event.stage == "after" else 0.5}


def test_a_nan_evaluation_metric_fails_the_run():
    with pytest.raises(TrainingDivergedError, match=r"probe_score=nan after training \(epoch 1\)"):
        _fit(callbacks=[NaNScore()])


def test_a_finite_fit_still_finishes():
    run = _fit(callbacks=[], eval_data=make_tiny_data(seed=1))
    assert run.status()["status"] == "FINISHED"
    assert math.isfinite(run.metrics()["after"]["val_loss"])
