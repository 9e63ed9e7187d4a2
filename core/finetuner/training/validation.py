"""The validation loss: the training loss on the validation data, without gradients."""

from __future__ import annotations

from ..data import iterate_batches
from ..encoding import evaluating
from .setup import FitSetup
from .step import TrainingStep

__all__ = ["validation_loss"]


def validation_loss(setup: FitSetup, step: TrainingStep) -> float:
    """The mean batch loss over the validation data (the same batches every time), with the
    models in eval mode and no gradients; they go back to the mode they were in."""
    assert setup.eval_data is not None
    batches = iterate_batches(
        setup.eval_data, setup.validation_sampler(), setup.collate, setup.config.num_workers
    )
    total, count = 0.0, 0
    with evaluating(*step.modules):
        for batch in batches:
            total += float(step.loss(batch).item())
            count += 1
    return total / max(count, 1)
