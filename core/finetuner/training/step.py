"""One optimisation step: forward, loss, backward, the optimizer and scheduler steps.

:class:`TrainingStep` is the one place that drives a batch through the models and updates the
weights. What changes how a step runs (mixed precision, gradient accumulation and clipping,
cached in-batch negatives, distributed data parallelism) plugs in here: the epoch loop only
hands it batches and reads back the loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..data import Batch
from ..encoding import to_device
from .gradcache import cached_backward
from .losses import uses_in_batch_negatives
from .precision import StepPrecision
from .setup import FitSetup

__all__ = ["StepOutcome", "TrainingStep"]


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What training on one batch did."""

    loss: float
    """The batch's loss (not divided by the accumulation)."""
    grad_norm: float | None = None
    """The gradients' total L2 norm before clipping, at an optimizer step; None between the
    batches of an accumulation group."""
    skipped: bool = False
    """``16-mixed`` only: the gradient scaler skipped this step (non-finite gradients)."""


class TrainingStep:
    """Computes the loss of a batch and, when training, updates the weights with it."""

    def __init__(self, setup: FitSetup) -> None:
        self.models = setup.models.modules
        self.routes = setup.routes
        self.loss_fn = setup.loss
        self.miner = setup.miner
        self.data_kind = setup.train_data.kind
        self.device = setup.device
        self.optimizers = [setup.optimizer]
        if setup.loss_optimizer is not None:
            self.optimizers.append(setup.loss_optimizer)
        self.scheduler = setup.scheduler if setup.scheduler_step == "batch" else None
        config = setup.config
        self.in_batch = uses_in_batch_negatives(config.loss, config.loss_options)
        self.mini_batch_size: int | None = getattr(self.loss_fn, "mini_batch_size", None)
        self.precision = StepPrecision(config.precision, setup.device)
        self.clip_norm, self.clip_value = config.gradient_clip_norm, config.gradient_clip_value
        self.parameters = [
            p for optimizer in self.optimizers for g in optimizer.param_groups for p in g["params"]
        ]

    def embed(self, batch: Batch) -> list[torch.Tensor]:
        """Each column of *batch* embedded by its model, in the step's precision; float16 and
        bfloat16 embeddings are upcast to float32, so the loss is computed in float32 (or the
        model's float64)."""
        return [self._forward(name, items) for name, items in zip(self.routes, batch.items)]

    def _forward(self, name: str, items: Any) -> torch.Tensor:
        with self.precision.autocast():
            out = self.models[name](to_device(items, self.device))
        return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out

    def loss(self, batch: Batch) -> torch.Tensor:
        """The loss of *batch*, in the form its data needs (also used for validation)."""
        embeddings = self.embed(batch)
        if self.data_kind in ("scored", "triplets"):
            assert batch.scores is not None
            return self.loss_fn(*embeddings, batch.scores.to(self.device))
        if self.in_batch:  # one embedding tensor per column: query, positive, negatives
            return self.loss_fn(*embeddings)
        assert batch.labels is not None
        labels = batch.labels.to(self.device)
        if len(embeddings) > 1:  # text-image pairs under a label-based loss: one pool of items
            labels = labels.repeat(len(embeddings))
        joined = torch.cat(embeddings) if len(embeddings) > 1 else embeddings[0]
        if self.miner is not None:
            return self.loss_fn(joined, labels, self.miner(joined, labels))
        return self.loss_fn(joined, labels)

    def __call__(self, batch: Batch, *, position: int = 0, group: int = 1) -> StepOutcome:
        """Train on *batch*, batch *position* of an accumulation *group* of that many batches:
        the first zeroes the gradients, each adds its loss divided by *group* (so the group
        trains as one batch of all its items would, for a loss that is a mean over items), and
        the last clips and steps the optimizers and the scheduler."""
        if position == 0:
            for optimizer in self.optimizers:
                optimizer.zero_grad(set_to_none=True)
        value = self._backward(batch, group)
        if position < group - 1:
            return StepOutcome(value)
        if not math.isfinite(value) and self.precision.scaler is None:
            return StepOutcome(value)  # the epoch loop fails the run
        norm = self._clip()
        stepped = self.precision.step(self.optimizers)
        if stepped and self.scheduler is not None:
            self.scheduler.step()
        return StepOutcome(value, grad_norm=norm, skipped=not stepped)

    def _backward(self, batch: Batch, group: int) -> float:
        """Back-propagate the loss of *batch* (divided by *group*); returns the loss. A cached
        loss (one with a ``mini_batch_size``) back-propagates with GradCache."""

        def backward(loss: torch.Tensor) -> None:
            self.precision.backward(loss / group if group > 1 else loss)

        if self.mini_batch_size is not None and self.in_batch:
            loss = cached_backward(
                self._forward,
                self.routes,
                batch.items,
                loss_fn=self.loss_fn,
                mini_batch_size=self.mini_batch_size,
                backward=backward,
                device=self.device,
            )
        else:
            loss = self.loss(batch)
            backward(loss)
        return float(loss.item())

    def _clip(self) -> float:
        """Unscale the gradients, measure their total norm, then clip them as configured;
        returns the norm before clipping."""
        self.precision.unscale(self.optimizers)
        grads = [p.grad for p in self.parameters if p.grad is not None]
        if not grads:
            return 0.0
        norm = _total_norm(grads)
        if self.clip_norm is not None:
            torch.nn.utils.clip_grads_with_norm_(self.parameters, self.clip_norm, norm)
        elif self.clip_value is not None:
            torch.nn.utils.clip_grad_value_(self.parameters, self.clip_value)
        return float(norm)

    def learning_rates(self) -> tuple[float, ...]:
        """The learning rate of each parameter group of the model's optimizer."""
        return tuple(group["lr"] for group in self.optimizers[0].param_groups)

    def train_mode(self) -> None:
        """Put every model in training mode (an evaluation may have left them in eval mode)."""
        for module in self.models.values():
            module.train()

    @property
    def modules(self) -> list[nn.Module]:
        return list(self.models.values())

    def __repr__(self) -> str:
        return f"TrainingStep(models={list(self.models)}, optimizers={len(self.optimizers)})"


def _total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of all *grads* together. For gradients of one device and dtype (the usual
    case) one fused per-tensor norm and a norm of those: half the time of the general
    ``get_total_norm``, which a small model pays at every step."""
    first = grads[0]
    if all(g.device == first.device and g.dtype == first.dtype for g in grads):
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    return torch.nn.utils.get_total_norm(grads, foreach=True)
