"""Rows of every process of a ``torchrun`` run gathered into one batch, with gradients.

Each process (rank) embeds its own shard of a global batch. :func:`all_gather_rows` joins the
shards in rank order, and its backward hands each rank the *sum* over all ranks of the
gradients that flowed into that rank's rows: a loss of rank ``r`` that uses rank ``s``'s rows
trains rank ``s``'s model copy. :func:`all_gather_labels` joins integer labels without
gradients. :class:`GatheredLabelLoss` computes a label loss (and its mining) on the global batch.

In a single process, or before ``torch.distributed`` is initialised, everything here is the
identity and communicates nothing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["GatheredLabelLoss", "all_gather_labels", "all_gather_rows", "world"]


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` without an initialised process
    group (or a torch built without ``torch.distributed``)."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def _row_counts(tensor: torch.Tensor) -> list[int]:
    """The number of rows of *tensor* on every rank, in rank order."""
    import torch.distributed as dist

    _, size = world()
    mine = torch.tensor([len(tensor)], dtype=torch.long, device=tensor.device)
    counts = [torch.zeros_like(mine) for _ in range(size)]
    dist.all_gather(counts, mine)
    return [int(c.item()) for c in counts]


def _padded(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """*tensor* with zero rows appended up to *rows* rows, contiguous (as collectives want)."""
    missing = rows - len(tensor)
    if missing > 0:
        tensor = torch.cat([tensor, tensor.new_zeros((missing, *tensor.shape[1:]))])
    return tensor.contiguous()


class _GatherRows(torch.autograd.Function):
    """All-gather of equally sized blocks, concatenated in rank order. Its backward sums the
    gradient of the whole result over ranks (one all-reduce, which every backend has, gloo
    included) and keeps this rank's block: the sum of every rank's gradient of these rows."""

    @staticmethod
    def forward(ctx: Any, block: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        parts = [torch.empty_like(block) for _ in range(world()[1])]
        dist.all_gather(parts, block)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        rank, size = world()
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        rows = len(grad) // size
        return grad[rank * rows : (rank + 1) * rows]


def all_gather_rows(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The rows of *tensor* from every rank concatenated in rank order, and the offset of this
    rank's rows in them.

    Ranks may hold different numbers of rows (the last batch of an epoch): the counts are
    gathered first, every rank pads to the largest, and the padding is cut after the gather.
    The result is differentiable; the gradient of this rank's rows is the sum over all ranks
    of the gradients flowing into their slice. With one process: ``(tensor, 0)``.
    """
    rank, size = world()
    if size == 1:
        return tensor, 0
    counts = _row_counts(tensor)
    largest = max(counts)
    gathered = _GatherRows.apply(_padded(tensor, largest))
    rows = torch.cat([gathered[r * largest : r * largest + n] for r, n in enumerate(counts)])
    return rows, sum(counts[:rank])


def all_gather_labels(labels: torch.Tensor) -> torch.Tensor:
    """The *labels* (or any tensor that needs no gradient) of every rank, concatenated in rank
    order; ranks may hold different numbers. With one process: *labels*, detached."""
    return all_gather_rows(labels.detach())[0]


class GatheredLabelLoss(nn.Module):
    """A label loss (a pytorch-metric-learning loss such as ``SupConLoss``, with an optional
    *miner*) computed on the global batch: the embeddings (with gradients) and the labels of
    every rank are gathered, the miner mines on the gathered set, and every rank returns the
    same loss, that of the global batch.

    Gradients: every rank back-propagates its copy of the global loss ``L`` through the
    gather, whose backward sums over ranks, so rank ``r``'s embeddings receive
    ``world_size * dL/de_r``; DDP's averaging of the parameter gradients divides by
    ``world_size``, which leaves ``dL/dθ``, the gradient of one process on the global batch.
    The loss's own parameters (class proxies) get ``dL/dw`` on every rank: averaged, unchanged.
    """

    def __init__(self, loss: nn.Module, miner: Any = None) -> None:
        super().__init__()
        self.loss = loss
        self.miner = miner

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of the global batch of *embeddings* and their *labels*."""
        embeddings, _ = all_gather_rows(embeddings)
        labels = all_gather_labels(labels)
        if self.miner is None:
            return self.loss(embeddings, labels)
        return self.loss(embeddings, labels, self.miner(embeddings, labels))
