"""A template callback: watches one metric and writes a line to the run's log every epoch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from finetuner.callback import Callback
from finetuner.errors import ConfigError

__all__ = ["TemplateCallback"]
__version__ = "0.1.0"


class TemplateCallback(Callback):
    """Log the monitored metric after every epoch, and remember the best value.

    :param monitor: a published metric key, e.g. ``train_loss``, ``val_loss`` or an evaluation
        metric. A key that nothing publishes fails the fit before the first step.
    """

    def __init__(self, monitor: str = "train_loss") -> None:
        # Check options here, so a bad one fails where the callback is created.
        if not isinstance(monitor, str) or not monitor:
            raise ConfigError(f"TemplateCallback: monitor must be a metric key, not {monitor!r}.")
        self.monitor = monitor
        self.calls: list[str] = []
        self.best: float | None = None

    def monitored_metrics(self, ctx: Any) -> list[str]:
        return [self.monitor]

    def finetuner_on_fit_begin(self, ctx: Any) -> None:
        self.calls.append("finetuner_on_fit_begin")
        self.key = ctx.resolve_metric(self.monitor)

    def finetuner_on_metrics(self, ctx: Any, event: Any) -> None:
        self.calls.append("finetuner_on_metrics")
        if event.stage != "epoch":
            return
        value = event.metrics[self.key]
        if self.best is None or value < self.best:
            self.best = value
        ctx.logger.info(f"template: epoch {event.epoch + 1} {self.key}={value:.4f}")

    def finetuner_on_fit_end(self, ctx: Any) -> None:
        self.calls.append("finetuner_on_fit_end")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = state.get("best")
