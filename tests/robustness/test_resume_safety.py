"""Resume that cannot be wrong: one process at a time trains a run, a resume with other options
or other data is refused with the differences named, and pruning leaves the temporary folders of
live processes alone."""

from __future__ import annotations

import subprocess
import sys

import pytest

import finetuner
from finetuner.callback import Callback
from finetuner.errors import ConfigError, RunInProgressError
from finetuner.runs import RunWriter
from finetuner.runs.checkpoints import prune, write_checkpoint
from finetuner.testing import make_tiny_data

TrainingCheckpoint = pytest.importorskip("finetuner_training_checkpoint").TrainingCheckpoint


def _fit(tmp_path, **options):
    values = {
        "model": "mlp",
        "train_data": make_tiny_data(),
        "model_options": {"hidden_sizes": [8]},
        "epochs": 2,
        "batch_size": 8,
        "seed": 1,
        "runs_dir": tmp_path,
        "run_name": "r",
        "callbacks": [TrainingCheckpoint()],
    }
    values.update(options)
    return finetuner.fit(**values)


def _interrupted(tmp_path, **options):
    run = _fit(tmp_path, **options)
    RunWriter(run).set_status("FAILED", reason="simulated")
    return run


class ResumeAgain(Callback):
    """While a resume trains the run, a second resume of the same run (here, in the same
    process, which the pid check alone lets through)."""

    def __init__(self, tmp_path):
        self.tmp_path, self.error = tmp_path, None

    def finetuner_on_train_batch_end(self, event):
        if self.error is None:
            try:
                _fit(self.tmp_path, resume="r")
            except Exception as exc:
                self.error = exc


def test_a_second_resume_of_a_running_run_is_refused(tmp_path):
    _interrupted(tmp_path, epochs=1)
    second = ResumeAgain(tmp_path)
    run = _fit(tmp_path, epochs=2, resume="r", callbacks=[TrainingCheckpoint(), second])
    assert isinstance(second.error, RunInProgressError), second.error
    assert second.error.args[0].startswith("run 'r' of experiment 'default' is being trained")
    assert "pid" in str(second.error) and "run.lock" in str(second.error)
    assert run.status()["status"] == "FINISHED"
    epochs = [r["epoch"] for r in run.metric_history() if r["stage"] == "epoch"]
    assert epochs == sorted(set(epochs))  # each epoch recorded once
    # the lock went with the fit: the run can be resumed again once interrupted
    RunWriter(run).set_status("FAILED", reason="simulated")
    assert _fit(tmp_path, epochs=3, resume="r").status()["status"] == "FINISHED"


def test_a_resume_with_other_loss_options_is_refused(tmp_path):
    _interrupted(tmp_path, loss_options={"margin": 0.1})
    with pytest.raises(ConfigError) as caught:
        _fit(tmp_path, resume="r", loss_options={"margin": 0.5})
    assert "loss_options: {'margin': 0.1} -> {'margin': 0.5}" in str(caught.value)


def test_a_resume_with_other_data_is_refused_and_names_it(tmp_path):
    _interrupted(tmp_path)
    with pytest.raises(ConfigError, match=r"different data \(train_data: 40 rows, hash \w+ -> "):
        _fit(tmp_path, resume="r", train_data=make_tiny_data(seed=5))
    with pytest.raises(ConfigError, match=r"validation: none -> 8 rows"):
        _fit(tmp_path, resume="r", eval_data=make_tiny_data(per_class=2, seed=3))


def test_a_resume_with_the_same_data_given_anew_continues(tmp_path):
    _interrupted(tmp_path, epochs=1)
    run = _fit(tmp_path, resume="r", train_data=make_tiny_data())  # a new list, equal rows
    assert run.status()["status"] == "FINISHED"


def test_prune_removes_only_the_temporary_folders_of_dead_processes(tmp_path):
    folder = tmp_path / "checkpoints"
    write_checkpoint(folder, 0, {"step": 1})
    write_checkpoint(folder, 1, {"step": 2})
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    try:
        busy = folder / f".epoch-0002.tmp-{alive.pid}"
        dead = folder / f".epoch-0002.tmp-{int(gone.stdout)}"
        busy.mkdir()
        dead.mkdir()
        assert prune(folder, keep=1) == [folder / "epoch-0000"]
        assert busy.is_dir() and not dead.exists()
    finally:
        alive.kill()
        alive.wait()
