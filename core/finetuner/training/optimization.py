"""What a fit optimises and how: the loss and miner, the optimizers and the scheduler."""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from ..config import FitConfig
from ..data import KINDS
from ..errors import ConfigError
from .losses import build_loss, build_miner, loss_data_kinds
from .optim import build_optimizer, build_scheduler

__all__ = [
    "build_loss_and_miner",
    "build_loss_optimizer",
    "build_optimizer_for",
    "build_scheduler_for",
    "layer_wise_groups",
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
    data_kinds = loss_data_kinds(config.loss, config.loss_options)
    if config.miner and data_kinds is not None:
        raise ConfigError(
            f"miner={config.miner!r} mines label-based tuples, but {config.loss} trains on "
            f"{' or '.join(KINDS[k] for k in data_kinds)}; drop the miner."
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
        config.loss_optimizer,
        [{"params": params}],
        config.loss_optimizer_options,
        None,
        option="loss_optimizer_options",
    )


def build_optimizer_for(
    config: FitConfig, models: list[nn.Module], loss: nn.Module
) -> torch.optim.Optimizer:
    """The optimizer of the models' trainable parameters (in groups by depth with
    ``layer_wise_lr_decay``), and of the loss's when it has no optimizer of its own."""
    if config.layer_wise_lr_decay is not None:
        groups = layer_wise_groups(models, config.layer_wise_lr_decay, config.model)
    else:
        groups = [{"params": [p for m in models for p in _trainable(m)]}]
    if not any(group["params"] for group in groups):
        raise ConfigError("the model has no trainable parameters (all are frozen).")
    loss_params = _trainable(loss)
    if loss_params and not config.loss_optimizer:
        groups.append({"params": loss_params})
    optimizer = build_optimizer(
        config.optimizer, groups, config.optimizer_options, config.learning_rate
    )
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * group.pop("lr_scale", 1.0)
    return optimizer


_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")
_BELOW_LAYERS = ("embeddings", "embed_tokens", "wte", "wpe", "pre_layrnorm", "pre_layernorm")


def layer_wise_groups(models: list[nn.Module], decay: float, model: Any) -> list[dict[str, Any]]:
    """Parameter groups for layer-wise learning-rate decay: in each transformer, a parameter of
    layer *i* of *n* (counted from the bottom) gets ``decay ** (n - i)`` of the learning rate,
    the embeddings ``decay ** (n + 1)``, and everything above the layers (pooling, projection
    heads, final norms) the full rate. Groups are ordered by depth, the full rate first."""
    depths: dict[int, list[nn.Parameter]] = {}
    for module in models:
        named = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
        indices = [int(m.group(1)) for name, _ in named if (m := _LAYER.search(name))]
        if not indices:
            shown = model if isinstance(model, str) else type(model).__name__
            raise ConfigError(
                f"layer_wise_lr_decay applies to transformer backbones (text models, CLIP "
                f"towers), whose parameters are in numbered layers; '{shown}' has none. Drop "
                "layer_wise_lr_decay."
            )
        layers = max(indices) + 1
        for name, parameter in named:
            match = _LAYER.search(name)
            if match:
                depth = layers - int(match.group(1))
            elif any(part in name.split(".") for part in _BELOW_LAYERS):
                depth = layers + 1
            else:
                depth = 0
            depths.setdefault(depth, []).append(parameter)
    return [
        {"params": params, "lr_scale": decay**depth} for depth, params in sorted(depths.items())
    ]


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
