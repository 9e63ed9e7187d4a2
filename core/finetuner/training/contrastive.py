"""In-batch-negative losses: each query scores every document of its batch, and must pick its
own positive (``CLIPLoss``, ``MultipleNegativesRankingLoss`` and their cached forms), and
``MatryoshkaLoss``, which trains an embedding loss on leading slices of the embeddings too.

The cached forms compute exactly the loss of their plain form; what makes them cached is their
``mini_batch_size``, by which the training step embeds the batch in mini-batches and
back-propagates with GradCache (:mod:`.gradcache`): the batch, and so the number of in-batch
negatives, can be larger than what fits in memory at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "CLIPLoss",
    "CachedCLIPLoss",
    "CachedMultipleNegativesRankingLoss",
    "MatryoshkaLoss",
    "MultipleNegativesRankingLoss",
]

IN_BATCH_KINDS = ("pairs", "retrieval")


def _check_mini_batch_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"mini_batch_size must be a positive integer, not {value!r}")
    return value


class CLIPLoss(nn.Module):
    """Symmetric contrastive loss of text-image pairs: each text must pick its own image among
    the batch's images, and each image its own text (cross-entropy both ways, averaged).
    ``temperature`` is the initial softmax temperature; it is learnt (as CLIP's logit scale)
    unless ``learn_temperature=False``."""

    data_kinds = IN_BATCH_KINDS

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
        logits = scale * text @ image.to(text.dtype).T
        target = torch.arange(len(text), device=text.device)
        return 0.5 * (
            nn.functional.cross_entropy(logits, target)
            + nn.functional.cross_entropy(logits.T, target)
        )


class CachedCLIPLoss(CLIPLoss):
    """:class:`CLIPLoss` with GradCache: the step embeds each batch ``mini_batch_size`` items
    at a time, so large batches fit in memory; the loss and its gradients are unchanged."""

    def __init__(
        self, mini_batch_size: int = 32, temperature: float = 0.07, learn_temperature: bool = True
    ) -> None:
        super().__init__(temperature=temperature, learn_temperature=learn_temperature)
        self.mini_batch_size = _check_mini_batch_size(mini_batch_size)


class MultipleNegativesRankingLoss(nn.Module):
    """InfoNCE over in-batch negatives: each query's cosine similarities to every positive of
    the batch and to every explicit negative (the columns after the positive), times ``scale``
    (or divided by ``temperature``), and cross-entropy with its own positive as the target.
    ``symmetric=True`` also lets each positive pick its query among the batch's queries, and
    averages the two directions."""

    data_kinds = IN_BATCH_KINDS

    def __init__(
        self, scale: float = 20.0, temperature: float | None = None, symmetric: bool = False
    ) -> None:
        super().__init__()
        if temperature is not None:
            if scale != 20.0:
                raise ValueError("give scale or temperature, not both (scale = 1 / temperature)")
            if not temperature > 0:
                raise ValueError(f"temperature must be positive, not {temperature}")
            scale = 1.0 / temperature
        if not scale > 0:
            raise ValueError(f"scale must be positive, not {scale}")
        self.scale, self.symmetric = float(scale), bool(symmetric)

    def forward(
        self, query: torch.Tensor, positive: torch.Tensor, *negatives: torch.Tensor
    ) -> torch.Tensor:
        q = nn.functional.normalize(query, dim=-1)
        docs = nn.functional.normalize(torch.cat([positive, *negatives]).to(q.dtype), dim=-1)
        logits = self.scale * q @ docs.T
        target = torch.arange(len(q), device=q.device)
        loss = nn.functional.cross_entropy(logits, target)
        if not self.symmetric:
            return loss
        backward = logits[:, : len(q)].T  # each positive against the batch's queries
        return 0.5 * (loss + nn.functional.cross_entropy(backward, target))


class CachedMultipleNegativesRankingLoss(MultipleNegativesRankingLoss):
    """:class:`MultipleNegativesRankingLoss` with GradCache: the step embeds each batch
    ``mini_batch_size`` items at a time, so large batches (many in-batch negatives) fit in
    memory; the loss and its gradients are unchanged."""

    def __init__(
        self,
        mini_batch_size: int = 32,
        scale: float = 20.0,
        temperature: float | None = None,
        symmetric: bool = False,
    ) -> None:
        super().__init__(scale=scale, temperature=temperature, symmetric=symmetric)
        self.mini_batch_size = _check_mini_batch_size(mini_batch_size)


class MatryoshkaLoss(nn.Module):
    """``sum_d weights[d] * loss(embeddings[:, :d])`` over ``dims``: the wrapped *loss* on the
    first ``d`` dimensions of every embedding (every 2-D float tensor argument; labels, scores
    and miner tuples pass unchanged), so that truncated embeddings stay useful.

    A wrapped cached loss keeps caching: this loss exposes its ``mini_batch_size``, the step
    caches the full embeddings once and computes this loss on them."""

    def __init__(
        self, loss: nn.Module, dims: Sequence[int], weights: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        dims = list(dims)
        if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
            raise ValueError(f"dims must be a non-empty list of positive integers, not {dims}")
        weights = [1.0] * len(dims) if weights is None else [float(w) for w in weights]
        if len(weights) != len(dims):
            raise ValueError(f"{len(weights)} weights for {len(dims)} dims; give one per dim")
        pairs = sorted(zip(dims, weights))
        self.dims = [d for d, _ in pairs]
        self.weights = [w for _, w in pairs]
        self.loss = loss
        self.data_kinds = getattr(loss, "data_kinds", None)
        mini_batch_size = getattr(loss, "mini_batch_size", None)
        if mini_batch_size is not None:
            self.mini_batch_size = mini_batch_size

    def forward(self, *args: Any) -> torch.Tensor:
        total: torch.Tensor | None = None
        for dim, weight in zip(self.dims, self.weights):
            cut = [_truncate(a, dim) for a in args]
            term = weight * self.loss(*cut)
            total = term if total is None else total + term
        assert total is not None
        return total


def _truncate(value: Any, dim: int) -> Any:
    if isinstance(value, torch.Tensor) and value.ndim == 2 and value.is_floating_point():
        return value[:, :dim]
    return value
