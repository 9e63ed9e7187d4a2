"""Watching one metric, for callbacks such as early stopping and best-model checkpoints.

``mode='auto'`` means ``min`` for losses (keys ending in ``loss``) and ``max`` for everything
else, e.g. retrieval metrics. An improvement must beat the best value by more than
``min_delta`` in the right direction; ``baseline`` is a best value to start from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError

__all__ = ["MODES", "MetricMonitor", "resolve_mode"]

MODES = ("auto", "min", "max")


def resolve_mode(key: str, mode: str) -> str:
    """``min`` or ``max`` for *key*: *mode* itself unless it is ``auto``, which means ``min``
    for losses (keys ending in ``loss``) and ``max`` for everything else."""
    if mode != "auto":
        return mode
    return "min" if key.endswith("loss") else "max"


class MetricMonitor:
    """The best value of one monitored metric, and whether a new value improves on it.

    Create it in the callback's ``__init__`` (options are checked there, naming *owner*),
    declare ``monitor`` through ``monitored_metrics``, call :meth:`bind` in
    ``finetuner_on_fit_begin``, then :meth:`epoch_value` and :meth:`improves` on each publish.
    Its :meth:`state_dict` keeps the best value across a resume.
    """

    def __init__(
        self,
        owner: str,
        monitor: object,
        mode: object = "auto",
        *,
        min_delta: object = 0.0,
        baseline: object = None,
    ) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise ConfigError(
                f"{owner}: monitor must be a metric key such as 'val_loss', not {monitor!r}."
            )
        if mode not in MODES:
            raise ConfigError(f"{owner}: unknown mode {mode!r}; use one of {', '.join(MODES)}.")
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or min_delta < 0:
            raise ConfigError(
                f"{owner}: min_delta must be a non-negative number, not {min_delta!r}."
            )
        if baseline is not None and (
            isinstance(baseline, bool) or not isinstance(baseline, (int, float))
        ):
            raise ConfigError(f"{owner}: baseline must be a number or None, not {baseline!r}.")
        self.monitor = monitor
        self.mode = str(mode)
        self.min_delta = float(min_delta)
        self.baseline = None if baseline is None else float(baseline)
        self.key: str | None = None
        self.best: float | None = self.baseline

    def bind(self, ctx: Any) -> str:
        """Resolve the monitored name to its full key (``ctx.resolve_metric``) and the mode."""
        self.key = ctx.resolve_metric(self.monitor)
        self.mode = resolve_mode(self.key, self.mode)
        return self.key

    def epoch_value(self, event: Any) -> float | None:
        """The monitored value of an epoch's ``MetricsPublished``, ``None`` for other stages."""
        if event.stage != "epoch" or self.key is None:
            return None
        return float(event.metrics[self.key])

    def improves(self, value: float) -> bool:
        """Whether *value* beats the best value by more than ``min_delta`` (never for NaN)."""
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def best_text(self, digits: int = 3) -> str:
        """The best value for messages: ``inf``/``-inf`` before the first one."""
        if self.best is not None:
            return f"{self.best:.{digits}f}"
        return "inf" if self.mode == "min" else "-inf"

    def state_dict(self) -> dict[str, Any]:
        """The best value so far, for a training checkpoint."""
        return {"best": self.best}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` gave, when a run resumes."""
        if state.get("best") is not None:
            self.best = float(state["best"])
