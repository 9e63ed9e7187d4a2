"""Resuming a run: which run, whether it may be resumed with these options, and the state a
training checkpoint captures and restores.

A checkpoint holds the models, the optimizers, the scheduler, the loss, the random number
generators, ``ctx.control`` and every callback's ``state_dict``: with it, a resumed run trains
exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..callback import Callback
from ..config import FitConfig, resume_checked_options
from ..context import TrainingContext
from ..errors import ConfigError, RunError, RunInProgressError
from ..plugins import Registered
from ..runs import Run, RunStatus, get_run
from ..runs.checkpoints import list_checkpoints, load_checkpoint
from ..runs.jsonfiles import read_json
from ..runs.layout import FINGERPRINT_FILE, STATUS_FILE
from ..runs.lock import RunLock, lock_run
from ..runs.processes import live_pid
from .epoch_loop import EpochProgress
from .precision import StepPrecision
from .randomness import capture_rng
from .setup import FitSetup
from .step import TrainingStep

__all__ = [
    "capture_state",
    "check_resumable_config",
    "check_resumable_data",
    "choose_seed",
    "claim_resumed_run",
    "find_resumed_run",
    "load_resume_state",
    "rank_state",
    "restore_state",
    "resumed_progress",
]


def _named_run(resume: Any, config: FitConfig) -> Run:
    if isinstance(resume, Run):
        return resume
    if isinstance(resume, (str, Path)) and (Path(resume) / STATUS_FILE).is_file():
        return Run(Path(resume))
    if isinstance(resume, str):
        return get_run(resume, experiment_name=config.experiment_name, runs_dir=config.runs_dir)
    raise ConfigError(
        f"resume must be a run name, a Run or a run folder, not {type(resume).__name__}."
    )


def _check_resumable(run: Run) -> None:
    status = run.status()
    if status["status"] == RunStatus.FINISHED.value:
        raise RunError(
            f"run '{run.name}' already finished; there is nothing to resume. Start a new run."
        )
    if status["status"] == RunStatus.STARTED.value and live_pid(status) not in (None, os.getpid()):
        raise RunInProgressError(
            f"run '{run.name}' is still running (pid {status.get('pid')}); stop it before resuming."
        )
    if not list_checkpoints(run.checkpoint_dir):
        raise RunError(
            f"run '{run.name}' has no checkpoint to resume from ({run.checkpoint_dir}); runs are "
            "resumable when fit with the TrainingCheckpoint callback."
        )


def find_resumed_run(resume: Any, config: FitConfig) -> Run:
    """The run *resume* names (a name, a :class:`Run` or a run folder), if it can resume."""
    run = _named_run(resume, config)
    _check_resumable(run)
    return run


def claim_resumed_run(resume: Any, config: FitConfig) -> tuple[Run, RunLock]:
    """:func:`find_resumed_run`, holding the run's lock: a second resume of the run, while
    this one trains it, gets a RunInProgressError. The checks run once the lock is held, so
    two resumes that start together cannot both pass them."""
    run = _named_run(resume, config)
    lock = lock_run(run)
    try:
        _check_resumable(run)
    except BaseException:
        lock.release()
        raise
    return run, lock


def choose_seed(config: FitConfig, resumed: Run | None) -> int:
    """A resumed run's recorded seed, else the option, else a seed drawn from the system."""
    if resumed is not None:
        recorded = resumed.config.get("seed")
        if config.seed is not None and recorded is not None and config.seed != recorded:
            raise ConfigError(
                f"seed={config.seed} differs from the seed {recorded} of run "
                f"'{resumed.name}'; a resumed run keeps its seed (leave seed unset)."
            )
        if recorded is not None:
            return int(recorded)
    if config.seed is not None:
        return config.seed
    return random.SystemRandom().randrange(2**31)


def check_resumable_config(
    run: Run, recorded: Mapping[str, Any], current: Mapping[str, Any]
) -> None:
    """The options that must match (:func:`~finetuner.config.resume_checked_options`) do."""
    current = json.loads(json.dumps(dict(current), default=str))  # as the run recorded it
    changed = [
        f"{key}: {recorded.get(key)!r} -> {current.get(key)!r}"
        for key in resume_checked_options()
        if key in recorded and recorded.get(key) != current.get(key)
    ]
    if changed:
        raise ConfigError(
            f"cannot resume run '{run.name}' with different options ({'; '.join(changed)}); "
            "resume with the options it started with."
        )


def check_resumable_data(run: Run, current: Mapping[str, Any]) -> None:
    """The data's fingerprints (:func:`~finetuner.data.fingerprint.fingerprint`) are those the
    run recorded when it started; a run that recorded none (an older one) is not checked."""
    path = run.path / FINGERPRINT_FILE
    try:
        recorded = read_json(path, "data fingerprint")
    except FileNotFoundError:
        return
    if not isinstance(recorded, dict):
        raise RunError(f"the data fingerprint file {path} does not hold a JSON object.")
    changed = [
        f"{key}: {_described(recorded.get(key))} -> {_described(current.get(key))}"
        for key in sorted(set(recorded) | set(current))
        if recorded.get(key) != current.get(key)
    ]
    if changed:
        raise ConfigError(
            f"cannot resume run '{run.name}' with different data ({'; '.join(changed)}); "
            f"resume with the data it started with (recorded in {path})."
        )


def _described(fingerprint: Any) -> str:
    if not isinstance(fingerprint, Mapping):
        return "none"
    return f"{fingerprint.get('rows')} rows, hash {str(fingerprint.get('blake2b'))[:12]}"


def _processes(count: int) -> str:
    return "1 process" if count == 1 else f"{count} processes"


def _launch(count: int) -> str:
    if count == 1:
        return "one process (no torchrun)"
    return f"{count} processes (torchrun --nproc-per-node {count}, or --nproc {count})"


def rank_state(state: Mapping[str, Any], rank: int) -> dict[str, Any]:
    """*state* as rank *rank* restores it: with its own random generators' state."""
    ranks = state.get("rng_ranks") or [state["rng"]]
    return {**state, "rng": ranks[rank]}


def _shape_mismatch(mine: dict[str, tuple], theirs: dict[str, tuple]) -> str:
    missing = sorted(set(mine) ^ set(theirs))
    if missing:
        return f"parameters only on one side: {', '.join(missing[:4])}"
    shapes = sorted(k for k in set(mine) & set(theirs) if mine[k] != theirs[k])
    return f"different shapes: {', '.join(f'{k} {theirs[k]} vs {mine[k]}' for k in shapes[:4])}"


def load_resume_state(run: Run, models: Mapping[str, Any], world_size: int = 1) -> dict[str, Any]:
    """The run's latest checkpoint, checked against *models* (names and shapes) and the
    number of processes (*world_size*) that wrote it."""
    latest = list_checkpoints(run.checkpoint_dir)[-1]
    state = load_checkpoint(latest)
    saved_world = int(state.get("world_size", 1))
    if saved_world != world_size:
        raise ConfigError(
            f"run '{run.name}' was trained by {_processes(saved_world)} and this resume runs "
            f"{_processes(world_size)}; the shards of every batch and the random state of each "
            f"rank depend on it. Resume with {_launch(saved_world)}."
        )
    saved = state["models"]
    for name, module in models.items():
        if name not in saved:
            raise ConfigError(f"the checkpoint '{latest.path}' holds no model '{name}'.")
        mine = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in saved[name].items()}
        if mine != theirs:
            raise ConfigError(
                f"the checkpoint '{latest.path}' was written by a different model "
                f"({_shape_mismatch(mine, theirs)}); resume with the model the run started with."
            )
    return state


def _optional_state(obj: Any) -> Any:
    return obj.state_dict() if obj is not None else None


def capture_state(
    setup: FitSetup,
    ctx: TrainingContext,
    registered: Sequence[Registered],
    metrics_before: Mapping[str, float],
    *,
    progress: EpochProgress | None = None,
    precision: StepPrecision | None = None,
    rng_ranks: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Everything a resumed run needs: at the end of epoch ``ctx.epoch``, or within it after
    *progress*'s latest optimizer step. *rng_ranks*: in a distributed fit, the random
    generators' state of every rank, in rank order (this rank's otherwise)."""
    rngs = list(rng_ranks) if rng_ranks is not None else [capture_rng()]
    return {
        "epoch": ctx.epoch,
        "step": ctx.step,
        "progress": progress.state_dict() if progress is not None else None,
        "seed": setup.seed,
        "models": {name: m.state_dict() for name, m in setup.models.modules.items()},
        "optimizer": setup.optimizer.state_dict(),
        "loss_optimizer": _optional_state(setup.loss_optimizer),
        "scheduler": _optional_state(setup.scheduler),
        "loss": setup.loss.state_dict(),
        "precision": precision.state_dict() if precision is not None else {},
        "rng": rngs[0],
        "rng_ranks": rngs,
        "world_size": setup.dist.world_size,
        "control": ctx.control.state_dict(),
        "plugins": {
            reg.name: reg.plugin.state_dict()
            for reg in registered
            if isinstance(reg.plugin, Callback)
        },
        "metrics_before": dict(metrics_before),
    }


def resumed_progress(state: Mapping[str, Any]) -> EpochProgress | None:
    """The unfinished epoch of a checkpoint written within an epoch; None at an epoch end."""
    progress = state.get("progress")
    if not progress:
        return None
    return EpochProgress.from_state(int(state["epoch"]), progress)


def restore_state(
    state: Mapping[str, Any],
    setup: FitSetup,
    ctx: TrainingContext,
    registered: Sequence[Registered],
    step: TrainingStep | None = None,
) -> int:
    """Load a checkpoint into the fit (the random generators are restored later, last);
    returns the first epoch to run: the one after the checkpoint's, or the checkpoint's own
    when it was written within that epoch."""
    for name, module in setup.models.modules.items():
        module.load_state_dict(state["models"][name])
    setup.optimizer.load_state_dict(state["optimizer"])
    if setup.loss_optimizer is not None and state.get("loss_optimizer") is not None:
        setup.loss_optimizer.load_state_dict(state["loss_optimizer"])
    if setup.scheduler is not None and state.get("scheduler") is not None:
        setup.scheduler.load_state_dict(state["scheduler"])
    if state.get("loss") is not None:
        setup.loss.load_state_dict(state["loss"])
    ctx.control.load_state_dict(state.get("control") or {})
    saved_plugins = state.get("plugins") or {}
    for reg in registered:
        if isinstance(reg.plugin, Callback) and reg.name in saved_plugins:
            reg.plugin.load_state_dict(saved_plugins[reg.name])
    if step is not None:
        step.precision.load_state_dict(state.get("precision") or {})
    ctx.step = int(state["step"])
    return int(state["epoch"]) + (0 if state.get("progress") else 1)
