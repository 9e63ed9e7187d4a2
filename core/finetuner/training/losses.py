"""Losses and miners by name: every pytorch-metric-learning loss and miner, plus the
in-batch-negative losses of text-image pairs and retrieval data (``CLIPLoss``,
``MultipleNegativesRankingLoss`` and their cached forms, :mod:`.contrastive`), scored pairs
(``CosineSimilarityLoss``), triplets with a teacher's margin (``MarginMSELoss``), and
``MatryoshkaLoss``, which wraps any of them."""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, close_matches_hint
from .contrastive import (
    CachedCLIPLoss,
    CachedMultipleNegativesRankingLoss,
    CLIPLoss,
    MatryoshkaLoss,
    MultipleNegativesRankingLoss,
)
from .option_values import check_option_types, is_number

__all__ = [
    "CLASSIFICATION_LOSSES",
    "IN_BATCH_NEGATIVE_LOSSES",
    "PAIR_LOSSES",
    "CLIPLoss",
    "CachedCLIPLoss",
    "CachedMultipleNegativesRankingLoss",
    "CosineSimilarityLoss",
    "MarginMSELoss",
    "MatryoshkaLoss",
    "MultipleNegativesRankingLoss",
    "build_loss",
    "build_miner",
    "loss_data_kinds",
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


class CosineSimilarityLoss(nn.Module):
    """Mean squared error between the cosine similarity of each pair and its score."""

    data_kinds = ("scored",)

    def forward(self, a: torch.Tensor, b: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(nn.functional.cosine_similarity(a, b, dim=-1), scores)


class MarginMSELoss(nn.Module):
    """Mean squared error between the student's margin, ``q·p - q·n`` (dot products), and the
    teacher's margin of each triplet (knowledge distillation from a cross-encoder)."""

    data_kinds = ("triplets",)

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
        inner = (options or {}).get("loss", _DEFAULT_INNER)
        return inner in IN_BATCH_NEGATIVE_LOSSES
    return name in IN_BATCH_NEGATIVE_LOSSES


PAIR_LOSSES: dict[str, type[nn.Module]] = {
    "CLIPLoss": CLIPLoss,
    "CachedCLIPLoss": CachedCLIPLoss,
    "MultipleNegativesRankingLoss": MultipleNegativesRankingLoss,
    "CachedMultipleNegativesRankingLoss": CachedMultipleNegativesRankingLoss,
    "CosineSimilarityLoss": CosineSimilarityLoss,
    "MarginMSELoss": MarginMSELoss,
}
"""finetuner's own losses, by name; each names the data kinds it trains on (``data_kinds``)."""

WRAPPER_LOSSES: dict[str, type[nn.Module]] = {"MatryoshkaLoss": MatryoshkaLoss}
"""Losses that wrap another loss, named by their ``loss`` option."""

_DEFAULT_INNER = "MultipleNegativesRankingLoss"


def loss_data_kinds(name: str, options: Mapping[str, Any] | None = None) -> tuple[str, ...] | None:
    """The data kinds loss *name* trains on; ``None`` for the label losses of
    pytorch-metric-learning (labeled items, text-image pairs and two-column retrieval data)."""
    if name in WRAPPER_LOSSES:
        inner = (options or {}).get("loss", _DEFAULT_INNER)
        return loss_data_kinds(inner, options) if inner not in WRAPPER_LOSSES else None
    cls = PAIR_LOSSES.get(name)
    return None if cls is None else tuple(cls.data_kinds)  # type: ignore[attr-defined]


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

    return sorted({*_classes(losses, BaseMetricLossFunction), *PAIR_LOSSES, *WRAPPER_LOSSES})


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


# Options whose value must be above zero in every loss that has them: a softmax temperature
# of 0 divides by zero, and a scale of 0 makes every similarity equal.
_POSITIVE_OPTIONS = frozenset({"temperature", "scale", "tau", "mini_batch_size"})
_NON_NEGATIVE_OPTIONS = frozenset({"margin", "pos_margin", "neg_margin"})


def _check_option_values(cls: type, options: Mapping[str, Any], what: str) -> None:
    """Refuse values that make the loss (or miner) meaningless before it is built: a value
    of the wrong kind or a number that is not finite (:func:`check_option_types`), a
    non-positive temperature or scale, a negative margin."""
    check_option_types(cls, options, f"{what}_options")
    for key, value in options.items():
        if not is_number(value):
            continue
        where = f"{what}_options: {cls.__name__} option {key!r}"
        if key in _POSITIVE_OPTIONS and value <= 0:
            raise ConfigError(f"{where} must be greater than 0, not {value}.")
        if key in _NON_NEGATIVE_OPTIONS and value < 0 and what == "loss":
            raise ConfigError(f"{where} must be at least 0, not {value}.")


def _instantiate(cls: type, options: Mapping[str, Any], what: str, auto: Mapping[str, Any]) -> Any:
    params = inspect.signature(cls).parameters
    _check_option_values(cls, options, what)
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
    if name in WRAPPER_LOSSES:
        return _build_matryoshka(options, num_classes=num_classes, embedding_size=embedding_size)
    if name in PAIR_LOSSES:
        return _instantiate(PAIR_LOSSES[name], options, "loss", {})
    from pytorch_metric_learning import losses

    auto: dict[str, Any] = {"num_classes": num_classes}
    if embedding_size is not None:
        auto["embedding_size"] = embedding_size
    return _instantiate(getattr(losses, name), options, "loss", auto)


def _build_matryoshka(
    options: Mapping[str, Any], *, num_classes: int, embedding_size: int | None
) -> nn.Module:
    """``MatryoshkaLoss``: its own options (``loss``, ``dims``, ``weights``) are taken out, the
    rest go to the wrapped loss."""
    inner_options = dict(options)
    inner = inner_options.pop("loss", _DEFAULT_INNER)
    dims = inner_options.pop("dims", None)
    weights = inner_options.pop("weights", None)
    if not isinstance(inner, str) or inner in WRAPPER_LOSSES:
        raise ConfigError(
            f"loss_options: MatryoshkaLoss wraps a loss named by 'loss' (not {inner!r}), "
            "e.g. {'loss': 'MultipleNegativesRankingLoss', 'dims': [64, 128]}."
        )
    if not isinstance(dims, (list, tuple)) or not dims:
        raise ConfigError(
            "loss_options: MatryoshkaLoss needs 'dims', the embedding sizes to train, "
            f"e.g. {{'dims': [32, 64, 128]}}; got {dims!r}."
        )
    too_large = [d for d in dims if isinstance(d, int) and embedding_size and d > embedding_size]
    if too_large:
        raise ConfigError(
            f"loss_options: MatryoshkaLoss dims {too_large} exceed the model's embedding size "
            f"{embedding_size}; use dims of at most {embedding_size}."
        )
    if inner in CLASSIFICATION_LOSSES:
        raise ConfigError(
            f"loss_options: MatryoshkaLoss cannot wrap {inner}, whose class weights have the "
            "full embedding size; wrap a loss without weights of its own, such as "
            "MultipleNegativesRankingLoss or TripletMarginLoss."
        )
    if weights is not None and not (
        isinstance(weights, (list, tuple))
        and all(is_number(w) and math.isfinite(w) and w >= 0 for w in weights)
    ):
        raise ConfigError(
            f"loss_options: MatryoshkaLoss 'weights' must be a list of finite numbers of at "
            f"least 0, one per dim; got {weights!r}."
        )
    wrapped = build_loss(
        inner, inner_options, num_classes=num_classes, embedding_size=embedding_size
    )
    try:
        return MatryoshkaLoss(wrapped, dims, weights)
    except ValueError as exc:
        raise ConfigError(f"loss_options for MatryoshkaLoss are invalid: {exc}") from exc


def build_miner(name: str, options: Mapping[str, Any]) -> Any:
    from pytorch_metric_learning import miners

    validate_miner_name(name)
    return _instantiate(getattr(miners, name), options, "miner", {})
