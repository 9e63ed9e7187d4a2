"""Kill tests: fits and pushes ended by SIGKILL or SIGTERM at random moments (during a step, a
checkpoint write, the artifact write, a push), 20 processes in all.

Afterwards every run is FINISHED, FAILED (SIGTERM, with the reason) or stale and resumable (a
resume finishes it), and nothing half-written loads: every checkpoint listed loads, an artifact
that exists loads, a pushed data set that is listed is whole. The random moments come from a
seeded generator and are part of each failure's message.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import finetuner
from finetuner.data.store import load_pushed, pushed_names
from finetuner.runs.checkpoints import list_checkpoints, load_checkpoint

pytest.importorskip("finetuner_training_checkpoint")
from robustness.kill_worker import fit_options

WORKER = Path(__file__).with_name("kill_worker.py")
PER_MOMENT = 5
MOMENTS = {  # what WHEN means for each moment, drawn at random
    "step": lambda rng: rng.randint(4, 22),  # an optimizer step (24 in all; 3 is checkpointed)
    # seconds after the writer's temporary folder appears
    "checkpoint": lambda rng: rng.uniform(0.0, 0.004),
    "artifact": lambda rng: rng.uniform(0.0, 0.01),
    "push": lambda rng: rng.uniform(0.0, 0.03),
}


def _plan(moment: str) -> list[tuple[str, str, float]]:
    rng = random.Random(f"kill-{moment}")
    return [
        (f"{moment}-{i}", "KILL" if i % 2 == 0 else "TERM", MOMENTS[moment](rng))
        for i in range(PER_MOMENT)
    ]


def _spawn(store: Path, name: str, moment: str, sig: str, when: float) -> int:
    env = {**os.environ, "FINETUNER_DISABLE_PLUGINS": "console"}
    env["PYTHONPATH"] = os.pathsep.join([str(WORKER.parent.parent), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, str(WORKER), str(store), name, moment, sig, repr(when)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    return done.returncode


def _run_all(store: Path, moment: str) -> list[tuple[str, str, float, int]]:
    plan = _plan(moment)
    with ThreadPoolExecutor(max_workers=2) as pool:
        codes = list(pool.map(lambda p: _spawn(store, p[0], moment, p[1], p[2]), plan))
    return [(*p, code) for p, code in zip(plan, codes)]


def _nothing_half_written_loads(run) -> None:
    for checkpoint in list_checkpoints(run.checkpoint_dir):
        load_checkpoint(checkpoint)  # a listed checkpoint is whole
    if run.artifact_dir.exists():
        finetuner.get_model(run.artifact_dir)  # an artifact in place is whole


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["step", "checkpoint", "artifact"])
def test_fits_killed_at_random_moments_end_finished_failed_or_resumable(tmp_path, moment):
    outcomes = _run_all(tmp_path, moment)
    for name, sig, when, code in outcomes:
        where = f"{name}: SIG{sig} at {moment} {when!r}, exit {code}"
        run = finetuner.get_run(name, runs_dir=tmp_path)
        status = run.status()
        _nothing_half_written_loads(run)
        print(where, "->", status["status"], "stale" if status.get("stale") else "")
        if status["status"] == "FINISHED":
            continue
        if status["status"] == "FAILED":
            assert sig == "TERM" and status["reason"] == "terminated (SIGTERM)", where
            assert not list(run.checkpoint_dir.glob(".*.tmp-*")), where  # cleaned up
        else:
            assert status["status"] == "STARTED" and status.get("stale") is True, where
            assert sig == "KILL", where
        resumed = finetuner.fit(**fit_options(tmp_path, name), resume=name)
        assert resumed.status()["status"] == "FINISHED", where
        epochs = [r["epoch"] for r in resumed.metric_history() if r["stage"] == "epoch"]
        assert epochs == [0, 1, 2], where
        assert not list(run.checkpoint_dir.glob(".*")), where  # the dead writer's folders went
        _nothing_half_written_loads(resumed)


@pytest.mark.slow
def test_pushes_killed_at_random_moments_leave_whole_data_sets_or_none(tmp_path):
    data_dir = tmp_path / "data"
    outcomes = _run_all(data_dir, "push")
    names = pushed_names(data_dir)
    assert set(names) <= {name for name, *_ in outcomes}
    for name, sig, when, code in outcomes:
        where = f"{name}: SIG{sig} at push {when!r}, exit {code}"
        print(where, "->", "whole" if name in names else "absent")
        if name in names:
            assert len(load_pushed(name, data_dir)) == 8000, where
        else:
            assert code in (-signal.SIGKILL, -signal.SIGTERM), where
    finetuner.list_data(data_dir)
