"""Experiments: named groups of runs, each a folder of the store holding ``experiment.json``."""

from __future__ import annotations

import os
from pathlib import Path

from .._io import atomic_write_json, reported_write
from ..errors import (
    ConfigError,
    ExperimentNotFoundError,
    RunError,
    RunInProgressError,
    RunNotFoundError,
    close_matches_hint,
)
from .folders import remove_run, remove_tree, runs_in, sorted_runs
from .jsonfiles import read_json
from .layout import (
    DEFAULT_EXPERIMENT,
    EXPERIMENT_FILE,
    NAME_PATTERN,
    STATUS_FILE,
    describe_root,
    resolve_runs_dir,
    utc_now,
    validate_name,
)
from .processes import live_pid
from .run import Run

__all__ = [
    "Experiment",
    "create_experiment",
    "delete_experiment",
    "ensure_experiment",
    "experiments_in",
    "find_run",
    "get_experiment",
    "list_experiments",
]


class Experiment:
    """A named group of runs: a folder in the run store holding ``experiment.json``."""

    __slots__ = ("_path",)

    def __init__(self, path: str | os.PathLike[str]):
        path = Path(path).expanduser().absolute()
        if not (path / EXPERIMENT_FILE).is_file():
            raise ExperimentNotFoundError(
                f"no experiment at {path}: the folder has no {EXPERIMENT_FILE}."
            )
        self._path = path

    @property
    def name(self) -> str:
        return self._path.name

    @property
    def path(self) -> Path:
        return self._path

    @property
    def created_at(self) -> str | None:
        try:
            return read_json(self._path / EXPERIMENT_FILE, "experiment").get("created_at")
        except (FileNotFoundError, AttributeError, RunError):
            return None

    def list_runs(self) -> list[Run]:
        """The runs of this experiment, oldest first."""
        return sorted_runs(runs_in(self._path))

    def get_run(self, name: str) -> Run:
        """The run *name* of this experiment."""
        return find_run(name, self.name, runs_dir=self._path.parent)

    def delete_run(self, name: str) -> None:
        """Delete the run *name* of this experiment (refused while it is running here)."""
        remove_run(self.get_run(name))

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r}, path='{self._path}')"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Experiment):
            return NotImplemented
        return self._path == other._path

    def __hash__(self) -> int:
        return hash(self._path)


def experiments_in(root: Path) -> list[Experiment]:
    """Every experiment folder directly under *root*, sorted by name."""
    try:
        entries = list(root.iterdir())
    except FileNotFoundError:
        return []
    found = [
        Experiment(entry)
        for entry in entries
        if NAME_PATTERN.fullmatch(entry.name) and (entry / EXPERIMENT_FILE).is_file()
    ]
    return sorted(found, key=lambda e: e.name)


def find_run(
    run_name: str, experiment_name: str, runs_dir: str | os.PathLike[str] | None = None
) -> Run:
    """The run *run_name* of the experiment *experiment_name*; RunNotFoundError, with close
    matches, when that experiment has no such run."""
    validate_name(run_name, "run")
    experiment = get_experiment(experiment_name, runs_dir=runs_dir)
    path = experiment.path / run_name
    if (path / STATUS_FILE).is_file():
        return Run(path)
    in_experiment = [run.name for run in runs_in(experiment.path)]
    raise RunNotFoundError(
        f"no run named '{run_name}' in experiment '{experiment.name}' ({experiment.path})."
        f"{close_matches_hint(run_name, in_experiment)}"
    )


def create_experiment(
    name: str = DEFAULT_EXPERIMENT, runs_dir: str | os.PathLike[str] | None = None
) -> Experiment:
    """Create the experiment *name*; raises ConfigError if it already exists."""
    validate_name(name, "experiment")
    root = resolve_runs_dir(runs_dir)
    path = root / name
    if (path / EXPERIMENT_FILE).is_file():
        raise ConfigError(
            f"an experiment named '{name}' already exists in {root}; open it with "
            f"finetuner.get_experiment('{name}') or choose another name."
        )
    with reported_write("write the experiment file", path / EXPERIMENT_FILE):
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path / EXPERIMENT_FILE, {"name": name, "created_at": utc_now()})
    return Experiment(path)


def ensure_experiment(name: str, runs_dir: str | os.PathLike[str] | None = None) -> Experiment:
    """The experiment *name*, created if it does not exist yet."""
    validate_name(name, "experiment")
    path = resolve_runs_dir(runs_dir) / name
    if (path / EXPERIMENT_FILE).is_file():
        return Experiment(path)
    try:
        return create_experiment(name, runs_dir=path.parent)
    except ConfigError:  # another process created it meanwhile
        return Experiment(path)


def get_experiment(name: str, runs_dir: str | os.PathLike[str] | None = None) -> Experiment:
    """The experiment *name*; raises ExperimentNotFoundError listing close matches."""
    validate_name(name, "experiment")
    root = resolve_runs_dir(runs_dir)
    path = root / name
    if (path / EXPERIMENT_FILE).is_file():
        return Experiment(path)
    existing = [e.name for e in experiments_in(root)]
    known = f"existing experiments: {', '.join(existing)}" if existing else "it has no experiments"
    raise ExperimentNotFoundError(
        f"no experiment named '{name}' in {describe_root(root)}; {known}."
        f"{close_matches_hint(name, existing)}"
    )


def list_experiments(runs_dir: str | os.PathLike[str] | None = None) -> list[Experiment]:
    """Every experiment in the store, sorted by name."""
    return experiments_in(resolve_runs_dir(runs_dir))


def delete_experiment(name: str, runs_dir: str | os.PathLike[str] | None = None) -> None:
    """Delete the experiment *name* and all its runs.

    Refused with RunInProgressError, deleting nothing, if one of its runs is running on this
    machine.
    """
    experiment = get_experiment(name, runs_dir=runs_dir)
    live = []
    for run in experiment.list_runs():
        try:
            pid = live_pid(run.status())
        except RunError:
            continue
        if pid is not None:
            live.append(f"'{run.name}' (pid {pid})")
    if live:
        raise RunInProgressError(
            f"cannot delete experiment '{name}': run(s) {', '.join(live)} are still running "
            "on this machine; wait for them to finish or stop those processes first."
        )
    remove_tree(experiment.path)
