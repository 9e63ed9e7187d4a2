"""Image backbones: ResNet-50/152 and EfficientNet-B4/B7 as embedding models.

The networks are written here rather than imported from torchvision (which cannot be installed
beside the pinned torch), with ``state_dict()`` keys and shapes identical to torchvision's
``resnet50``, ``resnet152``, ``efficientnet_b4`` and ``efficientnet_b7``: a torchvision weight
file loads into them with ``strict=True``.

Pretrained weights are never downloaded. ``pretrained=True`` (the default) looks for
torchvision's weight file under its own name in ``$FINETUNER_WEIGHTS_DIR``, then in torch's hub
cache (``torch.hub.get_dir()/checkpoints``, where torchvision keeps what it downloads);
``weights='/path/file.pth'`` names a file (a ``.pth`` state dict or ``.safetensors``);
``pretrained=False`` starts from random weights.

Default image sizes are those the pretrained weights were trained at: 224 for ResNet, 380 for
EfficientNet-B4 and 600 for EfficientNet-B7 (``image_size`` trades accuracy for speed).
"""

from __future__ import annotations

import math
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

__all__ = [
    "PRETRAINED_FILES",
    "SPECS",
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

WEIGHTS_DIR_ENV = "FINETUNER_WEIGHTS_DIR"
POOLINGS = ("avg", "max", "GeM")
_MIN_IMAGE_SIZE = 32  # the networks downsample by 32


# --------------------------------------------------------------------------------------------
# ResNet (torchvision's "V1.5": the stride of a downsampling block sits on its 3x3 convolution)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    """A bottleneck ResNet; ``blocks`` per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50."""

    def __init__(self, blocks: tuple[int, int, int, int], num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = 64
        stages = []
        for index, (count, width) in enumerate(zip(blocks, (64, 128, 256, 512))):
            stride = 1 if index == 0 else 2
            stage = []
            for block in range(count):
                stage.append(Bottleneck(channels, width, stride if block == 0 else 1))
                channels = width * Bottleneck.expansion
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc: nn.Module = nn.Linear(channels, num_classes)
        self.num_features = channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.feature_map(x)), 1))

    def drop_classifier(self) -> None:
        """Replace the ImageNet classifier by the identity: ``forward`` then gives features."""
        self.fc = nn.Identity()


def resnet50() -> ResNet:
    return ResNet((3, 4, 6, 3))


def resnet152() -> ResNet:
    return ResNet((3, 8, 36, 3))


# --------------------------------------------------------------------------------------------
# EfficientNet (B0 stages scaled in width and depth; MBConv blocks with squeeze-excitation)


@dataclass(frozen=True)
class _Stage:
    expand_ratio: int
    kernel: int
    stride: int
    in_channels: int
    out_channels: int
    layers: int


_B0_STAGES = (
    _Stage(1, 3, 1, 32, 16, 1),
    _Stage(6, 3, 2, 16, 24, 2),
    _Stage(6, 5, 2, 24, 40, 2),
    _Stage(6, 3, 2, 40, 80, 3),
    _Stage(6, 5, 1, 80, 112, 3),
    _Stage(6, 5, 2, 112, 192, 4),
    _Stage(6, 3, 1, 192, 320, 1),
)


def _round_channels(channels: float, divisor: int = 8) -> int:
    """The nearest multiple of *divisor*, never more than 10% below *channels* (the rounding of
    the EfficientNet paper, which the weight shapes follow)."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


def _conv_norm_act(
    in_channels: int,
    out_channels: int,
    kernel: int,
    norm: Callable[[int], nn.Module],
    *,
    stride: int = 1,
    groups: int = 1,
    activation: bool = True,
) -> nn.Sequential:
    layers = [
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel,
            stride=stride,
            padding=(kernel - 1) // 2,
            groups=groups,
            bias=False,
        ),
        norm(out_channels),
    ]
    if activation:
        layers.append(nn.SiLU(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.activation = nn.SiLU(inplace=True)
        self.scale_activation = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(self.activation(self.fc1(self.avgpool(x))))
        return x * self.scale_activation(scale)


class StochasticDepth(nn.Module):
    """While training, drops a block's residual branch for a random *p* share of the samples
    (scaling the rest by ``1/(1-p)``); the identity in eval mode."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty([x.shape[0]] + [1] * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep) if keep > 0.0 else x * mask


class MBConv(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand_ratio: int,
        kernel: int,
        stride: int,
        drop_probability: float,
        norm: Callable[[int], nn.Module],
    ) -> None:
        super().__init__()
        self.use_residual = stride == 1 and in_channels == out_channels
        expanded = _round_channels(in_channels * expand_ratio)
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(_conv_norm_act(in_channels, expanded, 1, norm))
        layers.append(
            _conv_norm_act(expanded, expanded, kernel, norm, stride=stride, groups=expanded)
        )
        layers.append(SqueezeExcitation(expanded, max(1, in_channels // 4)))
        layers.append(_conv_norm_act(expanded, out_channels, 1, norm, activation=False))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(drop_probability)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_residual:
            out = self.stochastic_depth(out) + x
        return out


class EfficientNet(nn.Module):
    """EfficientNet-B*: the B0 stages with channels scaled by *width* and blocks by *depth*."""

    def __init__(
        self,
        width: float,
        depth: float,
        *,
        dropout: float,
        batch_norm_eps: float = 1e-5,
        batch_norm_momentum: float = 0.1,
        stochastic_depth: float = 0.2,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()

        def norm(channels: int) -> nn.Module:
            return nn.BatchNorm2d(channels, eps=batch_norm_eps, momentum=batch_norm_momentum)

        stages = [
            _Stage(
                s.expand_ratio,
                s.kernel,
                s.stride,
                _round_channels(s.in_channels * width),
                _round_channels(s.out_channels * width),
                math.ceil(s.layers * depth),
            )
            for s in _B0_STAGES
        ]
        total_blocks = sum(s.layers for s in stages)
        features: list[nn.Module] = [_conv_norm_act(3, stages[0].in_channels, 3, norm, stride=2)]
        block_index = 0
        for stage in stages:
            blocks = []
            for i in range(stage.layers):
                blocks.append(
                    MBConv(
                        stage.in_channels if i == 0 else stage.out_channels,
                        stage.out_channels,
                        stage.expand_ratio,
                        stage.kernel,
                        stage.stride if i == 0 else 1,
                        stochastic_depth * block_index / total_blocks,
                        norm,
                    )
                )
                block_index += 1
            features.append(nn.Sequential(*blocks))
        self.num_features = 4 * stages[-1].out_channels
        features.append(_conv_norm_act(stages[-1].out_channels, self.num_features, 1, norm))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier: nn.Module = nn.Sequential(
            nn.Dropout(p=dropout, inplace=True), nn.Linear(self.num_features, num_classes)
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.out_features)
                nn.init.uniform_(module.weight, -bound, bound)
                nn.init.zeros_(module.bias)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.feature_map(x)), 1))

    def drop_classifier(self) -> None:
        """Replace the ImageNet classifier by the identity: ``forward`` then gives features."""
        self.classifier = nn.Identity()


def efficientnet_b4() -> EfficientNet:
    return EfficientNet(1.4, 1.8, dropout=0.4)


def efficientnet_b7() -> EfficientNet:
    # B5-B7 weights were trained with TensorFlow's batch-norm settings.
    return EfficientNet(2.0, 3.1, dropout=0.5, batch_norm_eps=1e-3, batch_norm_momentum=0.01)


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
# Weight files


def _read_state_dict(path: Path, model: str) -> Mapping[str, Any]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(
            f"cannot read the weights of {model} from {path}: {type(exc).__name__}: {exc}. "
            "Give a torchvision state dict saved with torch.save (.pth) or a .safetensors file."
        ) from exc
    if isinstance(loaded, Mapping):
        for key in ("state_dict", "model"):  # checkpoints that wrap the state dict
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise ConfigError(
            f"{path} holds no state dict of tensors (it holds a {type(loaded).__name__}); "
            f"{model} needs a state dict of that architecture."
        )
    return loaded


def _listed(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(f"'{k}'" for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_weights(network: nn.Module, path: str | os.PathLike[str], model: str) -> None:
    """Load a torchvision weight file into *network*, refusing one whose keys or shapes differ
    (naming a few of them); *model* names the network in messages."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"model_options: the weights file of {model} does not exist: {path}. Give the "
            "path of a torchvision weight file (.pth or .safetensors)."
        )
    state = _read_state_dict(path, model)
    expected = network.state_dict()
    # Old torchvision files lack the batch-norm counters; load_state_dict fills them in.
    missing = [k for k in expected if k not in state and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"'{k}' {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong_shape:
        problems = []
        if missing:
            problems.append(f"missing keys {_listed(missing)}")
        if unexpected:
            problems.append(f"unexpected keys {_listed(unexpected)}")
        if wrong_shape:
            problems.append(
                "wrong shapes "
                + ", ".join(wrong_shape[:3])
                + (f" and {len(wrong_shape) - 3} more" if len(wrong_shape) > 3 else "")
            )
        raise ConfigError(
            f"the weights in {path} do not fit {model} ({'; '.join(problems)}). Give the "
            f"torchvision weight file of the same architecture, or pretrained=False."
        )
    network.load_state_dict(state, strict=True)


def weight_dirs() -> list[Path]:
    """Where pretrained weight files are looked for, in order."""
    dirs = []
    if os.environ.get(WEIGHTS_DIR_ENV):
        dirs.append(Path(os.environ[WEIGHTS_DIR_ENV]).expanduser())
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return dirs


def find_pretrained_weights(model: str, file_name: str) -> Path:
    """The path of torchvision's weight file *file_name*, or a ConfigError saying where it was
    looked for and how to go on."""
    dirs = weight_dirs()
    for directory in dirs:
        candidate = directory / file_name
        if candidate.is_file():
            return candidate
    looked = " and ".join(str(d) for d in dirs)
    raise ConfigError(
        f"the pretrained weights of '{model}' are not on this machine: looked for {file_name} "
        f"in {looked}; weights are never downloaded. Put torchvision's file {file_name} in "
        f"${WEIGHTS_DIR_ENV} or the torch hub cache (or pass model_options={{'weights': "
        f"'/path/{file_name}'}}), or train from random initial weights with "
        "model_options={'pretrained': False}."
    )


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
