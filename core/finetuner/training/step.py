"""One optimisation step: forward, loss, backward, the optimizer and scheduler steps.

:class:`TrainingStep` is the one place that drives a batch through the models and updates the
weights. What changes how a step runs (mixed precision, gradient accumulation and clipping,
cached in-batch negatives, distributed data parallelism) plugs in here: the epoch loop only
hands it batches and reads back the loss.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from contextlib import AbstractContextManager as ContextManager
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..data import Batch
from ..distributed.gather import GatheredLabelLoss
from ..encoding import to_device
from .contrastive import enable_gather
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
        self.world_size = setup.dist.world_size
        unused = self._unused_parameters(setup) if self.world_size > 1 else set()
        self.trained = _data_parallel(self.models, setup.device, self.world_size, unused)
        """The models the training forward runs through: each in DistributedDataParallel in
        a distributed fit (the others, such as validation, use the plain modules)."""
        self.gathers = self.world_size > 1 and (
            config.gather_across_devices or bool(getattr(self.loss_fn, "gather_across_devices", 0))
        )
        """Whether training losses see the batches of every rank (``gather_across_devices``);
        validation, which every rank runs on all of the validation data, never does."""
        self.gathered: GatheredLabelLoss | None = None
        if self.gathers and not (self.in_batch and enable_gather(self.loss_fn)):
            self.gathered = GatheredLabelLoss(self.loss_fn, self.miner)
        _set_gather(self.loss_fn, False)  # on only within a training step (see _gathering)
        self.unsynced = [p for p in self.loss_fn.parameters() if p.requires_grad]
        """Trainable parameters outside every DDP module, whose gradients the step averages
        over the ranks itself (a loss's own, such as CLIP's temperature)."""

    def _unused_parameters(self, setup: FitSetup) -> set[str]:
        """The models that hold trainable parameters their embeddings do not use (a pooler),
        found with two rows of the training data: DDP must look for those at every step. The
        probe runs in eval mode with the random state put back, so it changes nothing."""
        batch = setup.collate(setup.train_data.take(list(range(min(2, len(setup.train_data))))))
        modes = {name: m.training for name, m in self.models.items()}
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices), torch.enable_grad():
                for module in self.models.values():
                    module.eval()
                total = sum(
                    self.models[name](to_device(items, self.device)).float().sum()
                    for name, items in zip(self.routes, batch.items)
                )
                assert isinstance(total, torch.Tensor)
                total.backward()
            return {
                name
                for name, module in self.models.items()
                if any(p.requires_grad and p.grad is None for p in module.parameters())
            }
        finally:
            for name, module in self.models.items():
                module.train(modes[name])
                module.zero_grad(set_to_none=True)

    def embed(self, batch: Batch) -> list[torch.Tensor]:
        """Each column of *batch* embedded by its model, in the step's precision; float16 and
        bfloat16 embeddings are upcast to float32, so the loss is computed in float32 (or the
        model's float64)."""
        return [self._forward(name, items) for name, items in zip(self.routes, batch.items)]

    def _forward(self, name: str, items: Any) -> torch.Tensor:
        module = self.trained[name] if torch.is_grad_enabled() else self.models[name]
        with self.precision.autocast():
            out = module(to_device(items, self.device))
        return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out

    def loss(self, batch: Batch, *, gather: bool = False) -> torch.Tensor:
        """The loss of *batch*, in the form its data needs (also used for validation); with
        *gather* (training, ``gather_across_devices``), over the batches of every rank."""
        embeddings = self.embed(batch)
        with self._gathering(gather):
            return self._loss_of(batch, embeddings, gather)

    def _loss_of(self, batch: Batch, embeddings: list[torch.Tensor], gather: bool) -> torch.Tensor:
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
        if gather and self.gathered is not None:
            return self.gathered(joined, labels)
        if self.miner is not None:
            return self.loss_fn(joined, labels, self.miner(joined, labels))
        return self.loss_fn(joined, labels)

    def _gathering(self, on: bool) -> ContextManager[Any]:
        """A block in which an in-batch-negative loss gathers across ranks (when *on* and the
        fit gathers)."""
        if not (on and self.gathers and self.gathered is None):
            return nullcontext()
        stack = ExitStack()
        _set_gather(self.loss_fn, True)
        stack.callback(_set_gather, self.loss_fn, False)
        return stack

    def __call__(self, batch: Batch, *, position: int = 0, group: int = 1) -> StepOutcome:
        """Train on *batch*, batch *position* of an accumulation *group* of that many batches:
        the first zeroes the gradients, each adds its loss divided by *group* (so the group
        trains as one batch of all its items would, for a loss that is a mean over items), and
        the last clips and steps the optimizers and the scheduler."""
        if position == 0:
            for optimizer in self.optimizers:
                optimizer.zero_grad(set_to_none=True)
        last = position == group - 1
        # gradients are averaged over the ranks once per optimizer step, at its last batch
        with nullcontext() if last else self._no_sync(self.trained):
            value = self._backward(batch, group, sync=last)
        if not last:
            return StepOutcome(value)
        self._average_unsynced()
        if not math.isfinite(value) and self.precision.scaler is None:
            return StepOutcome(value)  # the epoch loop fails the run
        norm = self._clip()
        stepped = self.precision.step(self.optimizers)
        if stepped and self.scheduler is not None:
            self.scheduler.step()
        return StepOutcome(value, grad_norm=norm, skipped=not stepped)

    def _backward(self, batch: Batch, group: int, sync: bool = True) -> float:
        """Back-propagate the loss of *batch* (divided by *group*); returns the loss (in a
        distributed fit, its mean over the ranks). A cached loss (one with a
        ``mini_batch_size``) back-propagates with GradCache; when the gradients are to be
        averaged (*sync*), only each model's last replayed mini-batch does so."""

        def backward(loss: torch.Tensor) -> None:
            self.precision.backward(loss / group if group > 1 else loss)

        if self.mini_batch_size is not None and self.in_batch:
            loss = cached_backward(
                self._forward,
                self.routes,
                batch.items,
                loss_fn=self._gathered_loss_fn,
                mini_batch_size=self.mini_batch_size,
                backward=backward,
                device=self.device,
                hold=(lambda name: self._no_sync([name])) if sync else None,
            )
        else:
            loss = self.loss(batch, gather=True)
            backward(loss)
        return self._mean_over_ranks(loss.detach())

    def _gathered_loss_fn(self, *embeddings: torch.Tensor) -> torch.Tensor:
        with self._gathering(True):
            return self.loss_fn(*embeddings)

    def _no_sync(self, names: Iterable[str]) -> ContextManager[Any]:
        """A block in which the DDP models of *names* keep their gradients to themselves."""
        stack = ExitStack()
        for name in names:
            module = self.trained.get(name)
            if isinstance(module, DistributedDataParallel):
                stack.enter_context(module.no_sync())
        return stack

    def _average_unsynced(self) -> None:
        if self.world_size == 1:
            return
        for param in self.unsynced:
            if param.grad is not None:
                dist.all_reduce(param.grad)
                param.grad /= self.world_size

    def _mean_over_ranks(self, loss: torch.Tensor) -> float:
        if self.world_size == 1:
            return float(loss.item())
        value = loss.reshape(1).to(torch.float64)
        dist.all_reduce(value)
        return float(value.item()) / self.world_size

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

    def release(self) -> None:
        """Let go of the DDP wrappers (and with them the process group's buffers) once the
        fit is over, so that leaving the process group at exit finds none in use."""
        self.trained = dict(self.models)

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


def _set_gather(loss: nn.Module, on: bool) -> None:
    if hasattr(loss, "gather_across_devices"):
        loss.gather_across_devices = on  # type: ignore[assignment]


def _data_parallel(
    models: dict[str, nn.Module], device: torch.device, world_size: int, unused: set[str]
) -> dict[str, nn.Module]:
    """*models*, each with trainable parameters wrapped in DDP when there are several ranks;
    the models named in *unused* hold parameters their embeddings leave out, which DDP then
    looks for at every step (``find_unused_parameters``)."""
    if world_size == 1:
        return dict(models)
    ids = [device.index] if device.type == "cuda" else None
    return {
        name: DistributedDataParallel(module, device_ids=ids, find_unused_parameters=name in unused)
        if any(p.requires_grad for p in module.parameters())
        else module
        for name, module in models.items()
    }


def _total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of all *grads* together. For gradients of one device and dtype (the usual
    case) one fused per-tensor norm and a norm of those: half the time of the general
    ``get_total_norm``, which a small model pays at every step."""
    first = grads[0]
    if all(g.device == first.device and g.dtype == first.dtype for g in grads):
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    return torch.nn.utils.get_total_norm(grads, foreach=True)
