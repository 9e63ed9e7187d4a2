"""Negatives gathered across processes (finetuner.distributed.gather and the
``gather_across_devices`` of the in-batch losses): in one process they change nothing; under
``torchrun`` with two gloo processes and unequal shards, DDP's gradients and the ranks' mean
loss equal those of one process on the global batch (float64, to 1e-10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from distributed_workers.gather_worker import CASES, GLOBAL, LABELS, SHARDS, rows_of
from torch import nn

import finetuner
from finetuner.distributed.gather import (
    GatheredLabelLoss,
    all_gather_labels,
    all_gather_rows,
    world,
)
from finetuner.errors import ConfigError
from finetuner.training.contrastive import (
    CachedCLIPLoss,
    CachedMultipleNegativesRankingLoss,
    CLIPLoss,
    MatryoshkaLoss,
    MultipleNegativesRankingLoss,
    enable_gather,
)
from finetuner.training.losses import CosineSimilarityLoss, build_loss

WORKER = Path(__file__).parent / "distributed_workers" / "gather_worker.py"
CLOSE = {"rtol": 1e-10, "atol": 1e-10}


def _float64(values: Any) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float64)


def _close(actual: Any, expected: Any) -> None:
    torch.testing.assert_close(_float64(actual), _float64(expected), **CLOSE)


def test_one_process_world_gathers_nothing():
    assert world() == (0, 1)
    rows = torch.randn(3, 4, requires_grad=True)
    gathered, offset = all_gather_rows(rows)
    assert gathered is rows and offset == 0
    assert torch.equal(all_gather_labels(torch.tensor([2, 0, 1])), torch.tensor([2, 0, 1]))


def _grads_of(loss_fn: nn.Module, tensors: list[torch.Tensor]) -> tuple[Any, ...]:
    leaves = [t.clone().requires_grad_() for t in tensors]
    loss = loss_fn(*leaves)
    loss.backward()
    return (loss.detach(), *(leaf.grad for leaf in leaves))


@pytest.mark.parametrize(
    "make, columns",
    [
        (lambda: MultipleNegativesRankingLoss(symmetric=True), 4),
        (lambda: CachedMultipleNegativesRankingLoss(mini_batch_size=2), 3),
        (lambda: CLIPLoss(), 2),
        (lambda: MatryoshkaLoss(CachedCLIPLoss(), dims=[2, 4]), 2),
    ],
)
def test_in_batch_losses_are_unchanged_by_the_flag_in_one_process(make, columns):
    torch.manual_seed(0)
    tensors = list(torch.randn(columns, 6, 4))
    plain, gathering = make(), make()
    assert enable_gather(gathering) and gathering.gather_across_devices
    for left, right in zip(_grads_of(plain, tensors), _grads_of(gathering, tensors)):
        assert torch.equal(left, right)


def test_gathered_label_loss_in_one_process_is_the_loss():
    from pytorch_metric_learning import losses, miners

    torch.manual_seed(0)
    embeddings, labels = torch.randn(8, 4), LABELS
    supcon = losses.SupConLoss()
    assert torch.equal(GatheredLabelLoss(supcon)(embeddings, labels), supcon(embeddings, labels))
    triplet, miner = losses.TripletMarginLoss(), miners.BatchHardMiner()
    mined = triplet(embeddings, labels, miner(embeddings, labels))
    assert torch.equal(GatheredLabelLoss(triplet, miner)(embeddings, labels), mined)


def test_enable_gather_reaches_into_matryoshka_and_refuses_other_losses():
    from pytorch_metric_learning import losses

    mnrl = MultipleNegativesRankingLoss()
    assert not mnrl.gather_across_devices and enable_gather(mnrl) and mnrl.gather_across_devices
    inner = CachedCLIPLoss(gather_across_devices=False)
    wrapped = MatryoshkaLoss(inner, dims=[2])
    assert enable_gather(wrapped) and inner.gather_across_devices
    wrapped.gather_across_devices = False
    assert not inner.gather_across_devices and not wrapped.gather_across_devices
    assert not enable_gather(CosineSimilarityLoss())
    label_matryoshka = MatryoshkaLoss(losses.SupConLoss(), dims=[2])
    assert not enable_gather(label_matryoshka)
    label_matryoshka.gather_across_devices = False  # nothing to turn off
    with pytest.raises(ConfigError, match="GatheredLabelLoss"):
        label_matryoshka.gather_across_devices = True
    built = build_loss(
        "CachedMultipleNegativesRankingLoss",
        {"gather_across_devices": True},
        num_classes=1,
        embedding_size=4,
    )
    assert built.gather_across_devices


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Every case of the worker, run by two gloo processes under torchrun: one result per
    rank."""
    out = tmp_path_factory.mktemp("gather")
    core = str(Path(finetuner.__file__).parents[1])
    path = os.pathsep.join(p for p in (core, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", str(len(SHARDS)), str(WORKER), str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return [json.loads((out / f"{rank}.json").read_text()) for rank in range(len(SHARDS))]


def test_all_gather_rows_joins_unequal_shards_and_sums_gradients(ranks):
    base = torch.arange(GLOBAL * 2, dtype=torch.float64).reshape(GLOBAL, 2)
    for rank, result in enumerate(ranks):
        got = result["gathered_rows"]
        assert got["rows"] == base.tolist() and got["labels"] == LABELS.tolist()
        assert got["offset"] == sum(SHARDS[:rank])
        # rank 0 weighs the gathered rows by 1, rank 1 by 2: each rank's rows get 3 times
        assert got["grad"] == (3 * base[rows_of(rank)]).tolist()


@pytest.mark.parametrize(
    "case",
    ["mnrl", "mnrl_symmetric", "mnrl_two_negatives", "clip", "supcon", "triplet_mined"],
)
def test_ddp_gradients_equal_those_of_the_global_batch(ranks, case):
    expected = CASES[case](None, gather=False)
    assert expected["loss"] > 0 and any(g != 0 for g in expected["grads"])
    for result in ranks:
        _close(result[case]["loss"], expected["loss"])
        _close(result[case]["grads"], expected["grads"])  # CLIP: the logit scale's too


@pytest.mark.parametrize("case", ["supcon", "triplet_mined"])
def test_gathered_label_loss_is_the_global_loss_on_every_rank(ranks, case):
    expected = CASES[case](None, gather=False)["loss"]
    for result in ranks:
        _close(result[case]["own_loss"], expected)


def test_without_gather_the_ddp_gradient_is_not_the_global_one(ranks):
    expected = _float64(CASES["mnrl_without_gather"](None)["grads"])
    got = _float64(ranks[0]["mnrl_without_gather"]["grads"])
    assert (got - expected).abs().max() > 1e-3


def test_matryoshka_cached_mnrl_embedding_gradients(ranks):
    # Rank r's loss is (W / N) * its queries' terms, so the ranks' losses add up to W times
    # the global loss L; the gather's backward sums over ranks, so each rank's embeddings
    # get d(sum of the ranks' losses)/de = W * dL/de: their gradients over W are the global ones.
    expected = CASES["matryoshka_cached"](None, gather=False)
    joined = torch.cat([_float64(r["matryoshka_cached"]["embedding_grads"]) for r in ranks], 1)
    _close(joined / len(SHARDS), expected["embedding_grads"])
    for result in ranks:
        _close(result["matryoshka_cached"]["loss"], expected["loss"])
