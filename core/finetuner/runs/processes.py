"""Whether the process that is training a run is still alive on this machine.

A process killed without warning cannot mark its run ``FAILED``; its run stays ``STARTED``.
Deleting and resuming ask these functions before they refuse to touch a ``STARTED`` run.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from .layout import RunStatus

__all__ = ["live_pid", "pid_alive"]


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


def live_pid(status: Mapping[str, Any]) -> int | None:
    """The pid of the process running this run on this machine, if it is still alive.

    *status* is the content of a run's ``status.json``; only a ``STARTED`` run has a live pid.
    """
    if status.get("status") != RunStatus.STARTED.value:
        return None
    pid = status.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return None
    host = status.get("host")
    if host is not None and host != socket.gethostname():
        return None  # a pid from another machine says nothing about this one
    return pid if pid_alive(pid) else None
