"""``TrainingCheckpoint``: resumable checkpoints at the end of every epoch, and every N optimizer
steps within epochs."""

from __future__ import annotations

from typing import Any

import finetuner
from finetuner.callback import Callback
from finetuner.errors import ConfigError
from finetuner.plugins import kit

__all__ = ["TrainingCheckpoint"]
__version__ = "0.1.0"


class TrainingCheckpoint(Callback):
    """Write a training checkpoint at the end of every epoch (and, with *every_n_steps*, every
    that many optimizer steps) and keep the newest ones.

    :param last_k_epochs: how many of the most recent checkpoints to keep (at least 1); step
        checkpoints count among them.
    :param every_n_steps: also checkpoint within epochs, after every this many optimizer steps
        of the fit (with ``accumulate_grad_batches``, steps count optimizer steps, not
        batches). A run killed mid-epoch then resumes from the batch after its latest step.

    A checkpoint holds the model, optimizer, scheduler, sampler position, random-number
    generators and every callback's ``state_dict``, written to a temporary folder and renamed
    into ``<run>/checkpoints/epoch-NNNN/`` (or ``epoch-NNNN-step-SSSSSSSS/`` within an epoch): a
    kill at any moment leaves either a complete checkpoint or none. At an epoch's end it runs in
    the ``trylast`` tier of ``finetuner_on_epoch_end``, after the other plugins updated their
    state (including an early-stopping decision); within an epoch it asks the trainer for one
    (``ctx.control.request_step_checkpoint``), which writes it after the step's hooks and any
    step evaluation.

    Continue an interrupted run with ``finetuner.fit(<same options>, resume="<run name>")`` or,
    for runs started from a config file, ``finetuner resume <run name>``.
    """

    def __init__(self, last_k_epochs: int = 1, every_n_steps: int | None = None) -> None:
        _positive(last_k_epochs, "last_k_epochs")
        if every_n_steps is not None:
            _positive(every_n_steps, "every_n_steps")
        self.last_k_epochs = last_k_epochs
        self.every_n_steps = every_n_steps
        self._prune_pending = False

    @finetuner.hookimpl(trylast=True)
    def finetuner_on_train_batch_end(self, ctx: Any, event: Any) -> None:
        if self._prune_pending:  # the step checkpoint asked for at the last due step exists
            self._prune(ctx)
        if (
            self.every_n_steps is not None
            and event.optimizer_step
            and event.step % self.every_n_steps == 0
        ):
            ctx.control.request_step_checkpoint(f"every {self.every_n_steps} steps")
            self._prune_pending = True

    @finetuner.hookimpl(trylast=True)
    def finetuner_on_epoch_end(self, ctx: Any) -> None:
        ctx.save_checkpoint()
        self._prune(ctx)

    def _prune(self, ctx: Any) -> None:
        self._prune_pending = False
        # in a distributed fit, rank 0 writes and prunes
        if not getattr(ctx, "is_main_process", True):
            return
        # An attribute of the kit, read here: it imports torch, which listing plugins must not.
        kit.prune_checkpoints(ctx.run.checkpoint_dir, keep=self.last_k_epochs)


def _positive(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"TrainingCheckpoint: {name} must be a positive integer, not {value!r}.")
