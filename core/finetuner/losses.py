"""Losses and miners by name, from pytorch-metric-learning."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from .errors import ConfigError, close_matches_hint

__all__ = [
    "CLASSIFICATION_LOSSES",
    "build_loss",
    "build_miner",
    "loss_names",
    "miner_names",
    "validate_loss_name",
    "validate_miner_name",
]

# Losses that learn class proxies/weights: they train well from random batches, need
# num_classes and embedding_size, and have parameters of their own.
CLASSIFICATION_LOSSES = frozenset(
    {
        "ArcFaceLoss",
        "CosFaceLoss",
        "SubCenterArcFaceLoss",
        "LargeMarginSoftmaxLoss",
        "SphereFaceLoss",
        "NormalizedSoftmaxLoss",
        "ProxyAnchorLoss",
        "ProxyNCALoss",
        "SoftTripleLoss",
    }
)


def _classes(module: Any, base: type) -> dict[str, type]:
    return {
        name: obj
        for name, obj in vars(module).items()
        if isinstance(obj, type)
        and issubclass(obj, base)
        and obj is not base
        and not name.startswith("Base")
    }


def loss_names() -> list[str]:
    from pytorch_metric_learning import losses
    from pytorch_metric_learning.losses import BaseMetricLossFunction

    return sorted(_classes(losses, BaseMetricLossFunction))


def miner_names() -> list[str]:
    from pytorch_metric_learning import miners
    from pytorch_metric_learning.miners import BaseMiner

    return sorted(_classes(miners, BaseMiner))


def validate_loss_name(name: str) -> str:
    names = loss_names()
    if name not in names:
        raise ConfigError(
            f"unknown loss '{name}'; pytorch-metric-learning losses are: {', '.join(names)}."
            f"{close_matches_hint(name, names)}"
        )
    return name


def validate_miner_name(name: str) -> str:
    names = miner_names()
    if name not in names:
        raise ConfigError(
            f"unknown miner '{name}'; pytorch-metric-learning miners are: {', '.join(names)}."
            f"{close_matches_hint(name, names)}"
        )
    return name


def _instantiate(cls: type, options: Mapping[str, Any], what: str, auto: Mapping[str, Any]) -> Any:
    params = inspect.signature(cls).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in auto.items() if k in params and k not in options}
    kwargs.update(options)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        accepted = [p for p in params if p not in ("self", "kwargs", "args")]
        bad = [k for k in options if k not in params]
        if bad:
            raise ConfigError(
                f"{what}_options: {cls.__name__} has no option '{bad[0]}'. Accepted options: "
                f"{', '.join(accepted) or '(none)'}"
                f"{' (and the base options of pytorch-metric-learning)' if takes_kwargs else ''}."
                f"{close_matches_hint(bad[0], accepted)}"
            ) from exc
        raise ConfigError(
            f"{what}_options for {cls.__name__} are invalid: {exc}. Accepted options: "
            f"{', '.join(accepted) or '(none)'}."
        ) from exc
    except (ValueError, AssertionError) as exc:
        raise ConfigError(f"{what}_options for {cls.__name__} are invalid: {exc}") from exc


def build_loss(
    name: str, options: Mapping[str, Any], *, num_classes: int, embedding_size: int | None
) -> nn.Module:
    """Instantiate a pytorch-metric-learning loss; ``num_classes`` and ``embedding_size`` are
    filled in for losses that need them, unless given in *options*."""
    from pytorch_metric_learning import losses

    validate_loss_name(name)
    auto: dict[str, Any] = {"num_classes": num_classes}
    if embedding_size is not None:
        auto["embedding_size"] = embedding_size
    return _instantiate(getattr(losses, name), options, "loss", auto)


def build_miner(name: str, options: Mapping[str, Any]) -> Any:
    from pytorch_metric_learning import miners

    validate_miner_name(name)
    return _instantiate(getattr(miners, name), options, "miner", {})
