"""The built-in ``mlp`` backbone: a multi-layer perceptron for tensor inputs, and its spec."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, close_matches_hint
from .lora import refuse_lora
from .spec import ModelSpec

__all__ = ["MLP", "MLP_SPEC"]


class MLP(nn.Module):
    """A multi-layer perceptron embedding model for flat (or flattened) tensor inputs."""

    def __init__(
        self,
        input_size: int,
        hidden_sizes: tuple[int, ...] | list[int] = (128, 64),
        activation: str = "relu",
        bias: bool = True,
        l2: bool = False,
    ) -> None:
        super().__init__()
        acts: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
        layers: list[nn.Module] = [nn.Flatten()]
        size = input_size
        sizes = list(hidden_sizes)
        for i, out in enumerate(sizes):
            layers.append(nn.Linear(size, out, bias=bias))
            if i < len(sizes) - 1:
                layers.append(acts[activation]())
            size = out
        self.net = nn.Sequential(*layers)
        self.l2 = l2
        self.output_dim = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return nn.functional.normalize(out, dim=-1) if self.l2 else out


_MLP_OPTIONS = {"input_size", "hidden_sizes", "activation", "bias", "l2"}


def _mlp_resolve(options: Mapping[str, Any], input_shape: tuple[int, ...] | None) -> dict[str, Any]:
    unknown = set(options) - _MLP_OPTIONS
    if "lora" in unknown:
        refuse_lora("mlp")
    if unknown:
        name = sorted(unknown)[0]
        raise ConfigError(
            f"model_options: 'mlp' has no option '{name}'; its options are "
            f"{', '.join(sorted(_MLP_OPTIONS))}.{close_matches_hint(name, _MLP_OPTIONS)}"
        )
    resolved: dict[str, Any] = {
        "hidden_sizes": [128, 64],
        "activation": "relu",
        "bias": True,
        "l2": False,
    }
    resolved.update(options)
    if "input_size" not in resolved:
        if input_shape is None:
            raise ConfigError("model_options: 'mlp' needs 'input_size' when there is no data.")
        size = 1
        for dim in input_shape:
            size *= int(dim)
        resolved["input_size"] = size
    if not isinstance(resolved["input_size"], int) or resolved["input_size"] < 1:
        raise ConfigError("model_options: 'input_size' must be a positive integer.")
    sizes = resolved["hidden_sizes"]
    if not isinstance(sizes, (list, tuple)) or not all(isinstance(s, int) and s > 0 for s in sizes):
        raise ConfigError("model_options: 'hidden_sizes' must be a list of positive integers.")
    resolved["hidden_sizes"] = list(sizes)
    if resolved["activation"] not in ("relu", "gelu", "tanh"):
        raise ConfigError(
            f"model_options: activation '{resolved['activation']}' is not one of relu, gelu, tanh."
        )
    if input_shape is not None:
        flat = 1
        for dim in input_shape:
            flat *= int(dim)
        if flat != resolved["input_size"]:
            raise ConfigError(
                f"model_options: input_size={resolved['input_size']} but the data's items have "
                f"shape {tuple(input_shape)} ({flat} values); drop input_size to infer it."
            )
    return resolved


MLP_SPEC = ModelSpec(
    name="mlp",
    task="any",
    description="Multi-layer perceptron for tensor inputs (flattened); options "
    "input_size (inferred), hidden_sizes, activation, bias, l2",
    build=lambda options: MLP(**options),
    resolve_options=_mlp_resolve,
    output_dim=lambda options: (options.get("hidden_sizes") or [options.get("input_size")])[-1],
    architecture="MLP",
)
"""The registry entry ``mlp``."""
