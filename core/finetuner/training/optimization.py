"""What a fit optimises and how: the loss and miner, the optimizers and the scheduler."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import FitConfig
from ..data import KINDS
from ..errors import ConfigError
from .losses import PAIR_LOSSES, build_loss, build_miner
from .optim import build_optimizer, build_scheduler

__all__ = [
    "build_loss_and_miner",
    "build_loss_optimizer",
    "build_optimizer_for",
    "build_scheduler_for",
]


def build_loss_and_miner(
    config: FitConfig, *, num_classes: int, embedding_size: int, device: torch.device
) -> tuple[nn.Module, Any]:
    """The loss (losses with weights of their own get ``num_classes`` and the model's
    ``embedding_size``) on *device*, and the miner or ``None``."""
    loss = build_loss(
        config.loss,
        config.loss_options,
        num_classes=max(num_classes, 1),
        embedding_size=embedding_size,
    ).to(device)
    if config.miner and config.loss in PAIR_LOSSES:
        data_kind = PAIR_LOSSES[config.loss].data_kind  # type: ignore[attr-defined]
        raise ConfigError(
            f"miner={config.miner!r} mines label-based tuples, but {config.loss} trains on "
            f"{KINDS[data_kind]}; drop the miner."
        )
    miner = build_miner(config.miner, config.miner_options) if config.miner else None
    return loss, miner


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def build_loss_optimizer(config: FitConfig, loss: nn.Module) -> torch.optim.Optimizer | None:
    """A separate optimizer for the loss's own parameters (``loss_optimizer=``), e.g. the class
    centres of ArcFace, which often want another learning rate; ``None`` without one."""
    if not config.loss_optimizer:
        if config.loss_optimizer_options:
            raise ConfigError("loss_optimizer_options are set but loss_optimizer is not.")
        return None
    params = _trainable(loss)
    if not params:
        raise ConfigError(
            f"loss_optimizer={config.loss_optimizer!r}, but {config.loss} has no parameters to "
            "optimize; loss_optimizer is for losses such as ArcFaceLoss or CosFaceLoss."
        )
    return build_optimizer(
        config.loss_optimizer, [{"params": params}], config.loss_optimizer_options, None
    )


def build_optimizer_for(
    config: FitConfig, models: list[nn.Module], loss: nn.Module
) -> torch.optim.Optimizer:
    """The optimizer of the models' trainable parameters, and of the loss's when it has no
    optimizer of its own."""
    groups: list[dict[str, Any]] = [{"params": [p for m in models for p in _trainable(m)]}]
    loss_params = _trainable(loss)
    if loss_params and not config.loss_optimizer:
        groups.append({"params": loss_params})
    if not groups[0]["params"]:
        raise ConfigError("the model has no trainable parameters (all are frozen).")
    return build_optimizer(config.optimizer, groups, config.optimizer_options, config.learning_rate)


def build_scheduler_for(
    config: FitConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> tuple[Any, str]:
    """``(scheduler or None, "batch" or "epoch")``: when the scheduler steps."""
    if not config.scheduler:
        return None, "batch"
    return build_scheduler(
        config.scheduler,
        optimizer,
        config.scheduler_options,
        steps_per_epoch=steps_per_epoch,
        epochs=config.epochs,
    )
