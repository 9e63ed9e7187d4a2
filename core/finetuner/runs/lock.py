"""The exclusive lock of a run: one process at a time trains it.

A fit, or a resume, holds an ``fcntl.flock`` lock on the run's ``run.lock`` for as long as it
trains the run. The operating system releases it when the process ends in any way (SIGKILL and
the out-of-memory killer included), so a lock never outlives its process and never has to be
cleaned up. The file holds the pid of the last process that took it, for messages. Where
``fcntl`` is missing (Windows) runs are not locked.
"""

from __future__ import annotations

import os
from typing import IO, TYPE_CHECKING

from .._io import reported_write
from ..errors import RunInProgressError
from .layout import LOCK_FILE

if TYPE_CHECKING:
    from .run import Run

__all__ = ["RunLock", "lock_run"]

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class RunLock:
    """A run's lock, held until :meth:`release` (or the end of the process)."""

    __slots__ = ("_handle", "path")

    def __init__(self, handle: IO[str] | None, path: os.PathLike[str] | str):
        self._handle = handle
        self.path = path

    @property
    def held(self) -> bool:
        return self._handle is not None and not self._handle.closed

    def release(self) -> None:
        """Let another process train the run; releasing twice does nothing."""
        if self.held:
            assert self._handle is not None
            self._handle.close()  # closing the file releases the lock


def lock_run(run: Run) -> RunLock:
    """Take *run*'s lock, or raise :class:`RunInProgressError` naming the run and the pid of
    the process that holds it."""
    path = run.path / LOCK_FILE
    if fcntl is None:  # pragma: no cover - Windows
        return RunLock(None, path)
    with reported_write("open the lock file", path):
        handle = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RunInProgressError(
            f"run '{run.name}' of experiment '{run.experiment_name}' is being trained by "
            f"another process (pid {holder}, holding {path}); wait for it to end "
            "(finetuner.get_run(...).stream_logs()) or stop it, then resume."
        ) from None
    with reported_write("write the lock file", path):
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
    return RunLock(handle, path)
