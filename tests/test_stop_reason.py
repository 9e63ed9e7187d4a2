"""A run stopped early by a plugin records why, and who asked, in ``status.json``."""

from __future__ import annotations

import json

import finetuner
from finetuner.callback import Callback
from finetuner.cli import main


class _StopAfterFirstEpoch(Callback):
    def finetuner_on_metrics(self, ctx, event):
        if event.stage == "epoch":
            ctx.control.request_stop("enough after one epoch", source="StopAfterFirstEpoch")


def test_the_stop_reason_and_its_source_are_in_the_status(finetuner_fit):
    run = finetuner_fit(callbacks=[_StopAfterFirstEpoch()], epochs=3).run
    status = finetuner.get_run(run.name, runs_dir=run.path.parent.parent).status()
    assert status["status"] == "FINISHED"
    assert status["epochs_completed"] == 1
    assert status["stop_reason"] == "enough after one epoch"
    assert status["stopped_by"] == "StopAfterFirstEpoch"


def test_a_run_that_was_not_stopped_has_no_stop_reason(finetuner_fit):
    status = finetuner_fit(epochs=1).run.status()
    assert status["epochs_completed"] == 1
    assert status["stop_reason"] is None and status["stopped_by"] is None


def test_finetuner_runs_shows_why_training_stopped(finetuner_fit, capsys):
    run = finetuner_fit(callbacks=[_StopAfterFirstEpoch()], epochs=3).run
    runs_dir = str(run.path.parent.parent)
    capsys.readouterr()
    assert main(["runs", run.name, "--runs-dir", runs_dir]) == 0
    out = capsys.readouterr().out
    assert (
        "FINISHED (stopped early after 1 epoch by StopAfterFirstEpoch: enough after one epoch)"
        in out
    )
    assert main(["runs", run.name, "--runs-dir", runs_dir, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"]["stop_reason"] == "enough after one epoch"
