"""``EarlyStopping``: stop fine-tuning when a monitored metric stops improving."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from finetuner.callback import Callback
from finetuner.errors import ConfigError
from finetuner.plugins.kit import MetricMonitor

__all__ = ["EarlyStopping"]
__version__ = "0.1.0"


class EarlyStopping(Callback):
    """Stop training once ``monitor`` has not improved for ``patience`` epochs.

    :param monitor: the metric key to watch: ``val_loss``, ``train_loss``, or a key published by
        a producer such as the evaluation plugin (a full key, or a bare metric name such as
        ``precision_at_k`` when exactly one producer provides it).
    :param mode: ``min``, ``max``, or ``auto`` (``min`` for losses, ``max`` otherwise).
    :param patience: the number of epochs in a row without improvement after which training
        stops (``0`` and ``1`` both stop at the first epoch that does not improve).
    :param min_delta: how much a value must beat the best one to count as an improvement.
    :param baseline: a value to beat: the best value starts here instead of at infinity, so
        training stops if nothing beats it within ``patience`` epochs.

    The decision is taken on the metrics published after each epoch (never mid-epoch
    evaluations), and the stop takes effect after that epoch's ``finetuner_on_epoch_end``, so a
    checkpoint written then records it.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "auto",
        patience: int = 2,
        min_delta: float = 0.0,
        baseline: float | None = None,
    ) -> None:
        self._monitor = MetricMonitor(
            "EarlyStopping", monitor, mode, min_delta=min_delta, baseline=baseline
        )
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ConfigError(
                f"EarlyStopping: patience must be a non-negative integer, not {patience!r}."
            )
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.min_delta = float(min_delta)
        self.baseline = None if baseline is None else float(baseline)
        self._wait = 0
        self._stopped_epoch: int | None = None

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
            monitor.best = value
            self._wait = 0
            return
        self._wait += 1
        if self._wait >= self.patience:
            self._stopped_epoch = event.epoch
            at_baseline = self.baseline is not None and monitor.best == self.baseline
            target = "the baseline" if at_baseline else "the best value"
            reason = (
                f"EarlyStopping: '{monitor.key}' did not improve on {target} "
                f"{monitor.best_text(5)} for {self._wait} epoch(s) (patience {self.patience}); "
                f"stopping after epoch {event.epoch + 1}"
            )
            ctx.logger.info(reason)
            ctx.control.request_stop(reason, source="EarlyStopping")

    def state_dict(self) -> dict[str, Any]:
        return {
            **self._monitor.state_dict(),
            "wait": self._wait,
            "stopped_epoch": self._stopped_epoch,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._monitor.load_state_dict(state)
        self._wait = int(state.get("wait", 0))
        self._stopped_epoch = state.get("stopped_epoch")
