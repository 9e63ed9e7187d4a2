"""Shared rules for callbacks that watch one metric (early stopping, best-model checkpoint).

``mode='auto'`` means ``min`` for losses (keys ending in ``loss``) and ``max`` for everything
else, e.g. retrieval metrics. An improvement must beat the best value by more than
``min_delta`` in the right direction.
"""

from __future__ import annotations

import math

from .errors import ConfigError

__all__ = ["MODES", "MonitoredValue", "check_monitor_options", "resolve_mode"]

MODES = ("auto", "min", "max")


def check_monitor_options(owner: str, monitor: object, mode: object) -> None:
    """Raise ConfigError for a bad ``monitor`` or ``mode`` of the callback *owner*."""
    if not isinstance(monitor, str) or not monitor:
        raise ConfigError(
            f"{owner}: monitor must be a metric key such as 'val_loss', not {monitor!r}."
        )
    if mode not in MODES:
        raise ConfigError(f"{owner}: unknown mode {mode!r}; use one of {', '.join(MODES)}.")


def resolve_mode(key: str, mode: str) -> str:
    if mode != "auto":
        return mode
    return "min" if key.endswith("loss") else "max"


class MonitoredValue:
    """The best value seen so far of one metric, and whether a new value improves on it."""

    def __init__(self, mode: str, min_delta: float = 0.0, baseline: float | None = None):
        if mode not in ("min", "max"):
            raise ConfigError(f"mode must be 'min' or 'max' here, not {mode!r}.")
        self.mode = mode
        self.min_delta = abs(float(min_delta))
        self.best: float = (
            float(baseline) if baseline is not None else (math.inf if mode == "min" else -math.inf)
        )

    def improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta
