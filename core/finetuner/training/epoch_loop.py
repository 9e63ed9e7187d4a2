"""The epoch loop: one pass over the training batches, with the batch hooks around each step.

The step itself (forward, backward, optimizer) belongs to :class:`~.step.TrainingStep`; this
loop counts steps, checks the loss stays finite, and runs an evaluation after a batch when a
plugin asked for one (``ctx.control.request_evaluation()``, stage ``"step"``).
"""

from __future__ import annotations

import math
from typing import Any

from ..context import TrainingContext
from ..data import iterate_batches
from ..errors import FinetunerError
from ..events import BatchEnded, BatchStarted, EpochStarted
from .metrics import MetricsPublisher
from .setup import FitSetup
from .step import TrainingStep

__all__ = ["EpochLoop"]


class EpochLoop:
    """Runs the training batches of one epoch and returns their mean loss."""

    def __init__(
        self,
        setup: FitSetup,
        step: TrainingStep,
        hook: Any,
        ctx: TrainingContext,
        publisher: MetricsPublisher,
    ) -> None:
        self.setup, self.step, self.hook, self.ctx, self.publisher = (
            setup,
            step,
            hook,
            ctx,
            publisher,
        )

    def run(self, epoch: int) -> float:
        setup, ctx, hook = self.setup, self.ctx, self.hook
        setup.sampler.set_epoch(epoch)
        hook.finetuner_on_epoch_begin(
            ctx=ctx,
            event=EpochStarted(
                epoch=epoch, epochs=setup.config.epochs, steps=setup.steps_per_epoch
            ),
        )
        batch_begin, batch_end = (
            hook.finetuner_on_train_batch_begin,
            hook.finetuner_on_train_batch_end,
        )
        self.step.train_mode()
        batches = iterate_batches(
            setup.train_data, setup.sampler, setup.collate, setup.config.num_workers
        )
        total, count = 0.0, 0
        for index, batch in enumerate(batches):
            size = len(batch)
            batch_begin(
                ctx=ctx,
                event=BatchStarted(epoch=epoch, step=ctx.step, batch_index=index, batch_size=size),
            )
            loss = self.step(batch)
            if not math.isfinite(loss):
                raise FinetunerError(
                    f"the training loss became {loss} at epoch {epoch + 1}, batch {index + 1}; "
                    "lower the learning rate or check the data for extreme values."
                )
            ctx.step += 1
            total += loss
            count += 1
            batch_end(
                ctx=ctx,
                event=BatchEnded(
                    epoch=epoch,
                    step=ctx.step,
                    batch_index=index,
                    batch_size=size,
                    loss=loss,
                    learning_rates=self.step.learning_rates(),
                ),
            )
            if ctx.control._take_evaluation_request():
                self.publisher.evaluate_and_publish("step", epoch, train_loss=total / count)
                self.step.train_mode()
        return total / max(count, 1)
