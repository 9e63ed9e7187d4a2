"""Qrels evaluation: the file formats, the errors, the callback in a fit, `finetuner evaluate`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import finetuner
from finetuner.cli import main
from finetuner.errors import ConfigError, DataError
from finetuner.testing import run_recorded_fit
from finetuner_evaluation import QRELS_METRIC_NAMES, EvaluationCallback, evaluate_qrels
from finetuner_evaluation._qrels import read_items, read_qrels


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_and_beir_jsonl_with_titles(tmp_path):
    csv = read_items(_write(tmp_path / "q.csv", 'q1,what is a cat\n\nq2,"dogs, barking"\n'), "q")
    assert csv.ids == ["q1", "q2"] and csv.values == ["what is a cat", "dogs, barking"]
    lines = [
        {"_id": "d1", "title": "Cats", "text": "A cat."},
        {"_id": 2, "text": "Dogs."},
        {"_id": "d3", "title": "", "text": "Fish."},
    ]
    path = _write(tmp_path / "c.jsonl", "\n".join(json.dumps(r) for r in lines) + "\n")
    corpus = read_items(path, "corpus")
    assert corpus.ids == ["d1", "2", "d3"]
    assert corpus.values == ["Cats A cat.", "Dogs.", "Fish."]


def test_trec_beir_and_dict_qrels_agree(tmp_path):
    trec = _write(tmp_path / "r.txt", "q1 0 d1 2\nq1 0 d2 0\nq2\tQ0\td3\t1\n")
    beir = _write(
        tmp_path / "r.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\nq2\td3\t1\n"
    )
    expected = {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}}
    assert read_qrels(trec) == read_qrels(beir) == read_qrels(expected) == expected


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("empty.txt", "\n", r"empty.txt is empty"),
        ("short.txt", "q1 0 d1 1\nq1 d2 1\n", r"short.txt:2 is not 'qid 0 docid rel'"),
        ("grade.txt", "q1 0 d1 high\n", r"grade.txt:1 has the grade 'high'"),
        ("twice.txt", "q1 0 d1 1\nq1 0 d1 2\n", r"twice.txt:2 judges query 'q1'.*first at line 1"),
        ("b.tsv", "query-id\tcorpus-id\tscore\nq1 d1 1\n", r"b.tsv:2 is not 'query-id<TAB>"),
    ],
)
def test_malformed_qrels_name_the_line(tmp_path, name, text, message):
    with pytest.raises(DataError, match=message):
        read_qrels(_write(tmp_path / name, text))


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("dup.csv", "a,x\nb,y\na,z\n", r"dup.csv:3 repeats the id 'a' of .*dup.csv:1"),
        ("three.csv", "a,x,y\n", r"three.csv:1 has 3 field\(s\)"),
        ("empty.jsonl", "", r"empty.jsonl is empty"),
        ("bad.jsonl", '{"_id": "a", "text": "x"}\n{oops\n', r"bad.jsonl:2 is not valid JSON"),
        ("noid.jsonl", '{"text": "x"}\n', r'noid.jsonl:1 needs an object with "_id"'),
    ],
)
def test_malformed_items_name_the_line(tmp_path, name, text, message):
    with pytest.raises(DataError, match=message):
        read_items(_write(tmp_path / name, text), "corpus")


def test_unknown_ids_are_counted_and_the_first_few_shown():
    vectors = torch.eye(3)
    qrels = {"q0": {f"x{i}": 1 for i in range(7)}}
    with pytest.raises(DataError, match=r"names 7 document id\(s\) not in corpus_ids: 'x0', "):
        evaluate_qrels(vectors, ["q0", "q1", "q2"], vectors, ["a", "b", "c"], qrels)
    with pytest.raises(DataError, match=r"names 1 query id\(s\) not in query_ids: 'nobody'"):
        evaluate_qrels(vectors, ["q0", "q1", "q2"], vectors, ["a", "b", "c"], {"nobody": {"a": 1}})
    with pytest.raises(DataError, match=r"corpus_ids\[2\] repeats the id 'a'"):
        evaluate_qrels(vectors, ["q0", "q1", "q2"], vectors, ["a", "b", "a"], {"q0": {"a": 1}})


def test_callback_options_are_checked():
    with pytest.raises(ConfigError, match="corpus, qrels missing"):
        EvaluationCallback(queries={"q": "x"})
    with pytest.raises(ConfigError, match="not both"):
        EvaluationCallback(query_data=[], queries={}, corpus={}, qrels={})
    with pytest.raises(ConfigError, match=r"k \(the cut-offs\) applies to qrels"):
        EvaluationCallback(query_data=[(torch.zeros(2), 0)], k=[1])
    with pytest.raises(ConfigError, match="repeats a cut-off"):
        EvaluationCallback(queries={}, corpus={}, qrels={}, k=[1, 1])


def _tensor_docs(count, seed):
    from docarray import BaseDoc, DocList
    from docarray.typing import TorchTensor

    class Vector(BaseDoc):
        tensor: TorchTensor

    generator = torch.Generator().manual_seed(seed)
    return DocList[Vector](
        [Vector(id=f"d{i}", tensor=torch.randn(8, generator=generator)) for i in range(count)]
    )


def test_callback_publishes_graded_keys_at_every_stage(tmp_path):
    corpus = _tensor_docs(12, 1)
    queries = {f"q{i}": corpus[i].tensor + 0.1 for i in range(4)}
    qrels = {"q0": {"d0": 2, "d5": 1}, "q1": {"d1": 1}, "q2": {"d2": 0}}  # q2, q3: skipped
    callback = EvaluationCallback(
        queries=queries, corpus=corpus, qrels=qrels, k=[1, 5, 20], truncate_dims=[4]
    )
    result = run_recorded_fit(tmp_path, callbacks=[callback], epochs=1)
    history = result.run.metric_history()
    assert [r["stage"] for r in history] == ["before", "epoch", "after"]
    keys = {f"mlp_{n}_at_{k}" for k in (1, 5, 20) for n in QRELS_METRIC_NAMES}
    for record in history:
        assert keys | {f"{key}_dim4" for key in keys} == set(record["metrics"]) - {"train_loss"}
        assert record["skipped"] == {"mlp": 2}
    model = finetuner.get_model(result.run.artifact_path)
    q = finetuner.encode(model, torch.stack(list(queries.values())))
    c = finetuner.encode(model, torch.stack([d.tensor for d in corpus]))
    expected = evaluate_qrels(q, list(queries), c, [d.id for d in corpus], qrels, k=[1, 5, 20])
    for key, value in expected.items():
        assert history[-1]["metrics"][f"mlp_{key}"] == pytest.approx(value, abs=1e-6)
    # the run report's per-query records: nDCG at the cut-off nearest 10, judged results
    recorded = result.run.query_results()["mlp"]
    expected_per_query = evaluate_qrels(
        q, list(queries), c, [d.id for d in corpus], qrels, k=[1, 5, 20], return_details=True
    ).per_query["ndcg_at_5"]
    after = recorded["after"]
    assert after["metric"] == "ndcg_at_5" and [r["id"] for r in after["queries"]] == list(queries)
    for row, record in zip(expected_per_query, after["queries"]):
        assert (record["score"] is None) == bool(np.isnan(row))
        if record["score"] is not None:
            assert record["score"] == pytest.approx(float(row), abs=1e-6)
    first = after["queries"][0]
    judged = [qrels["q0"].get(text.split(":")[0], 0) > 0 for text in first["results"]]
    assert first["relevant"] == judged


def test_evaluate_command_with_qrels(tmp_path, capsys):
    from finetuner.testing import tiny_text_model_options

    _write(tmp_path / "q.csv", "q1,what is a cat\nq2,dogs bark\nq3,no judgment\n")
    docs = [{"_id": "d1", "title": "Cats", "text": "A cat."}, {"_id": "d2", "text": "Dogs."}]
    _write(tmp_path / "c.jsonl", "".join(json.dumps(d) + "\n" for d in docs))
    _write(tmp_path / "r.txt", "q1 0 d1 2\nq2 0 d2 1\n")
    args = [
        "evaluate",
        "sentence-transformers/all-MiniLM-L6-v2",
        "--model-options",
        json.dumps(tiny_text_model_options()),
        "--queries",
        str(tmp_path / "q.csv"),
        "--corpus",
        str(tmp_path / "c.jsonl"),
        "--qrels",
        str(tmp_path / "r.txt"),
    ]
    assert main([*args, "--k", "1", "5", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert set(metrics) == {f"{n}_at_{k}" for k in (1, 5) for n in QRELS_METRIC_NAMES}
    assert metrics["recall_at_5"] == 1.0  # two documents: both found by rank 5
    _write(tmp_path / "r.txt", "q1 0 d9 2\n")
    assert main(args) != 0
    assert "names 1 document id(s) not in" in capsys.readouterr().err
