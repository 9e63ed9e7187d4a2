"""Failure handling on its own: the phase tracker, and what a failure records."""

from __future__ import annotations

import json

import pytest
from training_parts import open_loop, tiny_setup

import finetuner
from finetuner.callback import Callback
from finetuner.errors import PluginError
from finetuner.testing import run_recorded_fit
from finetuner.training.failure import (
    Phase,
    PhaseTracker,
    describe_failure,
    format_reason,
    record_failure,
)


def test_a_finished_block_puts_the_outer_phase_back():
    phases = PhaseTracker()
    with phases.enter(Phase.TRAIN):
        with phases.enter(Phase.EVALUATE):
            assert phases.current is Phase.EVALUATE
        with phases.enter(Phase.PUBLISH):
            pass
        assert phases.current is Phase.TRAIN
    assert phases.current is Phase.SETUP


def test_a_failing_block_keeps_its_phase():
    phases = PhaseTracker()
    with pytest.raises(KeyError), phases.enter(Phase.TRAIN), phases.enter(Phase.PUBLISH):
        raise KeyError("consumer")
    assert phases.current is Phase.PUBLISH
    assert str(Phase.PUBLISH) == "publish"


def test_reasons():
    assert format_reason(ValueError("bad value ")) == "ValueError: bad value"
    assert format_reason(RuntimeError()) == "RuntimeError"
    assert format_reason(KeyboardInterrupt()) == "interrupted (KeyboardInterrupt)"
    failure = describe_failure(PluginError("no", plugin="p", hook="h"), Phase.CONFIGURE)
    assert (failure.plugin, failure.hook, failure.phase) == ("p", "h", Phase.CONFIGURE)


def test_recording_a_failure_marks_the_run_and_tells_the_plugins(tmp_path):
    seen = []

    class Watcher(Callback):
        def finetuner_on_exception(self, event):
            seen.append((type(event.exception).__name__, event.phase))

    loop = open_loop(tmp_path, tiny_setup(), [Watcher()])
    error = RuntimeError("disk full")
    record_failure(
        error,
        Phase.ARTIFACT,
        writer=loop.writer,
        log=loop.log,
        plugin_manager=loop.ctx.plugin_manager,
        ctx=loop.ctx,
    )
    status = loop.ctx.run.status()
    assert (status["status"], status["reason"], status["phase"]) == (
        "FAILED",
        "RuntimeError: disk full",
        "artifact",
    )
    assert seen == [("RuntimeError", "artifact")]
    records = [json.loads(line) for line in loop.ctx.run.log_path.read_text().splitlines()]
    assert records[-1]["event"] == "run failed" and records[-1]["phase"] == "artifact"


def test_a_hook_failing_after_a_step_evaluation_is_recorded_in_train(tmp_path):
    """A step evaluation used to leave the phase at 'publish' for the rest of the epoch."""

    class EvaluateThenBreak(Callback):
        def finetuner_on_train_batch_end(self, ctx, event):
            if event.step == 1:
                ctx.control.request_evaluation()
            if event.step == 3:
                raise ValueError("batch three")

    with pytest.raises(ValueError, match="batch three"):
        run_recorded_fit(tmp_path, callbacks=[EvaluateThenBreak()], epochs=1)
    (run,) = finetuner.list_runs(runs_dir=tmp_path)
    status = run.status()
    assert (status["phase"], status["plugin"], status["hook"]) == (
        "train",
        "EvaluateThenBreak",
        "finetuner_on_train_batch_end",
    )
    assert [r["stage"] for r in run.metric_history()] == ["before", "step"]


@pytest.mark.slow
def test_sigterm_fails_the_run_as_terminated(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    config = tmp_path / "fit.yml"
    config.write_text("model: mlp\ntrain_data: digits-train\nepochs: 500\nbatch_size: 8\n")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    process = subprocess.Popen(
        [sys.executable, "-m", "finetuner", "fit", str(config)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    steps = list(tmp_path.glob("finetuner-runs/*/*/steps.jsonl"))
    while not (steps and steps[0].stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.2)  # until training is under way
        steps = list(tmp_path.glob("finetuner-runs/*/*/steps.jsonl"))
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143
    assert stderr.strip() == "error: terminated (SIGTERM)"
    status = json.loads(next(tmp_path.glob("finetuner-runs/*/*/status.json")).read_text())
    assert status["status"] == "FAILED" and status["reason"] == "terminated (SIGTERM)"
    assert status["phase"] == "train"


def test_reason_of_a_terminated_fit():
    from finetuner.errors import Terminated

    assert format_reason(Terminated("terminated (SIGTERM)")) == "terminated (SIGTERM)"
