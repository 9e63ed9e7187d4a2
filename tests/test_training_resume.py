"""Resume, on its own: which run, whether it may resume, and the state round trip."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from training_parts import open_loop, tiny_config, tiny_setup

from finetuner.callback import Callback
from finetuner.errors import ConfigError, RunError
from finetuner.runs import create_run
from finetuner.runs.checkpoints import load_checkpoint, write_checkpoint
from finetuner.training import TrainingStep
from finetuner.training.randomness import capture_rng, restore_rng
from finetuner.training.resume import (
    capture_state,
    check_resumable_config,
    choose_seed,
    find_resumed_run,
    load_resume_state,
    restore_state,
)


class Stateful(Callback):
    def __init__(self):
        self.seen = 0

    def finetuner_on_train_batch_end(self):
        self.seen += 1

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state):
        self.seen = state["seen"]


def _trained_loop(tmp_path, name="a"):
    setup = tiny_setup(scheduler="linear")
    loop = open_loop(tmp_path / name, setup, [Stateful()])
    loop._configure()
    loop.ctx.epoch = 0
    loop.epoch_loop.run(0)
    return loop


def test_state_round_trip(tmp_path):
    loop = _trained_loop(tmp_path)
    loop.ctx.control.request_stop("enough", source="me")
    state = capture_state(loop.setup, loop.ctx, loop.registered, {"val_loss": 2.0})
    assert state["epoch"] == 0 and state["step"] == loop.setup.steps_per_epoch
    assert state["plugins"]["Stateful"] == {"seen": loop.setup.steps_per_epoch}
    assert state["metrics_before"] == {"val_loss": 2.0}

    fresh = open_loop(tmp_path / "b", tiny_setup(scheduler="linear"), [Stateful()])
    assert restore_state(state, fresh.setup, fresh.ctx, fresh.registered) == 1
    mine, theirs = fresh.setup.models.first.state_dict(), loop.setup.models.first.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert fresh.setup.optimizer.state_dict()["state"].keys() == state["optimizer"]["state"].keys()
    assert fresh.setup.scheduler.last_epoch == loop.setup.scheduler.last_epoch
    assert fresh.ctx.step == loop.ctx.step and fresh.ctx.control.stop_reason == "enough"
    assert fresh.registered[-1].plugin.seen == loop.setup.steps_per_epoch
    assert TrainingStep(fresh.setup).learning_rates() == TrainingStep(loop.setup).learning_rates()


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    loop = _trained_loop(tmp_path)
    state = capture_state(loop.setup, loop.ctx, loop.registered, {})
    write_checkpoint(loop.ctx.run.checkpoint_dir, 0, state)
    other = tiny_setup(model_options={"hidden_sizes": [16, 4]})
    with pytest.raises(ConfigError, match=r"written by a different model \(different shapes"):
        load_resume_state(loop.ctx.run, other.models.modules)
    assert load_resume_state(loop.ctx.run, loop.setup.models.modules)["epoch"] == 0


def test_which_runs_can_resume(tmp_path):
    config = tiny_config(runs_dir=str(tmp_path))
    run = create_run({"seed": 4}, run_name="r", runs_dir=tmp_path)
    with pytest.raises(RunError, match="has no checkpoint to resume from"):
        find_resumed_run("r", config)
    with pytest.raises(ConfigError, match="resume must be a run name, a Run or a run folder"):
        find_resumed_run(3, config)
    write_checkpoint(run.checkpoint_dir, 0, {"step": 1})
    assert find_resumed_run("r", config) == run == find_resumed_run(run.path, config)


def test_seeds_and_options_of_a_resumed_run(tmp_path):
    run = create_run({"seed": 4, "batch_size": 8, "loss": "SupConLoss"}, runs_dir=tmp_path)
    assert choose_seed(tiny_config(seed=None), run) == 4
    assert choose_seed(tiny_config(seed=9), None) == 9
    with pytest.raises(ConfigError, match="seed=9 differs from the seed 4"):
        choose_seed(tiny_config(seed=9), run)
    same = {"seed": 4, "batch_size": 8, "loss": "SupConLoss"}
    check_resumable_config(run, run.config, {**same, "epochs": 9})
    with pytest.raises(ConfigError, match=r"different options \(batch_size: 8 -> 16\)"):
        check_resumable_config(run, run.config, {**same, "batch_size": 16})


def test_captured_random_state_restores_every_generator(tmp_path):
    state = capture_rng()
    first = (torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random())
    saved = write_checkpoint(tmp_path, 0, {"step": 0, "rng": state})
    restore_rng(load_checkpoint(saved)["rng"])  # through the file, as a resume does
    assert (torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random()) == first
