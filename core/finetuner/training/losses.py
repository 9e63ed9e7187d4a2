"""Losses and miners by name: every pytorch-metric-learning loss and miner, plus the losses
for text-image pairs (``CLIPLoss``), scored pairs (``CosineSimilarityLoss``) and triplets with
a teacher's margin (``MarginMSELoss``)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, close_matches_hint

__all__ = [
    "CLASSIFICATION_LOSSES",
    "IN_BATCH_NEGATIVE_LOSSES",
    "PAIR_LOSSES",
    "CLIPLoss",
    "CosineSimilarityLoss",
    "MarginMSELoss",
    "build_loss",
    "build_miner",
    "loss_names",
    "miner_names",
    "uses_in_batch_negatives",
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


class CLIPLoss(nn.Module):
    """Symmetric contrastive loss of text-image pairs: each text must pick its own image among
    the batch's images, and each image its own text (cross-entropy both ways, averaged).
    ``temperature`` is the initial softmax temperature; it is learnt (as CLIP's logit scale)
    unless ``learn_temperature=False``."""

    data_kind = "pairs"

    def __init__(self, temperature: float = 0.07, learn_temperature: bool = True) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, not {temperature}")
        scale = torch.tensor(math.log(1.0 / temperature))
        self.logit_scale = nn.Parameter(scale, requires_grad=learn_temperature)

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        text = nn.functional.normalize(text, dim=-1)
        image = nn.functional.normalize(image, dim=-1)
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        logits = scale * text @ image.T
        target = torch.arange(len(text), device=text.device)
        return 0.5 * (
            nn.functional.cross_entropy(logits, target)
            + nn.functional.cross_entropy(logits.T, target)
        )


class CosineSimilarityLoss(nn.Module):
    """Mean squared error between the cosine similarity of each pair and its score."""

    data_kind = "scored"

    def forward(self, a: torch.Tensor, b: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(nn.functional.cosine_similarity(a, b, dim=-1), scores)


class MarginMSELoss(nn.Module):
    """Mean squared error between the student's margin, ``q·p - q·n`` (dot products), and the
    teacher's margin of each triplet (knowledge distillation from a cross-encoder)."""

    data_kind = "triplets"

    def forward(
        self,
        query: torch.Tensor,
        positive: torch.Tensor,
        negative: torch.Tensor,
        margins: torch.Tensor,
    ) -> torch.Tensor:
        student = (query * positive).sum(-1) - (query * negative).sum(-1)
        return nn.functional.mse_loss(student, margins)


IN_BATCH_NEGATIVE_LOSSES = frozenset(
    {
        "MultipleNegativesRankingLoss",
        "CachedMultipleNegativesRankingLoss",
        "CLIPLoss",
        "CachedCLIPLoss",
    }
)
"""Losses that score each query against every document of its batch (in-batch negatives):
they train on ``'pairs'`` and ``'retrieval'`` data, with duplicate-free batches by default."""


def uses_in_batch_negatives(name: str, options: Mapping[str, Any] | None = None) -> bool:
    """Whether loss *name* (with *options*: ``MatryoshkaLoss`` wraps ``options['loss']``)
    scores queries against in-batch negatives."""
    if name == "MatryoshkaLoss":
        inner = (options or {}).get("loss", "MultipleNegativesRankingLoss")
        return inner in IN_BATCH_NEGATIVE_LOSSES
    return name in IN_BATCH_NEGATIVE_LOSSES


PAIR_LOSSES: dict[str, type[nn.Module]] = {
    "CLIPLoss": CLIPLoss,
    "CosineSimilarityLoss": CosineSimilarityLoss,
    "MarginMSELoss": MarginMSELoss,
}
"""finetuner's own losses, by name; each names the data kind it trains on (``data_kind``)."""


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

    return sorted({*_classes(losses, BaseMetricLossFunction), *PAIR_LOSSES})


def miner_names() -> list[str]:
    from pytorch_metric_learning import miners
    from pytorch_metric_learning.miners import BaseMiner

    return sorted(_classes(miners, BaseMiner))


def validate_loss_name(name: str) -> str:
    names = loss_names()
    if name not in names:
        raise ConfigError(
            f"unknown loss '{name}'; losses are: {', '.join(names)}."
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
    validate_loss_name(name)
    if name in PAIR_LOSSES:
        return _instantiate(PAIR_LOSSES[name], options, "loss", {})
    from pytorch_metric_learning import losses

    auto: dict[str, Any] = {"num_classes": num_classes}
    if embedding_size is not None:
        auto["embedding_size"] = embedding_size
    return _instantiate(getattr(losses, name), options, "loss", auto)


def build_miner(name: str, options: Mapping[str, Any]) -> Any:
    from pytorch_metric_learning import miners

    validate_miner_name(name)
    return _instantiate(getattr(miners, name), options, "miner", {})
