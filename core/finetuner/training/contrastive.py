"""In-batch-negative losses: each query scores every document of its batch, and must pick its
own positive (``CLIPLoss``, ``MultipleNegativesRankingLoss`` and their cached forms), and
``MatryoshkaLoss``, which trains an embedding loss on leading slices of the embeddings too.

The cached forms compute exactly the loss of their plain form; what makes them cached is their
``mini_batch_size``, by which the training step embeds the batch in mini-batches and
back-propagates with GradCache (:mod:`.gradcache`): the batch, and so the number of in-batch
negatives, can be larger than what fits in memory at once.

Under ``torchrun``, ``gather_across_devices`` (see :func:`enable_gather`) lets each process
score its own queries against the documents of every process (:mod:`finetuner.distributed`).
With ``W`` processes, ``n_r`` queries on rank ``r`` and ``N = sum n_r``, rank ``r``'s loss is
``(W / N) * sum_{i on r} CE_i``. The gather's backward sums each rank's rows' gradients over
ranks, so rank ``r``'s parameters receive ``d(sum_s L_s)/dθ`` along its own rows, and over
all ranks this adds up to ``d(sum_s L_s)/dθ = W * d(mean_i CE_i)/dθ``; DDP's averaging divides
by ``W``: the gradient of one process on the global batch, even with unequal shards. The mean
of the ranks' losses is the global batch's loss. In one process it is the ordinary mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..distributed.gather import all_gather_rows, world
from ..errors import ConfigError

__all__ = [
    "CLIPLoss",
    "CachedCLIPLoss",
    "CachedMultipleNegativesRankingLoss",
    "MatryoshkaLoss",
    "MultipleNegativesRankingLoss",
    "enable_gather",
]

IN_BATCH_KINDS = ("pairs", "retrieval")


def _check_mini_batch_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"mini_batch_size must be a positive integer, not {value!r}")
    return value


def _shared_columns(
    columns: list[torch.Tensor], gather: bool
) -> tuple[list[torch.Tensor], int, int | None]:
    """*columns* (each one row per local query) as the loss scores them: gathered from every
    rank when *gather* is on and there are several (one all-gather for all columns), with this
    rank's row offset and the global batch size; otherwise as given, offset 0 and ``None``."""
    if not gather or world()[1] == 1:
        return columns, 0, None
    rows, offset = all_gather_rows(torch.cat(columns, dim=1))
    return list(rows.split([c.shape[1] for c in columns], dim=1)), offset, len(rows)


def _cross_entropy(logits: torch.Tensor, offset: int, global_size: int | None) -> torch.Tensor:
    """Cross-entropy of each row of *logits* with target ``offset + row``: the mean, or with a
    *global_size* (gathering), this rank's share ``sum * world_size / global_size``."""
    target = torch.arange(len(logits), device=logits.device) + offset
    if global_size is None:
        return nn.functional.cross_entropy(logits, target)
    total = nn.functional.cross_entropy(logits, target, reduction="sum")
    return total * (world()[1] / global_size)


class CLIPLoss(nn.Module):
    """Symmetric contrastive loss of text-image pairs: each text must pick its own image among
    the batch's images, and each image its own text (cross-entropy both ways, averaged).
    ``temperature`` is the initial softmax temperature; it is learnt (as CLIP's logit scale)
    unless ``learn_temperature=False``. With ``gather_across_devices`` under ``torchrun``, the
    local texts score the images of every process, and the local images their texts."""

    data_kinds = IN_BATCH_KINDS
    gather_across_devices: bool = False

    def __init__(
        self,
        temperature: float = 0.07,
        learn_temperature: bool = True,
        *,
        gather_across_devices: bool = False,
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, not {temperature}")
        scale = torch.tensor(math.log(1.0 / temperature))
        self.logit_scale = nn.Parameter(scale, requires_grad=learn_temperature)
        self.gather_across_devices = bool(gather_across_devices)

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        text = nn.functional.normalize(text, dim=-1)
        image = nn.functional.normalize(image, dim=-1).to(text.dtype)
        (texts, images), offset, size = _shared_columns([text, image], self.gather_across_devices)
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        return 0.5 * (
            _cross_entropy(scale * text @ images.T, offset, size)
            + _cross_entropy(scale * image @ texts.T, offset, size)
        )


class CachedCLIPLoss(CLIPLoss):
    """:class:`CLIPLoss` with GradCache: the step embeds each batch ``mini_batch_size`` items
    at a time, so large batches fit in memory; the loss and its gradients are unchanged."""

    def __init__(
        self,
        mini_batch_size: int = 32,
        temperature: float = 0.07,
        learn_temperature: bool = True,
        *,
        gather_across_devices: bool = False,
    ) -> None:
        super().__init__(
            temperature=temperature,
            learn_temperature=learn_temperature,
            gather_across_devices=gather_across_devices,
        )
        self.mini_batch_size = _check_mini_batch_size(mini_batch_size)


class MultipleNegativesRankingLoss(nn.Module):
    """InfoNCE over in-batch negatives: each query's cosine similarities to every positive of
    the batch and to every explicit negative (the columns after the positive), times ``scale``
    (or divided by ``temperature``), and cross-entropy with its own positive as the target.
    ``symmetric=True`` also lets each positive pick its query among the batch's queries, and
    averages the two directions. With ``gather_across_devices`` under ``torchrun``, the local
    queries score the positives and negatives of every process (and, symmetric, the local
    positives the queries of every process)."""

    data_kinds = IN_BATCH_KINDS
    gather_across_devices: bool = False

    def __init__(
        self,
        scale: float = 20.0,
        temperature: float | None = None,
        symmetric: bool = False,
        *,
        gather_across_devices: bool = False,
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
        self.gather_across_devices = bool(gather_across_devices)

    def forward(
        self, query: torch.Tensor, positive: torch.Tensor, *negatives: torch.Tensor
    ) -> torch.Tensor:
        columns = [c.to(query.dtype) for c in (positive, *negatives)]
        if self.symmetric:
            columns.append(query)
        shared, offset, size = _shared_columns(columns, self.gather_across_devices)
        q = nn.functional.normalize(query, dim=-1)
        docs = nn.functional.normalize(torch.cat(shared[: 1 + len(negatives)]), dim=-1)
        loss = _cross_entropy(self.scale * q @ docs.T, offset, size)
        if not self.symmetric:
            return loss
        # each local positive against the queries of the (global) batch
        queries = nn.functional.normalize(shared[-1], dim=-1)
        backward = self.scale * docs[offset : offset + len(q)] @ queries.T
        return 0.5 * (loss + _cross_entropy(backward, offset, size))


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
        *,
        gather_across_devices: bool = False,
    ) -> None:
        super().__init__(
            scale=scale,
            temperature=temperature,
            symmetric=symmetric,
            gather_across_devices=gather_across_devices,
        )
        self.mini_batch_size = _check_mini_batch_size(mini_batch_size)


class MatryoshkaLoss(nn.Module):
    """``sum_d weights[d] * loss(embeddings[:, :d])`` over ``dims``: the wrapped *loss* on the
    first ``d`` dimensions of every embedding (every 2-D float tensor argument; labels, scores
    and miner tuples pass unchanged), so that truncated embeddings stay useful.

    A wrapped cached loss keeps caching: this loss exposes its ``mini_batch_size``, the step
    caches the full embeddings once and computes this loss on them. ``gather_across_devices``
    is the wrapped loss's: set here, it is set there, and the wrapped loss gathers at each
    size."""

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

    @property
    def gather_across_devices(self) -> bool:
        """Whether the wrapped loss gathers negatives across processes (see
        :func:`enable_gather`); setting it sets the wrapped loss's."""
        return bool(getattr(self.loss, "gather_across_devices", False))

    @gather_across_devices.setter
    def gather_across_devices(self, value: bool) -> None:
        inner = self.loss
        if isinstance(inner, (MatryoshkaLoss, MultipleNegativesRankingLoss, CLIPLoss)):
            inner.gather_across_devices = bool(value)
        elif value:
            raise ConfigError(
                f"gather_across_devices: MatryoshkaLoss wraps {type(inner).__name__}, which has "
                "no in-batch negatives to gather; for a label loss, wrap the MatryoshkaLoss in "
                "finetuner.distributed.gather.GatheredLabelLoss instead."
            )

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


def enable_gather(loss: nn.Module) -> bool:
    """Turn on ``gather_across_devices`` for *loss* (an in-batch-negative loss, or a
    ``MatryoshkaLoss`` wrapping one) and return ``True``; return ``False``, changing nothing,
    for a loss that cannot gather (label losses gather with ``GatheredLabelLoss`` instead).
    It matters only under ``torchrun`` with several processes."""
    if isinstance(loss, MatryoshkaLoss):
        return enable_gather(loss.loss)
    if isinstance(loss, (MultipleNegativesRankingLoss, CLIPLoss)):
        loss.gather_across_devices = True
        return True
    return False
