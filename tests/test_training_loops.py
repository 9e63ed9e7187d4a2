"""The training step, the epoch loop and the fit loop, each driven on its own."""

from __future__ import annotations

import math

import pytest
import torch
from training_parts import open_loop, tiny_setup

from finetuner.callback import Callback
from finetuner.errors import FinetunerError
from finetuner.runs.checkpoints import list_checkpoints
from finetuner.training import TrainingStep
from finetuner.training.failure import Phase
from finetuner.training.validation import validation_loss


def _first_batch(setup):
    setup.sampler.set_epoch(0)
    return setup.collate(setup.train_data.take(next(iter(setup.sampler))))


def test_a_step_updates_the_weights_and_returns_the_loss():
    setup = tiny_setup(learning_rate=0.01, loss="SupConLoss")  # never zero on a batch
    step = TrainingStep(setup)
    batch = _first_batch(setup)
    before = {k: v.clone() for k, v in setup.models.first.state_dict().items()}
    with torch.no_grad():
        expected = float(step.loss(batch))
    assert step(batch).loss == pytest.approx(expected)
    after = setup.models.first.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert step.learning_rates() == (0.01,)


def test_the_loss_alone_changes_nothing():
    setup = tiny_setup()
    step = TrainingStep(setup)
    before = {k: v.clone() for k, v in setup.models.first.state_dict().items()}
    step.loss(_first_batch(setup)).backward()
    assert all(torch.equal(before[k], v) for k, v in setup.models.first.state_dict().items())


def test_a_batch_scheduler_steps_with_every_optimizer_step():
    setup = tiny_setup(scheduler="linear", learning_rate=0.1)
    step = TrainingStep(setup)
    step(_first_batch(setup))
    total = setup.config.epochs * setup.steps_per_epoch
    assert step.learning_rates()[0] == pytest.approx(0.1 * (1 - 1 / total))


def test_validation_loss_is_repeatable_and_keeps_the_models_mode():
    setup = tiny_setup(val_split=0.25)
    step = TrainingStep(setup)
    setup.models.first.train()
    first, second = validation_loss(setup, step), validation_loss(setup, step)
    assert first == second and math.isfinite(first)
    assert setup.models.first.training


class Counter(Callback):
    def __init__(self, evaluate_at=()):
        self.calls = []
        self.evaluate_at = set(evaluate_at)

    def provided_metrics(self, ctx):
        return ["probe_score"]

    def finetuner_on_train_batch_begin(self, event):
        self.calls.append(("begin", event.batch_index, event.step))

    def finetuner_on_train_batch_end(self, ctx, event):
        self.calls.append(("end", event.batch_index, event.step))
        if event.step in self.evaluate_at:
            ctx.control.request_evaluation()

    def finetuner_evaluate(self, ctx, event):
        self.calls.append(("evaluate", event.stage, event.step))
        return {"probe_score": 1.0}


def test_the_epoch_loop_runs_every_batch_and_counts_steps(tmp_path):
    setup = tiny_setup()
    counter = Counter()
    loop = open_loop(tmp_path, setup, [counter])
    loss = loop.epoch_loop.run(0)
    steps = setup.steps_per_epoch
    assert math.isfinite(loss) and loop.ctx.step == steps
    assert [c for c in counter.calls if c[0] == "end"] == [("end", i, i + 1) for i in range(steps)]
    assert [c for c in counter.calls if c[0] == "begin"] == [("begin", i, i) for i in range(steps)]


def test_a_requested_evaluation_runs_after_that_batch(tmp_path):
    setup = tiny_setup()
    counter = Counter(evaluate_at={2})
    loop = open_loop(tmp_path, setup, [counter])
    loop._configure()
    loop.epoch_loop.run(0)
    index = counter.calls.index(("evaluate", "step", 2))
    assert counter.calls[index - 1] == ("end", 1, 2)
    (record,) = loop.ctx.run.metric_history()
    assert record["stage"] == "step" and set(record["metrics"]) == {"probe_score", "train_loss"}
    assert loop.phases.current is Phase.SETUP  # back where it was before the evaluation


def test_a_non_finite_loss_stops_the_epoch(tmp_path):
    setup = tiny_setup()
    loop = open_loop(tmp_path, setup)
    with torch.no_grad():
        for p in setup.models.first.parameters():
            p.fill_(float("inf"))
    with pytest.raises(FinetunerError, match=r"the training loss became nan at epoch 1, batch 1"):
        loop.epoch_loop.run(0)


def test_the_fit_loop_stops_when_a_stop_was_requested_before_an_epoch(tmp_path):
    setup = tiny_setup()
    loop = open_loop(tmp_path, setup)
    loop.ctx.control.request_stop("already done")
    assert loop._train(start_epoch=0) == 0 and loop.ctx.step == 0


def test_a_requested_checkpoint_is_written_at_the_epoch_end(tmp_path):
    class Asker(Callback):
        def finetuner_on_train_epoch_end(self, ctx):
            ctx.control.request_checkpoint("the data is about to change")

    setup = tiny_setup()
    loop = open_loop(tmp_path, setup, [Asker()])
    loop._configure()
    loop.ctx.epoch = 0
    metrics = loop._epoch(0)
    assert list_checkpoints(loop.ctx.run.checkpoint_dir) == []
    loop._epoch_end(0, metrics, stop=False)
    (checkpoint,) = list_checkpoints(loop.ctx.run.checkpoint_dir)
    assert checkpoint.epoch == 0
    assert not loop.ctx.control.checkpoint_requested  # handled, not repeated next epoch
    log = loop.ctx.run.log_path.read_text()
    assert "checkpoint saved" in log and "the data is about to change" in log


def test_a_requested_checkpoint_is_not_written_twice(tmp_path):
    class Both(Callback):
        def finetuner_on_epoch_end(self, ctx):
            ctx.control.request_checkpoint()
            ctx.save_checkpoint()

    setup = tiny_setup()
    loop = open_loop(tmp_path, setup, [Both()])
    loop._configure()
    loop.ctx.epoch = 0
    loop._epoch_end(0, {}, stop=False)
    assert loop.ctx.run.log_path.read_text().count("checkpoint saved") == 1
