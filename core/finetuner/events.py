"""Typed events: the facts every hook receives as ``event``.

Each event is a frozen, slotted dataclass. Events describe what happened; they carry no
behaviour and can not be changed, so one plugin can never alter what the next one reads.
Mappings inside events are read-only views.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

__all__ = [
    "BatchEnded",
    "BatchStarted",
    "EpochEnded",
    "EpochStarted",
    "EvaluationRequested",
    "ExceptionRaised",
    "FitConfigured",
    "FitEnded",
    "FitStarted",
    "LogRecorded",
    "MetricDeclaration",
    "MetricsPublished",
    "Stage",
    "TrainEnded",
    "TrainEpochEnded",
    "ValidationEnded",
    "frozen_mapping",
]

Stage = Literal["before", "epoch", "step", "after"]
"""When an evaluation happens: before training, after an epoch, every N steps, after training."""

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def frozen_mapping(values: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """Return a read-only copy of *values* for use inside an event."""
    return MappingProxyType(dict(values or {}))


@dataclass(frozen=True, slots=True)
class FitConfigured:
    """Sent to ``finetuner_configure``: the fit's options are resolved, nothing has run yet."""

    run_name: str
    experiment_name: str
    config: Mapping[str, Any]
    model_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MetricDeclaration:
    """What a plugin returns from ``finetuner_configure`` to declare metric keys.

    ``provides`` are full keys the plugin will return from ``finetuner_evaluate``;
    ``monitors`` are keys (full, or a bare metric name) the plugin will read from
    ``MetricsPublished``. Every monitored key must have a producer before training starts.
    """

    source: str
    provides: tuple[str, ...] = ()
    monitors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FitStarted:
    """Sent to ``finetuner_on_fit_begin`` once before the first evaluation and step."""

    run_name: str
    experiment_name: str
    epochs: int
    steps_per_epoch: int
    start_epoch: int
    """The first epoch that will run (0-based); above 0 when a run is resumed."""
    metric_keys: tuple[str, ...]
    """Every key that will be published: producers' keys plus ``train_loss``/``val_loss``."""


@dataclass(frozen=True, slots=True)
class EpochStarted:
    """Sent to ``finetuner_on_epoch_begin``."""

    epoch: int
    """0-based epoch index."""
    epochs: int
    steps: int
    """Optimizer steps this epoch will make (its batches, divided by
    ``accumulate_grad_batches`` and rounded up)."""
    batches: int = 0
    """Training batches in this epoch."""
    first_batch: int = 0
    """The batch the epoch starts at: above 0 when a run resumed from a checkpoint written
    within this epoch (the batches before it are not run again)."""


@dataclass(frozen=True, slots=True)
class BatchStarted:
    """Sent to ``finetuner_on_train_batch_begin`` before the forward pass."""

    epoch: int
    step: int
    """Global optimisation step, counting from 0 over the whole fit."""
    batch_index: int
    """Index of the batch within the epoch."""
    batch_size: int


@dataclass(frozen=True, slots=True)
class BatchEnded:
    """Sent to ``finetuner_on_train_batch_end`` after the optimiser step."""

    epoch: int
    step: int
    """Optimizer steps done so far, this batch's included (1 after the first batch, or after
    the first accumulation group)."""
    batch_index: int
    batch_size: int
    loss: float
    learning_rates: tuple[float, ...]
    """Learning rate of each optimiser parameter group, after the scheduler step."""
    optimizer_step: bool = True
    """Whether this batch ended an optimizer step: always with ``accumulate_grad_batches=1``,
    otherwise on the last batch of each group (and of the epoch)."""
    grad_norm: float | None = None
    """At an optimizer step, the total L2 norm of the gradients before clipping (unscaled
    under ``16-mixed``, where it is infinite or NaN when the step was skipped); None
    between the batches of an accumulation group."""


@dataclass(frozen=True, slots=True)
class TrainEpochEnded:
    """Sent to ``finetuner_on_train_epoch_end`` after the last batch of an epoch."""

    epoch: int
    train_loss: float
    """Mean batch loss over the epoch."""
    steps: int


@dataclass(frozen=True, slots=True)
class ValidationEnded:
    """Sent to ``finetuner_on_validation_end`` after the loss on ``eval_data`` is computed."""

    epoch: int
    val_loss: float


@dataclass(frozen=True, slots=True)
class EvaluationRequested:
    """Sent to ``finetuner_evaluate``: producers compute and return their metrics."""

    stage: Stage
    epoch: int
    """0-based epoch the evaluation belongs to; -1 for ``before``."""
    step: int
    """Global step count when the evaluation runs."""


@dataclass(frozen=True, slots=True)
class MetricsPublished:
    """Sent to ``finetuner_on_metrics``: every producer's results for one evaluation.

    ``metrics`` holds the producers' keys plus ``train_loss`` and ``val_loss`` where they
    exist for this stage.
    """

    stage: Stage
    epoch: int
    step: int
    metrics: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    producers: tuple[str, ...] = ()
    """Names of the plugins whose results are included."""


@dataclass(frozen=True, slots=True)
class EpochEnded:
    """Sent to ``finetuner_on_epoch_end`` after the epoch's metrics were published."""

    epoch: int
    epochs: int
    step: int
    metrics: Mapping[str, float]
    stop_requested: bool
    stop_reason: str | None
    is_last: bool
    """True when no further epoch will run (the last one, or a stop was requested)."""


@dataclass(frozen=True, slots=True)
class TrainEnded:
    """Sent to ``finetuner_on_train_end`` when the epoch loop is over."""

    epochs_completed: int
    step: int
    stopped_early: bool
    stop_reason: str | None


@dataclass(frozen=True, slots=True)
class FitEnded:
    """Sent to ``finetuner_on_fit_end`` once the artifact is written."""

    run_name: str
    experiment_name: str
    duration_s: float
    artifact_path: str
    artifact_size_bytes: int
    metrics_before: Mapping[str, float]
    metrics_after: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class ExceptionRaised:
    """Sent to ``finetuner_on_exception`` when the fit fails."""

    exception: BaseException
    plugin: str | None
    """Name of the plugin whose hook raised, when the error came from one."""
    hook: str | None
    phase: str
    """What the trainer was doing: ``configure``, ``train``, ``evaluate``, ``artifact``..."""


@dataclass(frozen=True, slots=True)
class LogRecorded:
    """Sent to ``finetuner_on_log`` for each record written to the run's log."""

    level: str
    message: str
    logger: str
    fields: Mapping[str, Any]
