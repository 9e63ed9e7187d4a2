"""Finding and removing run folders in the store.

Folders whose names start with a dot are never runs or experiments: a deletion renames a folder
to a hidden name first, so nobody reads one half removed, and its name is free at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import RunError, RunInProgressError
from .layout import NAME_PATTERN, STATUS_FILE
from .processes import live_pid
from .run import Run

__all__ = ["remove_run", "remove_tree", "runs_in", "sorted_runs"]


def runs_in(experiment_path: Path) -> list[Run]:
    """Every complete run folder directly under *experiment_path*."""
    try:
        entries = list(experiment_path.iterdir())
    except FileNotFoundError:
        return []
    runs = []
    for entry in entries:
        if NAME_PATTERN.fullmatch(entry.name) and (entry / STATUS_FILE).is_file():
            runs.append(Run(entry))
    return runs


def _created_at(run: Run) -> str:
    try:
        return str(run.status().get("created_at") or "")
    except RunError:
        return ""


def sorted_runs(runs: list[Run]) -> list[Run]:
    """*runs* oldest first (by creation time, then experiment and name)."""
    return sorted(runs, key=lambda r: (_created_at(r), r.experiment_name, r.name))


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
