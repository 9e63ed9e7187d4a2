"""Building blocks for the unit tests of the trainer's pieces: a tiny config, its set-up, and a
fit loop over a real run, a real run log and a real plugin manager, without running a fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetuner.config import FitConfig, validate_fit_options
from finetuner.plugins import build_plugin_manager
from finetuner.runs import create_run
from finetuner.runs.log import RunLog
from finetuner.runs.writer import RunWriter
from finetuner.testing import make_tiny_data
from finetuner.training import FitLoop, FitSetup, PhaseTracker, build_setup


def tiny_config(**options: Any) -> FitConfig:
    """An ``mlp`` on 40 tensors of 4 classes, batches of 8 (5 steps per epoch)."""
    values: dict[str, Any] = {
        "model": "mlp",
        "train_data": make_tiny_data(),
        "model_options": {"hidden_sizes": [16, 8]},
        "epochs": 2,
        "batch_size": 8,
        "seed": 0,
        "device": "cpu",
    }
    values.update(options)
    return validate_fit_options(values)


def tiny_setup(**options: Any) -> FitSetup:
    config = tiny_config(**options)
    return build_setup(config, seed=config.seed if config.seed is not None else 0)


def open_loop(
    runs_dir: Path,
    setup: FitSetup,
    callbacks: list[Any] | None = None,
    resume_state: Any = None,
) -> FitLoop:
    """A :class:`FitLoop` ready to run, over a new STARTED run in *runs_dir*."""
    config = setup.recorded_config()
    run = create_run(config, runs_dir=runs_dir)
    writer = RunWriter(run)
    writer.set_status("STARTED")
    pm, registered = build_plugin_manager([*setup.callbacks, *(callbacks or [])])
    return FitLoop(
        setup,
        run=run,
        config=config,
        plugin_manager=pm,
        registered=registered,
        writer=writer,
        runlog=RunLog(run.log_path),
        phases=PhaseTracker(),
        resume_state=resume_state,
    )
