"""The cases of ``tests/test_distributed_gather.py``.

Each case builds its data and modules from fixed seeds (float64) and trains on rows of one
global batch of ``sum(SHARDS)`` rows: under ``torchrun`` rank ``r`` takes shard ``r`` (5 and 3
rows: unequal on purpose) with its modules wrapped in DDP; in one process (``rank=None``) it
takes the whole batch. Each returns the loss averaged over ranks, this rank's own loss, the
parameter gradients (averaged over ranks by DDP) and, for leaf embeddings, their gradients.

Run by ``torchrun`` with a folder as its argument, it runs every case and rank ``r`` writes
``r.json`` there.
"""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from finetuner.distributed.gather import (
    GatheredLabelLoss,
    all_gather_labels,
    all_gather_rows,
    world,
)
from finetuner.training.contrastive import (
    CachedMultipleNegativesRankingLoss,
    CLIPLoss,
    MatryoshkaLoss,
    MultipleNegativesRankingLoss,
    enable_gather,
)

SHARDS = (5, 3)
GLOBAL = sum(SHARDS)
LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])


def rows_of(rank: int | None) -> slice:
    """The rows of the global batch that *rank* trains on; all of them for ``None``."""
    if rank is None:
        return slice(0, GLOBAL)
    start = sum(SHARDS[:rank])
    return slice(start, start + SHARDS[rank])


def _inputs(seed: int, columns: int, width: int = 6) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(columns, GLOBAL, width, generator=generator, dtype=torch.float64)


def _linear(seed: int, width: int = 6) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(width, 4).double()


def _mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    value = value.detach().clone()
    if world()[1] > 1:
        dist.all_reduce(value)
        value /= world()[1]
    return value


def _train(
    modules: list[nn.Module],
    loss_of: Callable[[list[nn.Module], slice], torch.Tensor],
    rank: int | None,
    loss_module: nn.Module | None = None,
) -> dict[str, Any]:
    """Back-propagate ``loss_of(modules, rows)``, DDP-wrapped under ``torchrun``; the loss
    module's own parameters (CLIP's logit scale) are averaged over ranks by hand."""
    if rank is not None:
        from torch.nn.parallel import DistributedDataParallel

        modules = [DistributedDataParallel(m) for m in modules]
    loss = loss_of(modules, rows_of(rank))
    loss.backward()
    params = [p for m in modules for p in m.parameters()]
    if loss_module is not None:
        params += [p for p in loss_module.parameters() if p.requires_grad]
    grads = [_mean_over_ranks(p.grad).flatten() for p in params if p.grad is not None]
    return {
        "loss": _mean_over_ranks(loss).item(),
        "own_loss": loss.item(),
        "grads": torch.cat(grads).tolist(),
    }


def mnrl(rank: int | None, *, negatives: int, symmetric: bool, gather: bool) -> dict[str, Any]:
    """One Linear embeds queries, positives and *negatives* columns; MNRL on them."""
    data = _inputs(1, 2 + negatives)
    loss_fn = MultipleNegativesRankingLoss(symmetric=symmetric, gather_across_devices=gather)

    def loss_of(modules: list[nn.Module], rows: slice) -> torch.Tensor:
        columns = data[:, rows]
        embeddings = modules[0](columns.reshape(-1, columns.shape[-1]))
        return loss_fn(*embeddings.split(len(columns[0])))

    return _train([_linear(0)], loss_of, rank)


def clip(rank: int | None, *, gather: bool) -> dict[str, Any]:
    """Two towers (text: 6 inputs, image: 5) and CLIP's learnt logit scale."""
    text, image = _inputs(2, 1)[0], _inputs(3, 1, width=5)[0]
    loss_fn = CLIPLoss(temperature=0.1, gather_across_devices=gather).double()

    def loss_of(modules: list[nn.Module], rows: slice) -> torch.Tensor:
        return loss_fn(modules[0](text[rows]), modules[1](image[rows]))

    return _train([_linear(0), _linear(1, width=5)], loss_of, rank, loss_module=loss_fn)


def matryoshka(rank: int | None, *, gather: bool) -> dict[str, Any]:
    """MatryoshkaLoss of a symmetric cached MNRL on leaf embeddings (query, positive, one
    negatives column); returns the gradients of this rank's own embeddings."""
    inner = CachedMultipleNegativesRankingLoss(mini_batch_size=2, symmetric=True)
    loss_fn = MatryoshkaLoss(inner, dims=[2, 4], weights=[0.5, 1.0])
    if gather:
        assert enable_gather(loss_fn) and inner.gather_across_devices
    leaves = _inputs(4, 3, width=4)[:, rows_of(rank)].clone().requires_grad_()
    loss = loss_fn(*leaves)
    loss.backward()
    assert leaves.grad is not None
    return {
        "loss": _mean_over_ranks(loss).item(),
        "own_loss": loss.item(),
        "embedding_grads": leaves.grad.tolist(),
    }


def label_loss(rank: int | None, *, loss_name: str, miner_name: str | None) -> dict[str, Any]:
    """A pytorch-metric-learning loss (and miner) on one Linear's embeddings of labeled
    items: through :class:`GatheredLabelLoss` under ``torchrun``, plain in one process."""
    from pytorch_metric_learning import losses, miners

    data = _inputs(5, 1)[0]
    loss = getattr(losses, loss_name)()
    miner = None if miner_name is None else getattr(miners, miner_name)()

    def loss_of(modules: list[nn.Module], rows: slice) -> torch.Tensor:
        embeddings, labels = modules[0](data[rows]), LABELS[rows]
        if rank is not None:
            return GatheredLabelLoss(loss, miner)(embeddings, labels)
        if miner is None:
            return loss(embeddings, labels)
        return loss(embeddings, labels, miner(embeddings, labels))

    return _train([_linear(0)], loss_of, rank)


def gathered_rows(rank: int) -> dict[str, Any]:
    """``all_gather_rows`` and ``all_gather_labels`` of unequal shards; each rank weighs the
    gathered rows by ``rank + 1``, so each rank's rows get ``1 + 2 = 3`` times the weights."""
    base = torch.arange(GLOBAL * 2, dtype=torch.float64).reshape(GLOBAL, 2)
    local = base[rows_of(rank)].clone().requires_grad_()
    rows, offset = all_gather_rows(local)
    ((rank + 1) * rows * base).sum().backward()
    assert local.grad is not None
    return {
        "rows": rows.tolist(),
        "offset": offset,
        "grad": local.grad.tolist(),
        "labels": all_gather_labels(LABELS[rows_of(rank)]).tolist(),
    }


CASES: dict[str, Callable[..., dict[str, Any]]] = {
    "mnrl": lambda rank, gather=True: mnrl(rank, negatives=0, symmetric=False, gather=gather),
    "mnrl_symmetric": lambda rank, gather=True: mnrl(
        rank, negatives=0, symmetric=True, gather=gather
    ),
    "mnrl_two_negatives": lambda rank, gather=True: mnrl(
        rank, negatives=2, symmetric=True, gather=gather
    ),
    "mnrl_without_gather": lambda rank, gather=False: mnrl(
        rank, negatives=2, symmetric=False, gather=False
    ),
    "clip": lambda rank, gather=True: clip(rank, gather=gather),
    "matryoshka_cached": lambda rank, gather=True: matryoshka(rank, gather=gather),
    "supcon": lambda rank, gather=True: label_loss(rank, loss_name="SupConLoss", miner_name=None),
    "triplet_mined": lambda rank, gather=True: label_loss(
        rank, loss_name="TripletMarginLoss", miner_name="BatchHardMiner"
    ),
}
"""Each case by name: ``case(rank)`` under torchrun, ``case(None, gather=False)`` as the
single-process reference on the global batch."""


def main(folder: str) -> None:
    """Run every case on this rank and write ``{rank}.json`` into *folder*."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, size = world()
    assert size == len(SHARDS), f"run with --nproc-per-node {len(SHARDS)}"
    results = {name: case(rank) for name, case in CASES.items()}
    results["gathered_rows"] = gathered_rows(rank)
    Path(folder, f"{rank}.json").write_text(json.dumps(results))
    # The DDP wrappers hold the process group: free them before it goes, or gloo's threads
    # can be torn down at exit while still running (an abort, after the results are written).
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
