"""What every registry backbone shares: option checking, the projection head and freezing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError, close_matches_hint
from ..lora import refuse_lora

__all__ = [
    "EmbeddingHead",
    "check_freeze",
    "check_options",
    "check_output_dim",
    "freeze_parameters",
]


def check_options(model: str, options: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse an option *model* does not have, listing the ones it has."""
    known = sorted(allowed)
    if "lora" in options and "lora" not in known:
        refuse_lora(model)
    for name in options:
        if name not in known:
            raise ConfigError(
                f"model_options: '{model}' has no option '{name}'; its options are "
                f"{', '.join(known)}.{close_matches_hint(name, known)}"
            )


def check_output_dim(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"model_options: output_dim must be a positive integer or null, not {value!r}."
        )
    return value


def check_freeze(freeze: bool, output_dim: int | None) -> None:
    """Refuse ``freeze=True`` without an ``output_dim``: nothing would be left to train."""
    if freeze and not output_dim:
        raise ConfigError(
            "model_options: freeze=True freezes the backbone and leaves nothing to "
            "train; add output_dim=N for a trainable projection head, or drop freeze."
        )


def freeze_parameters(module: nn.Module) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(False)


class EmbeddingHead(nn.Module):
    """A feature extractor followed by an optional linear projection (``output_dim``) and an
    optional L2 normalisation.

    ``freeze=True`` freezes the feature extractor so only the projection trains; it needs an
    ``output_dim``, or nothing would be left to train.
    """

    def __init__(
        self,
        body: nn.Module,
        features: int,
        *,
        output_dim: int | None = None,
        freeze: bool = False,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        self.body = body
        self.projection = nn.Linear(features, output_dim) if output_dim else None
        self.normalize = normalize
        self.output_dim = output_dim or features
        check_freeze(freeze, output_dim)
        if freeze:
            freeze_parameters(self.body)

    def forward(self, batch: Any) -> torch.Tensor:
        out = self.body(batch)
        if self.projection is not None:
            out = self.projection(out)
        return nn.functional.normalize(out, dim=-1) if self.normalize else out
