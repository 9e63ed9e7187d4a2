"""A fit, or a push, that gets a signal at a chosen moment: the worker of ``test_kill.py``.

    python kill_worker.py RUNS_DIR NAME MOMENT SIGNAL WHEN

MOMENT is ``step`` (the signal comes at the end of optimizer step WHEN), ``checkpoint`` (WHEN
seconds after the second epoch's checkpoint starts to be written), ``artifact`` (WHEN seconds
after the artifact starts to be written) or ``push`` (WHEN seconds after the data set NAME
starts to be written). SIGNAL is ``KILL`` or ``TERM``. The signal is sent from inside the
process, by a callback or by a thread that watches for the writer's temporary folder, so it
lands at the moment asked for, not when a busy test machine gets round to it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import finetuner
from finetuner.callback import Callback
from finetuner.testing import make_tiny_data


def fit_options(runs_dir: str | os.PathLike[str], run_name: str) -> dict[str, Any]:
    """The options of every fit of the kill tests (a resume passes them again)."""
    from finetuner_training_checkpoint import TrainingCheckpoint

    return {
        "model": "mlp",
        "train_data": make_tiny_data(per_class=16),
        "eval_data": make_tiny_data(per_class=4, seed=3),
        "model_options": {"hidden_sizes": [16, 8]},
        "epochs": 3,
        "batch_size": 8,
        "seed": 7,
        "runs_dir": str(runs_dir),
        "run_name": run_name,
        "callbacks": [TrainingCheckpoint(last_k_epochs=2, every_n_steps=3)],
    }


def _signal_when_written(folder: Path, signum: int, seconds: float) -> None:
    """Send *signum* to this process *seconds* after *folder* (a writer's temporary folder)
    appears."""

    def watch() -> None:
        while not folder.exists():
            time.sleep(0.0005)
        time.sleep(seconds)
        os.kill(os.getpid(), signum)

    threading.Thread(target=watch, daemon=True).start()


class SignalAtStep(Callback):
    """Sends *signum* to this process at the end of optimizer step *step*."""

    def __init__(self, signum: int, step: int) -> None:
        self.signum, self.step = signum, step

    def finetuner_on_train_batch_end(self, ctx: Any) -> None:
        if ctx.step == self.step:
            os.kill(os.getpid(), self.signum)


def push(data_dir: str, name: str, signum: int, when: float) -> None:
    rows = make_tiny_data(num_classes=20, per_class=400)
    csv = Path(data_dir).parent / f"{name}.csv"
    csv.write_text("".join(f"item {i} {v[0]:.6f},class {c}\n" for i, (v, c) in enumerate(rows)))
    _signal_when_written(Path(data_dir) / f".{name}.tmp-{os.getpid()}", signum, when)
    finetuner.push_data(name, str(csv), csv_options={"is_labeled": True}, data_dir=data_dir)


def main(argv: list[str]) -> None:
    runs_dir, name, moment, sig, when = argv
    signum = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM}[sig]
    if moment == "push":
        push(runs_dir, name, signum, float(when))
        return
    options = fit_options(runs_dir, name)
    run_path = Path(runs_dir).absolute() / "default" / name
    if moment == "step":
        options["callbacks"].append(SignalAtStep(signum, int(when)))
    elif moment == "checkpoint":
        tmp = run_path / "checkpoints" / f".epoch-0001.tmp-{os.getpid()}"
        _signal_when_written(tmp, signum, float(when))
    else:
        _signal_when_written(run_path / f".artifact.tmp-{os.getpid()}", signum, float(when))
    finetuner.fit(**options)


if __name__ == "__main__":
    main(sys.argv[1:])
