"""One optimisation step: forward, loss, backward, the optimizer and scheduler steps.

:class:`TrainingStep` is the one place that drives a batch through the models and updates the
weights. What changes how a step runs (mixed precision, gradient accumulation and clipping,
cached in-batch negatives, distributed data parallelism) plugs in here: the epoch loop only
hands it batches and reads back the loss.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data import Batch
from ..encoding import to_device
from .losses import PAIR_LOSSES
from .setup import FitSetup

__all__ = ["TrainingStep"]


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
        self._clip_loss = isinstance(self.loss_fn, PAIR_LOSSES["CLIPLoss"])

    def embed(self, batch: Batch) -> list[torch.Tensor]:
        """Each column of *batch* embedded by its model."""
        return [
            self.models[name](to_device(items, self.device))
            for name, items in zip(self.routes, batch.items)
        ]

    def loss(self, batch: Batch) -> torch.Tensor:
        """The loss of *batch*, in the form its data needs (also used for validation)."""
        embeddings = self.embed(batch)
        if self.data_kind in ("scored", "triplets"):
            assert batch.scores is not None
            return self.loss_fn(*embeddings, batch.scores.to(self.device))
        if self._clip_loss:
            return self.loss_fn(*embeddings)
        assert batch.labels is not None
        labels = batch.labels.to(self.device)
        if len(embeddings) > 1:  # text-image pairs under a label-based loss: one pool of items
            labels = labels.repeat(len(embeddings))
        joined = torch.cat(embeddings) if len(embeddings) > 1 else embeddings[0]
        if self.miner is not None:
            return self.loss_fn(joined, labels, self.miner(joined, labels))
        return self.loss_fn(joined, labels)

    def __call__(self, batch: Batch) -> float:
        """Train on *batch*: zero the gradients, forward, backward, step; returns the loss."""
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss = self.loss(batch)
        loss.backward()
        for optimizer in self.optimizers:
            optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return float(loss.item())

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
