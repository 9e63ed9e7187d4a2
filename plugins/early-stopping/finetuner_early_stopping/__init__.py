"""``EarlyStopping``: stop fine-tuning when a monitored metric stops improving."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from finetuner.callback import Callback
from finetuner.errors import ConfigError
from finetuner.monitoring import MonitoredValue, check_monitor_options, resolve_mode

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
        check_monitor_options("EarlyStopping", monitor, mode)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ConfigError(
                f"EarlyStopping: patience must be a non-negative integer, not {patience!r}."
            )
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or min_delta < 0:
            raise ConfigError(
                f"EarlyStopping: min_delta must be a non-negative number, not {min_delta!r}."
            )
        if baseline is not None and (
            isinstance(baseline, bool) or not isinstance(baseline, (int, float))
        ):
            raise ConfigError(
                f"EarlyStopping: baseline must be a number or None, not {baseline!r}."
            )
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.min_delta = float(min_delta)
        self.baseline = None if baseline is None else float(baseline)
        self._key: str | None = None
        self._tracker: MonitoredValue | None = None
        self._wait = 0
        self._stopped_epoch: int | None = None

    def monitored_metrics(self, ctx: Any) -> list[str]:
        return [self.monitor]

    def finetuner_on_fit_begin(self, ctx: Any) -> None:
        self._key = ctx.resolve_metric(self.monitor)
        best = self._tracker.best if self._tracker is not None else None  # restored on resume
        self._tracker = MonitoredValue(
            resolve_mode(self._key, self.mode), self.min_delta, self.baseline
        )
        if best is not None:
            self._tracker.best = best

    def finetuner_on_metrics(self, ctx: Any, event: Any) -> None:
        if event.stage != "epoch" or self._key is None or self._tracker is None:
            return
        value = float(event.metrics[self._key])
        if self._tracker.improves(value):
            self._tracker.best = value
            self._wait = 0
            return
        self._wait += 1
        if self._wait >= self.patience:
            self._stopped_epoch = event.epoch
            target = (
                "the baseline"
                if self.baseline is not None and self._tracker.best == self.baseline
                else "the best value"
            )
            reason = (
                f"EarlyStopping: '{self._key}' did not improve on {target} "
                f"{self._tracker.best:.5f} for {self._wait} epoch(s) (patience {self.patience}); "
                f"stopping after epoch {event.epoch + 1}"
            )
            ctx.logger.info(reason)
            ctx.control.request_stop(reason, source="EarlyStopping")

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self._tracker.best if self._tracker is not None else None,
            "wait": self._wait,
            "stopped_epoch": self._stopped_epoch,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._wait = int(state.get("wait", 0))
        self._stopped_epoch = state.get("stopped_epoch")
        if state.get("best") is not None:
            self._tracker = MonitoredValue("min")  # the mode is set again in on_fit_begin
            self._tracker.best = float(state["best"])
