"""Whether the process that is training a run is still alive on this machine.

A process killed without warning cannot mark its run ``FAILED``; its run stays ``STARTED``.
Deleting and resuming ask these functions before they refuse to touch a ``STARTED`` run, and
readers call such a run *stale* (:func:`is_stale`): its process on this machine is gone.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from .layout import RunStatus

__all__ = ["is_stale", "live_pid", "pid_alive"]


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    if pid <= 0:
        return False
    if os.name == "nt":  # pragma: no cover - os.kill(pid, 0) would terminate it on Windows
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        try:
            code = ctypes.c_ulong()
            kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
            return code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _local_pid(status: Mapping[str, Any]) -> int | None:
    """The pid of a ``STARTED`` run's process, when it was started on this machine."""
    if status.get("status") != RunStatus.STARTED.value:
        return None
    pid = status.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return None
    host = status.get("host")
    if host is not None and host != socket.gethostname():
        return None  # a pid from another machine says nothing about this one
    return pid


def live_pid(status: Mapping[str, Any]) -> int | None:
    """The pid of the process running this run on this machine, if it is still alive.

    *status* is the content of a run's ``status.json``; only a ``STARTED`` run has a live pid.
    """
    pid = _local_pid(status)
    return pid if pid is not None and pid_alive(pid) else None


def is_stale(status: Mapping[str, Any]) -> bool:
    """Whether *status* (a run's ``status.json``) is ``STARTED`` by a process of this machine
    that no longer exists: killed without warning (SIGKILL, the out-of-memory killer), it
    could not mark its run ``FAILED``. A run started on another machine is never stale here."""
    pid = _local_pid(status)
    return pid is not None and not pid_alive(pid)
