"""LoRA through peft (model_options={'lora': {...}}): what trains, what the artifact stores,
get_model with and without merge_lora, continuing and resuming, and the errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import finetuner
from finetuner import ConfigError
from finetuner.callback import Callback
from finetuner.models import get_spec
from finetuner.testing import (
    CaptureModels,
    make_tiny_data,
    minilm_folder,
    tiny_clip_model_options,
    tiny_text_model_options,
    write_colour_images,
)

pytest.importorskip("peft")

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = [
    (f"{word} number {i} about {topic}", topic)
    for topic, word in (("sports", "a match"), ("food", "a recipe"), ("tech", "a phone"))
    for i in range(8)
]
QUERIES = [text for text, _ in TEXTS[::3]]


def _tiny_lora(**lora):
    return {**tiny_text_model_options(), "lora": {"r": 4, **lora}}


def _fit_text(tmp_path, model_options, **options):
    defaults = dict(epochs=1, batch_size=8, learning_rate=1e-2, seed=0, runs_dir=tmp_path)
    return finetuner.fit(MINILM, TEXTS, model_options=model_options, **{**defaults, **options})


def _is_peft(module: nn.Module) -> bool:
    return any(type(m).__module__.startswith("peft") for m in module.modules())


def _model_files(run) -> set[str]:
    return {p.name for p in (run.artifact_path / "models" / "model").iterdir()}


def _lora_key(key: str) -> bool:
    return ".lora_" in key


# --------------------------------------------------------------------------------------------
# Options and errors


@pytest.mark.parametrize(
    ("lora", "message"),
    [
        ({"r": 0}, r"lora r \(the rank\) must be a positive integer, not 0"),
        ({"r": 2.5}, r"lora r \(the rank\) must be a positive integer, not 2.5"),
        ({"r": True}, r"must be a positive integer, not True"),
        ({"alpha": 0}, "lora alpha must be a positive number, not 0"),
        ({"alpha": "16"}, "lora alpha must be a positive number, not '16'"),
        ({"dropout": 1.0}, r"lora dropout must be a number in \[0, 1\), not 1.0"),
        ({"dropout": -0.1}, r"lora dropout must be a number in \[0, 1\), not -0.1"),
        ({"alhpa": 8}, "lora has no option 'alhpa'; its options are r, alpha, .* mean 'alpha'"),
        ({"target_module": ["query"]}, "Did you mean 'target_modules'"),
        ({"target_modules": "query"}, "target_modules must be a list of layer names"),
        ({"target_modules": []}, "target_modules must be a list of layer names"),
        (8, "lora must be a mapping of r, alpha, dropout and target_modules"),
    ],
)
def test_bad_lora_options_are_refused(lora, message):
    with pytest.raises(ConfigError, match=message):
        get_spec(MINILM).resolve_options({**tiny_text_model_options(), "lora": lora}, None)


def test_lora_defaults_to_the_attention_projections_peft_knows():
    text = get_spec(MINILM).resolve_options({**tiny_text_model_options(), "lora": {}}, None)
    assert text["lora"] == {
        "r": 8,
        "alpha": 16,
        "dropout": 0.05,
        "target_modules": ["query", "value"],
    }
    clip = get_spec("clip-base-en").resolve_options({**tiny_clip_model_options(), "lora": {}}, None)
    assert clip["lora"]["target_modules"] == ["q_proj", "v_proj"]
    assert "lora" not in get_spec(MINILM).resolve_options(tiny_text_model_options(), None)


@pytest.mark.parametrize(
    ("model", "options"),
    [("mlp", {"hidden_sizes": [8]}), ("resnet-base", {"pretrained": False})],
)
def test_lora_is_for_transformer_backbones(model, options):
    with pytest.raises(
        ConfigError,
        match=rf"'{model}' takes no 'lora': LoRA is for transformer backbones \(the text models "
        r"and the CLIP towers\); drop 'lora'",
    ):
        get_spec(model).resolve_options({**options, "lora": {}}, (3, 32, 32))


def test_freeze_and_lora_together_are_refused():
    with pytest.raises(ConfigError, match="freeze=True and lora both choose what trains"):
        get_spec(MINILM).resolve_options({**_tiny_lora(), "freeze": True, "output_dim": 8}, None)


def test_unknown_target_modules_list_the_layers(tmp_path):
    with pytest.raises(ConfigError) as error:
        _fit_text(tmp_path, _tiny_lora(target_modules=["query", "valeu"]))
    message = str(error.value)
    assert "lora target_modules ['valeu'] name no layer of 'bert'" in message
    assert (
        "layers are dense, key, position_embeddings, query, token_type_embeddings, value,"
        in message
    )
    assert message.endswith("Did you mean 'value'?")
    assert not tmp_path.exists() or not list(tmp_path.iterdir())


def test_without_peft_lora_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # what an environment without peft imports
    with pytest.raises(
        ConfigError, match=r'LoRA needs the peft package .*pip install "finetuner\[lora\]"'
    ):
        get_spec(MINILM).resolve_options(_tiny_lora(), None)


def test_import_finetuner_does_not_import_peft():
    code = (
        "import sys, finetuner, finetuner.models\n"
        "finetuner.build_model('mlp', {'hidden_sizes': [4]}, input_shape=(8,))\n"
        "print('peft' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------------------------
# Text: what trains, the run log, the artifact, get_model


def test_only_the_adapters_and_the_head_train(tmp_path):
    capture = CaptureModels(texts=QUERIES)
    options = {**_tiny_lora(), "output_dim": 8, "pooling": "GeM"}
    run = _fit_text(tmp_path, options, callbacks=[capture], loss="SupConLoss")
    initial = capture.initial["model"]
    loaded = finetuner.get_model(run.artifact_path).module
    trained = loaded.state_dict()
    changed = {k for k, v in trained.items() if not torch.equal(v, initial[k])}
    lora_b = {k for k in trained if ".lora_B." in k}
    assert lora_b and lora_b <= changed  # the adapters start at zero and trained
    heads = {"projection.weight", "projection.bias", "body.pooling.p"}
    assert changed <= {k for k in trained if _lora_key(k)} | heads
    assert heads & changed

    records = [json.loads(line) for line in run.log_path.read_text().splitlines()]
    (record,) = [r for r in records if r["event"] == "LoRA adapters"]
    lora_layers = 2 * 2  # two layers, query and value
    adapters = lora_layers * 4 * (32 + 32)
    head = 32 * 8 + 8 + 1
    assert record["model"] == "model"
    assert record["trainable_parameters"] == adapters + head
    assert record["total_parameters"] == sum(p.numel() for p in loaded.parameters())
    assert record["base_weights"] == "model.safetensors"  # a random base: stored whole


def test_a_lora_artifact_round_trips_merged_and_not(tmp_path):
    capture = CaptureModels(texts=QUERIES)
    run = _fit_text(tmp_path, _tiny_lora(dropout=0.1), callbacks=[capture], loss="SupConLoss")
    assert _model_files(run) == {
        "model.safetensors",
        "adapter.safetensors",
        "metadata.yml",
        "preprocessor",
    }
    folder = run.artifact_path / "models" / "model"
    adapter = load_file(folder / "adapter.safetensors")
    assert adapter and all(_lora_key(k) for k in adapter)
    assert adapter.keys() < load_file(folder / "model.safetensors").keys()

    model = finetuner.get_model(run.artifact_path)
    assert _is_peft(model.module)
    vectors = finetuner.encode(model, QUERIES)
    np.testing.assert_allclose(vectors, capture.encoded, atol=1e-5, rtol=0)

    merged = finetuner.get_model(run.artifact_path, merge_lora=True)
    assert not _is_peft(merged.module)
    assert not any(_lora_key(k) or ".base_layer." in k for k in merged.module.state_dict())
    np.testing.assert_allclose(finetuner.encode(merged, QUERIES), vectors, atol=1e-5, rtol=0)
    base = finetuner.build_model(MINILM, tiny_text_model_options())
    base.module.load_state_dict(
        {
            k.replace(".base_layer", ""): v
            for k, v in capture.initial["model"].items()
            if not _lora_key(k)
        }
    )
    assert np.abs(finetuner.encode(base, QUERIES) - vectors).max() > 1e-3  # LoRA changed them


def test_continuing_from_a_lora_artifact_keeps_training_the_adapters(tmp_path):
    first = _fit_text(tmp_path, _tiny_lora(), loss="SupConLoss")
    capture = CaptureModels()
    second = _fit_text(
        tmp_path,
        _tiny_lora(),
        model_artifact=first.artifact_path,
        callbacks=[capture],
        loss="SupConLoss",
    )
    stored = load_file(first.artifact_path / "models" / "model" / "model.safetensors")
    start = capture.initial["model"]
    assert all(torch.equal(start[k], v) for k, v in stored.items())
    after = load_file(second.artifact_path / "models" / "model" / "model.safetensors")
    changed = {k for k, v in after.items() if not torch.equal(v, stored[k])}
    assert changed and all(_lora_key(k) for k in changed)

    with pytest.raises(ConfigError, match="holds LoRA adapters; continue training them with"):
        _fit_text(tmp_path, tiny_text_model_options(), model_artifact=first.artifact_path)
    with pytest.raises(ConfigError, match=r"was trained with lora \{'r': 4, .*not \{'r': 2"):
        _fit_text(tmp_path, _tiny_lora(r=2), model_artifact=first.artifact_path)


class FailInSecondEpoch(Callback):
    def finetuner_on_train_batch_end(self, event):
        if event.epoch == 1:
            raise RuntimeError("simulated crash")


def test_a_resumed_lora_run_trains_as_an_uninterrupted_one(tmp_path):
    pytest.importorskip("finetuner_training_checkpoint")
    from finetuner.callback import TrainingCheckpoint

    options = dict(epochs=2, loss="SupConLoss", model_options=_tiny_lora())
    whole = _fit_text(tmp_path, run_name="whole", callbacks=[TrainingCheckpoint()], **options)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit_text(
            tmp_path,
            run_name="cut",
            callbacks=[TrainingCheckpoint(), FailInSecondEpoch()],
            **options,
        )
    resumed = _fit_text(tmp_path, resume="cut", callbacks=[TrainingCheckpoint()], **options)
    assert resumed.name == "cut" and resumed.status()["status"] == "FINISHED"
    assert resumed.status()["resumed_from_epoch"] == 0
    mine = load_file(resumed.artifact_path / "models" / "model" / "model.safetensors")
    theirs = load_file(whole.artifact_path / "models" / "model" / "model.safetensors")
    assert any(_lora_key(k) and v.abs().sum() > 0 for k, v in mine.items() if ".lora_B." in k)
    for key, value in mine.items():
        torch.testing.assert_close(value, theirs[key], atol=1e-6, rtol=0, msg=key)


# --------------------------------------------------------------------------------------------
# CLIP and custom modules


def test_both_clip_towers_get_adapters(tmp_path):
    images = write_colour_images(tmp_path / "img", per_colour=2)
    rows = [f"a {name} square,{path}\n" for name, paths in images.items() for path in paths]
    (tmp_path / "pairs.csv").write_text("".join(rows))
    texts = [f"a {name} square" for name in images]
    capture = CaptureModels(texts=texts, model="clip-text")
    run = finetuner.fit(
        "clip-base-en",
        str(tmp_path / "pairs.csv"),
        model_options={**tiny_clip_model_options(), "lora": {"r": 2, "dropout": 0.0}},
        loss="CLIPLoss",
        epochs=1,
        batch_size=4,
        learning_rate=1e-2,
        seed=0,
        runs_dir=tmp_path / "runs",
        callbacks=[capture],
    )
    for tower in ("clip-text", "clip-vision"):
        initial = capture.initial[tower]
        adapter = load_file(run.artifact_path / "models" / tower / "adapter.safetensors")
        assert adapter and all(".q_proj.lora_" in k or ".v_proj.lora_" in k for k in adapter)
        trained = finetuner.get_model(run.artifact_path, select_model=tower).module.state_dict()
        changed = {k for k, v in trained.items() if not torch.equal(v, initial[k])}
        assert changed and changed <= set(adapter)
    text = finetuner.get_model(run.artifact_path, select_model="clip-text")
    merged = finetuner.get_model(run.artifact_path, select_model="clip-text", merge_lora=True)
    assert _is_peft(text.module) and not _is_peft(merged.module)
    np.testing.assert_allclose(finetuner.encode(text, texts), capture.encoded, atol=1e-5, rtol=0)
    np.testing.assert_allclose(finetuner.encode(merged, texts), capture.encoded, atol=1e-5, rtol=0)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_a_custom_module_takes_lora_on_the_layers_it_names(tmp_path):
    data = make_tiny_data()
    module = Net()
    initial_fc2 = module.fc2.weight.detach().clone()
    run = finetuner.fit(
        module,
        data,
        model_options={"lora": {"target_modules": ["fc1"], "r": 2}},
        loss="SupConLoss",
        epochs=1,
        batch_size=8,
        learning_rate=1e-2,
        seed=0,
        runs_dir=tmp_path,
    )
    assert {n for n, p in module.named_parameters() if p.requires_grad} == {
        "fc1.lora_A.default.weight",
        "fc1.lora_B.default.weight",
    }
    assert torch.equal(module.fc2.weight, initial_fc2)
    assert module.fc1.lora_B.default.weight.abs().max() > 1e-3  # the adapter trained
    assert _model_files(run) == {"model.safetensors", "adapter.safetensors", "metadata.yml"}
    tensors = torch.stack([x for x, _ in data])
    with torch.no_grad():
        expected = module.eval()(tensors).numpy()
    loaded = finetuner.get_model(run.artifact_path, model=Net())
    assert _is_peft(loaded.module)
    np.testing.assert_allclose(finetuner.encode(loaded, tensors), expected, atol=1e-5, rtol=0)
    merged = finetuner.get_model(run.artifact_path, model=Net(), merge_lora=True)
    assert type(merged.module.fc1) is nn.Linear
    np.testing.assert_allclose(finetuner.encode(merged, tensors), expected, atol=1e-5, rtol=0)

    with pytest.raises(ConfigError, match="holds LoRA adapters already"):
        finetuner.fit(
            module, data, model_options={"lora": {"target_modules": ["fc1"]}}, runs_dir=tmp_path
        )


@pytest.mark.parametrize(
    ("model_options", "message"),
    [
        ({"lora": {}}, r"LoRA on 'net' needs lora target_modules .* among fc1, fc2\."),
        ({"lora": {"target_modules": ["fc3"]}}, r"\['fc3'\] name no layer of 'net'; .* fc1, fc2\."),
        ({"lora": {}, "output_dim": 4}, r"your own module takes 'lora' alone"),
    ],
)
def test_a_custom_module_needs_real_target_modules(tmp_path, model_options, message):
    with pytest.raises(ConfigError, match=message):
        finetuner.fit(Net(), make_tiny_data(), model_options=model_options, runs_dir=tmp_path)


# --------------------------------------------------------------------------------------------
# The pretrained MiniLM: only the adapter is stored, the base comes from its folder


def _copy_of_minilm(folder: Path) -> Path:
    """A model folder of links to the bundled MiniLM's files: a base that can go missing."""
    folder.mkdir()
    for file in Path(minilm_folder()).iterdir():
        (folder / file.name).symlink_to(file)
    return folder


@pytest.mark.slow
def test_a_pretrained_base_is_rebuilt_from_its_folder(tmp_path):
    base = _copy_of_minilm(tmp_path / "minilm")
    options = {"model_path": str(base), "max_length": 16, "output_dim": 16, "lora": {"r": 4}}
    capture = CaptureModels(texts=QUERIES)
    data = TEXTS[::2]
    fit = dict(loss="SupConLoss", epochs=1, batch_size=12, learning_rate=1e-3, seed=0)
    run = finetuner.fit(
        MINILM, data, model_options=options, runs_dir=tmp_path / "runs", callbacks=[capture], **fit
    )
    assert _model_files(run) == {"adapter.safetensors", "metadata.yml", "preprocessor"}
    adapter = load_file(run.artifact_path / "models" / "model" / "adapter.safetensors")
    assert {"projection.weight", "projection.bias"} < adapter.keys()
    assert sum(v.numel() for v in adapter.values()) < 100_000  # of 22.7 million

    model = finetuner.get_model(run.artifact_path)
    np.testing.assert_allclose(finetuner.encode(model, QUERIES), capture.encoded, atol=1e-5, rtol=0)
    merged = finetuner.get_model(run.artifact_path, merge_lora=True)
    np.testing.assert_allclose(
        finetuner.encode(merged, QUERIES), capture.encoded, atol=1e-5, rtol=0
    )

    again = finetuner.fit(
        MINILM,
        data,
        model_options=options,
        model_artifact=run.artifact_path,
        runs_dir=tmp_path / "runs",
        **fit,
    )
    assert _model_files(again) == {"adapter.safetensors", "metadata.yml", "preprocessor"}
    continued = load_file(again.artifact_path / "models" / "model" / "adapter.safetensors")
    assert any(not torch.equal(v, adapter[k]) for k, v in continued.items())

    for file in base.iterdir():
        file.unlink()
    base.rmdir()
    with pytest.raises(
        ConfigError, match=rf"stores only its LoRA adapter; .* folder '{base}', which is not"
    ):
        finetuner.get_model(run.artifact_path)
