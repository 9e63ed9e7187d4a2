"""EfficientNet as torchvision builds it: the B0 stages scaled in width and depth, MBConv blocks
with squeeze-excitation, and torchvision's ``state_dict()`` keys and shapes, so its weight files
load."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "EfficientNet",
    "MBConv",
    "SqueezeExcitation",
    "StochasticDepth",
    "efficientnet_b4",
    "efficientnet_b7",
]


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


def _scaled_stages(width: float, depth: float) -> list[_Stage]:
    """The B0 stages with channels scaled by *width* and layers by *depth*."""
    return [
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


def _initialise(network: nn.Module) -> None:
    """Torchvision's initial weights for EfficientNet (what ``pretrained=False`` starts from)."""
    for module in network.modules():
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

        stages = _scaled_stages(width, depth)
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
        _initialise(self)

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
