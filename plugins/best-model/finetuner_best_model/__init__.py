"""``BestModelCheckpoint``: keep the best epoch's weights and restore them after training."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import finetuner
from finetuner.callback import Callback
from finetuner.plugins.kit import MetricMonitor, WeightSnapshot

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
        self._monitor = MetricMonitor("BestModelCheckpoint", monitor, mode)
        self.monitor = monitor
        self.mode = mode
        self._best_epoch: int | None = None
        self._weights = WeightSnapshot("BestModelCheckpoint")

    def monitored_metrics(self, ctx: Any) -> list[str]:
        return [self.monitor]

    def finetuner_on_fit_begin(self, ctx: Any) -> None:
        self._monitor.bind(ctx)

    def finetuner_on_metrics(self, ctx: Any, event: Any) -> None:
        monitor = self._monitor
        value = monitor.epoch_value(event)
        if value is None:
            return
        if monitor.improves(value):
            ctx.logger.info(f"Model improved from {monitor.best_text()} to {value:.3f}!")
            monitor.best = value
            self._best_epoch = event.epoch
            self._weights.take(ctx.models)
        else:
            ctx.logger.info("Model did not improve")

    @finetuner.hookimpl(tryfirst=True)
    def finetuner_on_train_end(self, ctx: Any) -> None:
        if not self._weights.taken:
            ctx.logger.warning(
                f"BestModelCheckpoint: no epoch published '{self._monitor.key}'; keeping the last weights"
            )
            return
        self._weights.restore(ctx.models)
        ctx.logger.info(
            f"Restored the weights of epoch {(self._best_epoch or 0) + 1} "
            f"('{self._monitor.key}' = {self._monitor.best_text(5)})"
        )

    @property
    def best_epoch(self) -> int | None:
        """The 0-based epoch whose weights are kept, once one was seen."""
        return self._best_epoch

    def state_dict(self) -> dict[str, Any]:
        return {
            **self._monitor.state_dict(),
            "best_epoch": self._best_epoch,
            "weights": self._weights.state_dict() or None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._monitor.load_state_dict(state)
        self._best_epoch = state.get("best_epoch")
        self._weights.load_state_dict(state.get("weights"))
