"""``TrainingCheckpoint``: resumable checkpoints at the end of every epoch."""

from __future__ import annotations

from typing import Any

import finetuner
from finetuner.callback import Callback
from finetuner.errors import ConfigError
from finetuner.plugins import kit

__all__ = ["TrainingCheckpoint"]
__version__ = "0.1.0"


class TrainingCheckpoint(Callback):
    """Write a training checkpoint at the end of every epoch and keep the newest ones.

    :param last_k_epochs: how many of the most recent checkpoints to keep (at least 1).

    A checkpoint holds the model, optimizer, scheduler, sampler position, random-number
    generators and every callback's ``state_dict``, written to a temporary folder and renamed
    into ``<run>/checkpoints/epoch-NNNN/``: a kill at any moment leaves either a complete
    checkpoint or none. It runs in the ``trylast`` tier of ``finetuner_on_epoch_end``, after the
    other plugins updated their state (including an early-stopping decision).

    Continue an interrupted run with ``finetuner.fit(<same options>, resume="<run name>")`` or,
    for runs started from a config file, ``finetuner resume <run name>``.
    """

    def __init__(self, last_k_epochs: int = 1) -> None:
        if (
            isinstance(last_k_epochs, bool)
            or not isinstance(last_k_epochs, int)
            or last_k_epochs < 1
        ):
            raise ConfigError(
                f"TrainingCheckpoint: last_k_epochs must be a positive integer, not {last_k_epochs!r}."
            )
        self.last_k_epochs = last_k_epochs

    @finetuner.hookimpl(trylast=True)
    def finetuner_on_epoch_end(self, ctx: Any) -> None:
        ctx.save_checkpoint()
        # An attribute of the kit, read here: it imports torch, which listing plugins must not.
        kit.prune_checkpoints(ctx.run.checkpoint_dir, keep=self.last_k_epochs)
