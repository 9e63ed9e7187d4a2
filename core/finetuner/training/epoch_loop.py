"""The epoch loop: one pass over the training batches, with the batch hooks around each step.

The step itself (forward, backward, optimizer) belongs to :class:`~.step.TrainingStep`; this
loop groups batches for gradient accumulation, counts optimizer steps, checks the loss stays
finite, records each optimizer step in the run's ``steps.jsonl``, and after an optimizer step
runs what a plugin asked for during it: an evaluation (``ctx.control.request_evaluation()``,
stage ``"step"``), then a checkpoint (``ctx.control.request_step_checkpoint()``), so the
checkpoint holds the evaluation's effects.

A run resumed from a checkpoint written within an epoch starts that epoch at the batch after
the checkpoint: the sampler gives the epoch's batches in the same order (it depends only on
the seed and the epoch), the batches already done are skipped unread, and the random number
generators are restored just before the first batch, after ``finetuner_on_epoch_begin``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import distributed
from ..context import TrainingContext
from ..data import Batch, iterate_batches
from ..errors import TrainingDivergedError
from ..events import BatchEnded, BatchStarted, EpochStarted
from ..runs.writer import RunWriter
from .divergence import HINT
from .metrics import MetricsPublisher
from .randomness import restore_rng
from .setup import FitSetup
from .step import StepOutcome, TrainingStep

__all__ = ["EpochLoop", "EpochProgress"]


@dataclass
class EpochProgress:
    """How far the epoch in progress is: batches done and the sum and count of their (finite)
    losses, whose mean is the epoch's ``train_loss``."""

    epoch: int
    batches: int = 0
    loss_total: float = 0.0
    loss_count: int = 0
    group_losses: list[float] = field(default_factory=list)
    """The losses of the batches of the accumulation group in progress."""

    def state_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "loss_total": self.loss_total, "count": self.loss_count}

    @classmethod
    def from_state(cls, epoch: int, state: dict[str, Any]) -> EpochProgress:
        return cls(epoch, int(state["batches"]), float(state["loss_total"]), int(state["count"]))

    @property
    def mean_loss(self) -> float:
        return self.loss_total / max(self.loss_count, 1)


class EpochLoop:
    """Runs the training batches of one epoch and returns their mean loss."""

    def __init__(
        self,
        setup: FitSetup,
        step: TrainingStep,
        hook: Any,
        ctx: TrainingContext,
        publisher: MetricsPublisher,
        *,
        writer: RunWriter,
        log: Any,
        save_checkpoint: Callable[..., Any],
    ) -> None:
        self.setup, self.step, self.hook, self.ctx = setup, step, hook, ctx
        self.publisher, self.writer, self.log = publisher, writer, log
        self.save_checkpoint = save_checkpoint
        self.accumulate = setup.config.accumulate_grad_batches
        self.progress: EpochProgress | None = None
        """The epoch in progress; None between epochs."""

    def run(self, epoch: int, resume: EpochProgress | None = None, rng: Any = None) -> float:
        """Train epoch *epoch*, from the batch after *resume* when given; *rng* is the random
        state to continue from (a checkpoint's), restored just before the first batch."""
        setup = self.setup
        progress = resume or EpochProgress(epoch)
        setup.sampler.set_epoch(epoch)
        self.hook.finetuner_on_epoch_begin(
            ctx=self.ctx,
            event=EpochStarted(
                epoch=epoch,
                epochs=setup.config.epochs,
                steps=setup.steps_per_epoch,
                batches=setup.batches_per_epoch,
                first_batch=progress.batches,
            ),
        )
        self.step.train_mode()
        batches = iterate_batches(
            setup.train_data,
            setup.sampler,
            setup.collate,
            setup.config.num_workers,
            skip=progress.batches,
            seed=setup.seed * 100_003 + epoch,
        )
        self.progress = progress
        if rng is not None:
            restore_rng(rng)
        for index, batch in enumerate(batches, start=progress.batches):
            self._batch(progress, index, batch)
        self.progress = None
        return progress.mean_loss

    def _batch(self, progress: EpochProgress, index: int, batch: Batch) -> None:
        ctx, epoch, size = self.ctx, progress.epoch, len(batch)
        first = index - index % self.accumulate
        group = min(self.accumulate, self.setup.batches_per_epoch - first)
        position = index - first
        self.hook.finetuner_on_train_batch_begin(
            ctx=ctx,
            event=BatchStarted(epoch=epoch, step=ctx.step, batch_index=index, batch_size=size),
        )
        outcome = self.step(batch, position=position, group=group)
        self._count_loss(progress, outcome, index)
        progress.batches = index + 1
        boundary = self.ends_step(index + 1)
        rates = self.step.learning_rates()
        if boundary:
            ctx.step += 1
            self._record_step(progress, outcome, rates)
        self.hook.finetuner_on_train_batch_end(
            ctx=ctx,
            event=BatchEnded(
                epoch=epoch,
                step=ctx.step,
                batch_index=index,
                batch_size=size,
                loss=outcome.loss,
                learning_rates=rates,
                optimizer_step=boundary,
                grad_norm=outcome.grad_norm,
            ),
        )
        if boundary:
            self._after_step(progress)

    def ends_step(self, batches: int) -> bool:
        """Whether the epoch's first *batches* batches end an optimizer step: a whole number
        of accumulation groups, or every batch of the epoch."""
        return batches % self.accumulate == 0 or batches == self.setup.batches_per_epoch

    def _count_loss(self, progress: EpochProgress, outcome: StepOutcome, index: int) -> None:
        if math.isfinite(outcome.loss):
            progress.loss_total += outcome.loss
            progress.loss_count += 1
            progress.group_losses.append(outcome.loss)
        elif self.step.precision.scaler is None:
            raise TrainingDivergedError(
                f"the training loss became {outcome.loss} at epoch {progress.epoch + 1}, batch "
                f"{index + 1}; {HINT}."
            )

    def _record_step(
        self, progress: EpochProgress, outcome: StepOutcome, rates: tuple[float, ...]
    ) -> None:
        losses, progress.group_losses = progress.group_losses, []
        norm = outcome.grad_norm
        if outcome.skipped:
            self.log.warning(
                "optimizer step skipped: the gradients overflowed float16 (precision 16-mixed)",
                step=self.ctx.step,
                loss=outcome.loss,
                loss_scale=self.step.precision.scale,
            )
        self.writer.record_step(
            {
                "epoch": progress.epoch,
                "step": self.ctx.step,
                "loss": sum(losses) / len(losses) if losses else None,
                "grad_norm": norm if norm is not None and math.isfinite(norm) else None,
                "learning_rates": list(rates),
                "skipped": outcome.skipped,
                "time": round(time.time(), 3),
            }
        )

    def _after_step(self, progress: EpochProgress) -> None:
        """What plugins asked for during the optimizer step just done."""
        control = self.ctx.control
        # in a distributed fit rank 0 decides both, since both are collectives
        if self._main_decides(control._take_evaluation_request()):
            self.publisher.evaluate_and_publish(
                "step", progress.epoch, train_loss=progress.mean_loss
            )
            self.step.train_mode()
        reason = self._main_decides(control._take_step_checkpoint_request())
        if reason is not None:
            self.save_checkpoint(reason=reason)

    def _main_decides(self, value: Any) -> Any:
        """Rank 0's *value* on every rank of a distributed fit; *value* with one process."""
        return distributed.broadcast_object(value) if self.setup.dist.enabled else value
