"""Runs in the store: creating, finding, listing and deleting them by name.

Run names are unique within an experiment; :func:`get_run` finds a name in any experiment
when it is unambiguous.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._io import atomic_write_json, reported_write
from ..errors import ConfigError, RunError, RunNotFoundError, close_matches_hint
from .experiments import Experiment, ensure_experiment, experiments_in, find_run, get_experiment
from .folders import remove_run, runs_in, runs_with_status
from .layout import (
    CONFIG_FILE,
    DEFAULT_EXPERIMENT,
    STATUS_FILE,
    RunStatus,
    describe_root,
    generate_run_name,
    resolve_runs_dir,
    utc_now,
    validate_name,
)
from .run import Run

__all__ = ["create_run", "delete_run", "get_run", "list_runs"]


def _new_run_folder(experiment: Experiment, run_name: str | None) -> Path:
    """Make the folder of a new run of *experiment*, named *run_name* or a free random name."""
    if run_name is not None:
        validate_name(run_name, "run")
        path = experiment.path / run_name
        try:
            path.mkdir()
        except FileExistsError:
            raise ConfigError(
                f"a run named '{run_name}' already exists in experiment '{experiment.name}' "
                f"({path}); choose another run_name or delete it with "
                f"finetuner.delete_run('{run_name}', experiment_name='{experiment.name}')."
            ) from None
        return path
    for _ in range(100):
        path = experiment.path / generate_run_name()
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RunError(  # pragma: no cover - 1.3 million names
        f"could not find a free run name in {experiment.path}; pass run_name=..."
    )


def create_run(
    config: Mapping[str, Any],
    *,
    run_name: str | None = None,
    experiment_name: str | None = None,
    runs_dir: str | os.PathLike[str] | None = None,
) -> Run:
    """Create a run folder holding *config*, with status ``CREATED``, and return the Run.

    The experiment defaults to ``"default"`` and is created if missing; without *run_name*
    a readable random name is chosen. An explicit *run_name* that is taken is a ConfigError.
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"a run's config must be a mapping, not {type(config).__name__}.")
    experiment = ensure_experiment(experiment_name or DEFAULT_EXPERIMENT, runs_dir=runs_dir)
    with reported_write("create the run folder in", experiment.path):
        path = _new_run_folder(experiment, run_name)
    try:
        recorded = dict(config)
        if "run_name" in recorded:
            recorded["run_name"] = path.name
        if "experiment_name" in recorded:
            recorded["experiment_name"] = experiment.name
        with reported_write("write the config file", path / CONFIG_FILE):
            atomic_write_json(path / CONFIG_FILE, recorded)
        now = utc_now()
        status = {
            "status": RunStatus.CREATED.value,
            "created_at": now,
            "updated_at": now,
            "started_at": None,
            "finished_at": None,
            "pid": None,
            "reason": None,
            "plugin": None,
            "hook": None,
        }
        with reported_write("write the status file", path / STATUS_FILE):
            atomic_write_json(path / STATUS_FILE, status)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return Run(path)


def get_run(
    run_name: str,
    experiment_name: str | None = None,
    runs_dir: str | os.PathLike[str] | None = None,
) -> Run:
    """The run *run_name*, in *experiment_name* or, without one, in any experiment.

    Raises RunNotFoundError (with close matches and the folder searched) when there is no such
    run, and RunError when several experiments have a run of that name.
    """
    validate_name(run_name, "run")
    root = resolve_runs_dir(runs_dir)
    if experiment_name is not None:
        return find_run(run_name, experiment_name, runs_dir=root)
    experiments = experiments_in(root)
    found = [
        Run(e.path / run_name) for e in experiments if (e.path / run_name / STATUS_FILE).is_file()
    ]
    if len(found) == 1:
        return found[0]
    if found:
        holders = ", ".join(f"'{run.experiment_name}'" for run in found)
        raise RunError(
            f"runs named '{run_name}' exist in several experiments ({holders}); pass "
            f"experiment_name=... to choose one, e.g. "
            f"get_run('{run_name}', experiment_name='{found[0].experiment_name}')."
        )
    names = sorted({run.name for e in experiments for run in runs_in(e.path)})
    if experiments:
        where = f"looked in the experiments {', '.join(e.name for e in experiments)} of"
    else:
        where = "there are no experiments in"
    raise RunNotFoundError(
        f"no run named '{run_name}'; {where} {describe_root(root)}."
        f"{close_matches_hint(run_name, names)}"
    )


def list_runs(
    experiment_name: str | None = None, runs_dir: str | os.PathLike[str] | None = None
) -> list[Run]:
    """The runs of *experiment_name*, or of every experiment, oldest first."""
    return [run for run, _ in list_runs_with_status(experiment_name, runs_dir)]


def list_runs_with_status(
    experiment_name: str | None = None, runs_dir: str | os.PathLike[str] | None = None
) -> list[tuple[Run, dict[str, Any] | None]]:
    """What :func:`list_runs` lists, each run with its status read once (``None`` where its
    ``status.json`` cannot be read): what ``finetuner runs`` prints."""
    if experiment_name is not None:
        experiments = [get_experiment(experiment_name, runs_dir=runs_dir)]
    else:
        experiments = experiments_in(resolve_runs_dir(runs_dir))
    return runs_with_status([run for e in experiments for run in runs_in(e.path)])


def delete_run(
    run_name: str,
    experiment_name: str | None = None,
    runs_dir: str | os.PathLike[str] | None = None,
) -> None:
    """Delete the run's folder: config, logs, metrics, checkpoints and artifact.

    Refused with RunInProgressError while the run is ``STARTED`` by a process that is still
    alive on this machine.
    """
    remove_run(get_run(run_name, experiment_name=experiment_name, runs_dir=runs_dir))
