"""Image backbones: ResNet-50/152 and EfficientNet-B4/B7 as embedding models.

This module holds their registry specs and the pooling that turns a feature map into an
embedding. The networks (:mod:`.resnet`, :mod:`.efficientnet`) are written in finetuner rather
than imported from torchvision (which cannot be installed beside the pinned torch), with
``state_dict()`` keys and shapes identical to torchvision's ``resnet50``, ``resnet152``,
``efficientnet_b4`` and ``efficientnet_b7``: a torchvision weight file loads into them with
``strict=True`` (:mod:`.weights`).

Pretrained weights are never downloaded. ``pretrained=True`` (the default) looks for
torchvision's weight file under its own name in ``$FINETUNER_WEIGHTS_DIR``, then in torch's hub
cache (``torch.hub.get_dir()/checkpoints``, where torchvision keeps what it downloads);
``weights='/path/file.pth'`` names a file (a ``.pth`` state dict or ``.safetensors``);
``pretrained=False`` starts from random weights.

Default image sizes are those the pretrained weights were trained at: 224 for ResNet, 380 for
EfficientNet-B4 and 600 for EfficientNet-B7 (``image_size`` trades accuracy for speed).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import ConfigError, close_matches_hint
from ..images import ImagePreprocessor
from ..spec import ModelSpec, Preprocessor
from .common import EmbeddingHead, check_freeze, check_options, check_output_dim
from .efficientnet import EfficientNet, efficientnet_b4, efficientnet_b7
from .resnet import ResNet, resnet50, resnet152
from .weights import WEIGHTS_DIR_ENV, find_pretrained_weights, load_weights, weight_dirs

__all__ = [
    "PRETRAINED_FILES",
    "SPECS",
    "WEIGHTS_DIR_ENV",
    "EfficientNet",
    "GeneralizedMeanPooling",
    "GlobalPooling",
    "ImageEmbedder",
    "ResNet",
    "efficientnet_b4",
    "efficientnet_b7",
    "find_pretrained_weights",
    "load_weights",
    "make_pooling",
    "resnet50",
    "resnet152",
    "weight_dirs",
]

POOLINGS = ("avg", "max", "GeM")
_MIN_IMAGE_SIZE = 32  # the networks downsample by 32


# --------------------------------------------------------------------------------------------
# The embedding body: a network's feature map, pooled


class GeneralizedMeanPooling(nn.Module):
    """GeM pooling: ``mean(x ** p) ** (1/p)`` over the spatial positions, with a learnable *p*
    (1 is average pooling, large values approach max pooling)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1)).pow(1.0 / self.p)


class GlobalPooling(nn.Module):
    """Average or max pooling of a feature map into one vector per image."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = F.adaptive_avg_pool2d if self.mode == "avg" else F.adaptive_max_pool2d
        return torch.flatten(pool(x, 1), 1)


def make_pooling(pooling: str) -> nn.Module:
    return GeneralizedMeanPooling() if pooling == "GeM" else GlobalPooling(pooling)


class ImageEmbedder(nn.Module):
    """A network without its classifier, pooling its last feature map into an embedding."""

    def __init__(self, network: ResNet | EfficientNet, pooling: nn.Module) -> None:
        super().__init__()
        network.drop_classifier()
        self.network = network
        self.pooling = pooling

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pooling(self.network.feature_map(images))


# --------------------------------------------------------------------------------------------
# Registry specs


@dataclass(frozen=True)
class _Variant:
    name: str
    architecture: str
    torchvision_name: str
    make: Callable[[], ResNet | EfficientNet]
    features: int
    image_size: int
    weights_file: str
    description: str


_OPTIONS = ("freeze", "image_size", "normalize", "output_dim", "pooling", "pretrained", "weights")


def _check_bool(options: Mapping[str, Any], name: str) -> None:
    if not isinstance(options[name], bool):
        raise ConfigError(f"model_options: {name} must be true or false, not {options[name]!r}.")


def _resolver(
    variant: _Variant,
) -> Callable[[Mapping[str, Any], tuple[int, ...] | None], dict[str, Any]]:
    def resolve(options: Mapping[str, Any], input_shape: tuple[int, ...] | None) -> dict[str, Any]:
        check_options(variant.name, options, _OPTIONS)
        resolved: dict[str, Any] = {
            "pretrained": True,
            "weights": None,
            "pooling": "avg",
            "output_dim": None,
            "freeze": False,
            "normalize": False,
            "image_size": variant.image_size,
        }
        resolved.update(options)
        for name in ("pretrained", "freeze", "normalize"):
            _check_bool(resolved, name)
        resolved["output_dim"] = check_output_dim(resolved["output_dim"])
        check_freeze(resolved["freeze"], resolved["output_dim"])
        pooling = resolved["pooling"]
        by_lower = {p.lower(): p for p in POOLINGS}
        if not isinstance(pooling, str) or pooling.lower() not in by_lower:
            hint = close_matches_hint(pooling, POOLINGS) if isinstance(pooling, str) else ""
            raise ConfigError(
                f"model_options: pooling {pooling!r} is not one of {', '.join(POOLINGS)}.{hint}"
            )
        resolved["pooling"] = by_lower[pooling.lower()]
        size = resolved["image_size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < _MIN_IMAGE_SIZE:
            raise ConfigError(
                f"model_options: image_size must be an integer of at least {_MIN_IMAGE_SIZE} "
                f"(pixels per side), not {size!r}."
            )
        weights = resolved["weights"]
        if weights is not None:
            if not isinstance(weights, (str, os.PathLike)):
                raise ConfigError(
                    f"model_options: weights must be the path of a weight file, not {weights!r}."
                )
            if not resolved["pretrained"]:
                raise ConfigError(
                    "model_options: weights and pretrained=False contradict each other; drop "
                    "weights to start from random weights, or pretrained=False to load them."
                )
            resolved["weights"] = os.fspath(Path(weights).expanduser())
        return resolved

    return resolve


def _builder(variant: _Variant) -> Callable[[Mapping[str, Any]], nn.Module]:
    def build(options: Mapping[str, Any]) -> nn.Module:
        weights = options.get("weights")
        if options.get("pretrained", True) and weights is None:
            weights = find_pretrained_weights(variant.name, variant.weights_file)
        network = variant.make()
        if weights is not None:
            load_weights(
                network, weights, f"'{variant.name}' (torchvision's {variant.torchvision_name})"
            )
        return EmbeddingHead(
            ImageEmbedder(network, make_pooling(options.get("pooling", "avg"))),
            variant.features,
            output_dim=options.get("output_dim"),
            freeze=bool(options.get("freeze", False)),
            normalize=bool(options.get("normalize", False)),
        )

    return build


def _preprocessor(
    options: Mapping[str, Any], tower: str | None, files: Mapping[str, bytes] | None
) -> Preprocessor:
    return ImagePreprocessor(height=options["image_size"], width=options["image_size"])


def _spec(variant: _Variant) -> ModelSpec:
    return ModelSpec(
        name=variant.name,
        task="image-to-image",
        description=variant.description,
        build=_builder(variant),
        resolve_options=_resolver(variant),
        output_dim=lambda options: options.get("output_dim") or variant.features,
        architecture=variant.architecture,
        modality="image",
        preprocessor=_preprocessor,
        for_rebuild=lambda options: {**options, "pretrained": False, "weights": None},
    )


_VARIANTS = (
    _Variant(
        "resnet-base",
        "ResNet-50",
        "resnet50",
        resnet50,
        2048,
        224,
        "resnet50-11ad3fa6.pth",
        "ResNet-50 image embeddings (2048-d, 224 px, torchvision ImageNet weights)",
    ),
    _Variant(
        "resnet-large",
        "ResNet-152",
        "resnet152",
        resnet152,
        2048,
        224,
        "resnet152-f82ba261.pth",
        "ResNet-152 image embeddings (2048-d, 224 px, torchvision ImageNet weights)",
    ),
    _Variant(
        "efficientnet-base",
        "EfficientNet-B4",
        "efficientnet_b4",
        efficientnet_b4,
        1792,
        380,
        "efficientnet_b4_rwightman-23ab8bcd.pth",
        "EfficientNet-B4 image embeddings (1792-d, 380 px, torchvision ImageNet weights)",
    ),
    _Variant(
        "efficientnet-large",
        "EfficientNet-B7",
        "efficientnet_b7",
        efficientnet_b7,
        2560,
        600,
        "efficientnet_b7_lukemelas-c5b4e57e.pth",
        "EfficientNet-B7 image embeddings (2560-d, 600 px, torchvision ImageNet weights)",
    ),
)

SPECS: dict[str, ModelSpec] = {variant.name: _spec(variant) for variant in _VARIANTS}
"""The image backbones by registry name."""

PRETRAINED_FILES: dict[str, str] = {v.name: v.weights_file for v in _VARIANTS}
"""The torchvision weight file each backbone loads when ``pretrained=True``."""
