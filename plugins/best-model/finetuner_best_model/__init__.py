"""``BestModelCheckpoint``: keep the best epoch's weights and restore them after training."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import finetuner
from finetuner.callback import Callback
from finetuner.monitoring import MonitoredValue, check_monitor_options, resolve_mode

__all__ = ["BestModelCheckpoint"]
__version__ = "0.1.0"


class BestModelCheckpoint(Callback):
    """Remember the weights of the epoch where ``monitor`` was best; restore them at the end.

    :param monitor: the metric key to watch (``val_loss`` by default; any published key, or a
        bare metric name that exactly one producer provides).
    :param mode: ``min``, ``max``, or ``auto`` (``min`` for losses, ``max`` otherwise).

    After each epoch it logs ``Model improved from <best> to <value>!`` or ``Model did not
    improve``. In ``finetuner_on_train_end`` (tier ``tryfirst``) it loads the best weights back,
    so the "after" metrics and the artifact are those of the best epoch, and a WiSE-FT merge
    (tier ``trylast``) starts from them.
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "auto") -> None:
        check_monitor_options("BestModelCheckpoint", monitor, mode)
        self.monitor = monitor
        self.mode = mode
        self._key: str | None = None
        self._tracker: MonitoredValue | None = None
        self._best_epoch: int | None = None
        self._weights: dict[str, dict[str, Any]] | None = None

    def monitored_metrics(self, ctx: Any) -> list[str]:
        return [self.monitor]

    def finetuner_on_fit_begin(self, ctx: Any) -> None:
        self._key = ctx.resolve_metric(self.monitor)
        best = self._tracker.best if self._tracker is not None else None  # restored on resume
        self._tracker = MonitoredValue(resolve_mode(self._key, self.mode))
        if best is not None:
            self._tracker.best = best

    def finetuner_on_metrics(self, ctx: Any, event: Any) -> None:
        if event.stage != "epoch" or self._key is None or self._tracker is None:
            return
        value = float(event.metrics[self._key])
        if self._tracker.improves(value):
            ctx.logger.info(f"Model improved from {self._tracker.best:.3f} to {value:.3f}!")
            self._tracker.best = value
            self._best_epoch = event.epoch
            self._weights = {
                name: {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
                for name, module in ctx.models.items()
            }
        else:
            ctx.logger.info("Model did not improve")

    @finetuner.hookimpl(tryfirst=True)
    def finetuner_on_train_end(self, ctx: Any) -> None:
        if self._weights is None:
            ctx.logger.warning(
                f"BestModelCheckpoint: no epoch published '{self._key}'; keeping the last weights"
            )
            return
        for name, module in ctx.models.items():
            module.load_state_dict(self._weights[name])
        ctx.logger.info(
            f"Restored the weights of epoch {(self._best_epoch or 0) + 1} "
            f"('{self._key}' = {self._tracker.best if self._tracker else float('nan'):.5f})"
        )

    @property
    def best_epoch(self) -> int | None:
        """The 0-based epoch whose weights are kept, once one was seen."""
        return self._best_epoch

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self._tracker.best if self._tracker is not None else None,
            "best_epoch": self._best_epoch,
            "weights": self._weights,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._best_epoch = state.get("best_epoch")
        self._weights = state.get("weights")
        if state.get("best") is not None:
            self._tracker = MonitoredValue("min")  # the mode is set again in on_fit_begin
            self._tracker.best = float(state["best"])
