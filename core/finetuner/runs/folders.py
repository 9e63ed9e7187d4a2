"""Finding and removing run folders in the store.

Folders whose names start with a dot are never runs or experiments: a deletion renames a folder
to a hidden name first, so nobody reads one half removed, and its name is free at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import RunError, RunInProgressError
from .layout import NAME_PATTERN, STATUS_FILE
from .processes import live_pid
from .run import Run

__all__ = ["remove_run", "remove_tree", "runs_in", "runs_with_status", "sorted_runs"]


def runs_in(experiment_path: Path) -> list[Run]:
    """Every complete run folder directly under *experiment_path*."""
    # One directory scan and one stat per entry, no path parsed twice: the store may hold
    # thousands of runs (see bench/bench_soak.py).
    base = experiment_path.expanduser().absolute()
    try:
        entries = list(os.scandir(base))
    except FileNotFoundError:
        return []
    return [
        Run.reference(base / entry.name)
        for entry in entries
        if NAME_PATTERN.fullmatch(entry.name)
        and os.path.isfile(os.path.join(entry.path, STATUS_FILE))
    ]


def _status_or_none(run: Run) -> dict[str, Any] | None:
    """:meth:`Run.status`, or ``None`` where it is missing or damaged (the listing shows
    the others, and asks the run for its message when it prints that one)."""
    try:
        return run.status()
    except RunError:
        return None


def runs_with_status(runs: list[Run]) -> list[tuple[Run, dict[str, Any] | None]]:
    """*runs* oldest first (by creation time, then experiment and name), each with its status
    as read once now (``None`` where it cannot be read)."""
    pairs = [(run, _status_or_none(run)) for run in runs]
    return sorted(
        pairs,
        key=lambda p: (str((p[1] or {}).get("created_at") or ""), p[0].experiment_name, p[0].name),
    )


def sorted_runs(runs: list[Run]) -> list[Run]:
    """*runs* oldest first (by creation time, then experiment and name)."""
    return [run for run, _ in runs_with_status(runs)]


def remove_tree(path: Path) -> None:
    """Remove the folder *path*: renamed to a hidden name first, so readers never see it half
    deleted and its name is free at once."""
    hidden = Path(tempfile.mkdtemp(prefix=f".deleting-{path.name}-", dir=path.parent))
    os.replace(path, hidden / path.name)
    shutil.rmtree(hidden)


def remove_run(run: Run) -> None:
    """Delete *run*'s folder; refused with RunInProgressError while its process is alive."""
    pid = live_pid(run.status())
    if pid is not None:
        raise RunInProgressError(
            f"cannot delete run '{run.name}' of experiment '{run.experiment_name}': it is "
            f"STARTED and its process (pid {pid}) is still running; wait for it to finish "
            "(run.stream_logs()) or stop that process first."
        )
    remove_tree(run.path)
