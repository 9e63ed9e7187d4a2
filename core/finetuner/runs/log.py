"""Each run's structured log: JSON lines in the run folder, without global logging config.

The logger is a structlog bound logger built with :func:`structlog.wrap_logger` and processors
of its own, so nothing in ``structlog.configure`` or ``logging`` is read or changed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from .._io import reported_write

__all__ = ["RunLog", "level_number"]

_LEVELS = {
    "debug": 10,
    "info": 20,
    "warning": 30,
    "warn": 30,
    "error": 40,
    "exception": 40,
    "critical": 50,
}


class _Sink:
    """Stands where structlog expects a logger; the processors already wrote the record."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


class RunLog:
    """Writes JSON lines to *path* (when given) and hands every record to *on_record* (re-entry is ignored)."""

    def __init__(
        self,
        path: Path | None,
        on_record: Callable[[str, str, str, dict[str, Any]], None] | None = None,
    ):
        self._file: Any = None
        if path is not None:  # None: records only go to *on_record* (ranks other than 0)
            with reported_write("open the run log", path):
                path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(path, "a", encoding="utf-8", buffering=1)
        self._path = path
        self._on_record = on_record
        self._local = threading.local()
        self._lock = threading.Lock()

    def set_listener(
        self, on_record: Callable[[str, str, str, dict[str, Any]], None] | None
    ) -> None:
        self._on_record = on_record

    def logger(self, name: str) -> Any:
        return structlog.wrap_logger(
            _Sink(),
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                self._emit,
            ],
            wrapper_class=structlog.BoundLogger,
        ).bind(logger=name)

    def _emit(self, _logger: Any, method: str, event_dict: Any) -> Any:
        line = json.dumps(event_dict, default=str, ensure_ascii=False)
        with self._lock:
            if self._file is not None and not self._file.closed:
                with reported_write("append to the run log", self._path or "the run log"):
                    self._file.write(line + "\n")
        if self._on_record is not None and not getattr(self._local, "inside", False):
            self._local.inside = True
            try:
                fields = {
                    k: v
                    for k, v in event_dict.items()
                    if k not in ("event", "level", "logger", "timestamp")
                }
                self._on_record(
                    str(event_dict.get("level", method)),
                    str(event_dict.get("event", "")),
                    str(event_dict.get("logger", "")),
                    fields,
                )
            finally:
                self._local.inside = False
        raise structlog.DropEvent

    def close(self) -> None:
        with self._lock:
            if self._file is not None and not self._file.closed:
                self._file.flush()
                self._file.close()


def level_number(level: str) -> int:
    """The :mod:`logging` number of a level name (``"warning"`` -> 30); unknown names are 20."""
    return _LEVELS.get(level.lower(), 20)
