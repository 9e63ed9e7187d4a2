"""Qrels metrics against ir-measures: graded judgments, ties, unjudged queries, k past the corpus.

The ranking comes from the independent float64 brute force of ``oracle.py`` (score descending,
then corpus position). ir-measures (trec_eval) breaks equal scores by document id instead, so
the run handed to it scores each query's ranked documents ``n - rank``: strictly decreasing,
the oracle's order with no ties left for it to break. The tie rule itself is checked by the
ranking comparison and by the hand-made cases below.
"""

from __future__ import annotations

import math

import ir_measures
import numpy as np
import pytest
from ir_measures import AP, RR, P, R, Success, nDCG
from oracle import brute_force_ranking

from finetuner_evaluation import QRELS_METRIC_NAMES, evaluate_qrels

CUTOFFS = (1, 3, 10, 100)  # 100 is more than the 60 corpus documents


def _data(distance, rng):
    """60 corpus rows drawn from 20 distinct vectors (equal scores for repeats); on the integer
    grid (sqeuclidean) scores are exact in float32, so distinct rows also tie often."""
    if distance == "sqeuclidean":
        distinct = rng.integers(-2, 3, size=(20, 4)).astype(np.float32)
        queries = rng.integers(-2, 3, size=(40, 4)).astype(np.float32)
    else:
        distinct = rng.normal(size=(20, 6)).astype(np.float32)
        queries = rng.normal(size=(40, 6)).astype(np.float32)
    corpus = distinct[rng.integers(0, 20, size=60)]
    return queries, corpus


def _qrels(rng, num_queries, num_docs):
    qrels = {}
    for i in range(num_queries):
        if i % 7 == 3:
            continue  # no judgment: skipped
        docs = rng.choice(num_docs, size=int(rng.integers(1, 15)), replace=False)
        grades = rng.integers(0, 4, size=docs.size)
        if i % 11 == 5:
            grades[:] = 0  # judged, none relevant: skipped too
        qrels[f"q{i}"] = {f"d{j}": int(g) for j, g in zip(docs, grades)}
    return qrels


def _oracle(ranking, qrels, num_queries):
    run = {
        f"q{i}": {f"d{j}": float(len(docs) - rank) for rank, j in enumerate(docs)}
        for i, docs in enumerate(ranking)
    }
    measures = [m @ k for k in CUTOFFS for m in (P, R, RR, nDCG, Success, AP)]
    values: dict[str, dict[str, float]] = {}
    for row in ir_measures.iter_calc(measures, qrels, run):
        values.setdefault(row.query_id, {})[str(row.measure)] = row.value
    relevant = {q: sum(g > 0 for g in docs.values()) for q, docs in qrels.items()}
    scored = [q for q in values if relevant.get(q, 0) > 0]
    expected = {}
    for k in CUTOFFS:

        def mean(f, k=k):
            return sum(f(values[q], relevant[q]) for q in scored) / len(scored)

        expected[f"precision_at_{k}"] = mean(lambda v, r, k=k: v[f"P@{k}"])
        expected[f"recall_at_{k}"] = mean(lambda v, r, k=k: v[f"R@{k}"])
        expected[f"mrr_at_{k}"] = mean(lambda v, r, k=k: v[f"RR@{k}"])
        expected[f"ndcg_at_{k}"] = mean(lambda v, r, k=k: v[f"nDCG@{k}"])
        expected[f"hit_at_{k}"] = mean(lambda v, r, k=k: v[f"Success@{k}"])
        expected[f"map_at_{k}"] = mean(lambda v, r, k=k: v[f"AP@{k}"] * r / min(r, k))
    return expected, num_queries - len(scored)


@pytest.mark.parametrize("distance", ["sqeuclidean", "cosine"])
def test_graded_metrics_match_ir_measures(distance):
    rng = np.random.default_rng(16)
    queries, corpus = _data(distance, rng)
    qrels = _qrels(rng, len(queries), len(corpus))
    result = evaluate_qrels(
        queries,
        [f"q{i}" for i in range(len(queries))],
        corpus,
        [f"d{j}" for j in range(len(corpus))],
        qrels,
        k=CUTOFFS,
        distance=distance,
        return_details=True,
    )
    ranking = brute_force_ranking(queries, corpus, distance, max(CUTOFFS))
    assert [row[row >= 0].tolist() for row in result.indices] == ranking
    expected, skipped = _oracle(ranking, qrels, len(queries))
    assert result.num_queries_skipped == skipped > 0
    for key, value in expected.items():
        assert result.metrics[key] == pytest.approx(value, abs=1e-6), key
    assert set(result.metrics) == {f"{n}_at_{k}" for k in CUTOFFS for n in QRELS_METRIC_NAMES}


def test_the_data_has_ties_unjudged_queries_and_grades():
    rng = np.random.default_rng(16)
    queries, corpus = _data("sqeuclidean", rng)
    qrels = _qrels(rng, len(queries), len(corpus))
    scores = -((queries[:, None, :] - corpus[None, :, :]) ** 2).sum(axis=2)
    top10 = np.sort(scores, axis=1)[:, -11:]
    assert (np.diff(top10, axis=1) == 0).any(axis=1).mean() > 0.5  # ties near the cut-offs
    assert len(qrels) < len(queries)
    assert {g for docs in qrels.values() for g in docs.values()} == {0, 1, 2, 3}


# --- hand-checked -------------------------------------------------------------------------

# Squared distances from the query [0, 0]: a 0, b 1, c 1 (tied with b, after it in corpus
# order), d 4. Ranking a, b, c, d.
CORPUS = np.array([[0, 0], [1, 0], [0, 1], [2, 0]], dtype=np.float32)
IDS = ["a", "b", "c", "d"]


def _hand(qrels, k):
    queries = np.zeros((2, 2), dtype=np.float32)
    return evaluate_qrels(
        queries,
        ["q", "unjudged"],
        CORPUS,
        IDS,
        qrels,
        k=k,
        distance="sqeuclidean",
        return_details=True,
    )


def test_hand_checked_graded_case():
    result = _hand({"q": {"b": 2, "d": 1, "a": 0}}, [2, 10])
    log3, log5 = math.log2(3), math.log2(5)
    ideal = 2 + 1 / log3
    assert result.indices.tolist()[0] == [0, 1, 2, 3, -1, -1, -1, -1, -1, -1]
    assert result.num_queries_skipped == 1
    m = result.metrics
    assert m["precision_at_2"] == pytest.approx(1 / 2)
    assert m["recall_at_2"] == pytest.approx(1 / 2)
    assert m["mrr_at_2"] == pytest.approx(1 / 2)
    assert m["map_at_2"] == pytest.approx((1 / 2) / 2)
    assert m["dcg_at_2"] == pytest.approx(2 / log3)
    assert m["ndcg_at_2"] == pytest.approx((2 / log3) / ideal)
    # k = 10 is past the corpus: precision counts the missing ranks as not relevant.
    assert m["precision_at_10"] == pytest.approx(2 / 10)
    assert m["recall_at_10"] == pytest.approx(1.0)
    assert m["map_at_10"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert m["dcg_at_10"] == pytest.approx(2 / log3 + 1 / log5)
    assert m["ndcg_at_10"] == pytest.approx((2 / log3 + 1 / log5) / ideal)
    assert m["f1_score_at_10"] == pytest.approx(2 * 0.2 * 1.0 / 1.2)
    assert m["hit_at_2"] == 1.0


def test_tied_documents_rank_in_corpus_order():
    # b and c tie; b comes first in the corpus, so a relevant c is at rank 3, a relevant b at 2.
    assert _hand({"q": {"c": 1}}, [2, 3]).metrics["mrr_at_3"] == pytest.approx(1 / 3)
    assert _hand({"q": {"c": 1}}, [2, 3]).metrics["recall_at_2"] == 0.0
    assert _hand({"q": {"b": 1}}, [2]).metrics["mrr_at_2"] == pytest.approx(1 / 2)


def test_exclude_self_drops_the_document_with_the_query_id_and_its_judgment():
    queries = np.zeros((1, 2), dtype=np.float32)
    qrels = {"a": {"a": 3, "c": 1}}
    kept = evaluate_qrels(queries, ["a"], CORPUS, IDS, qrels, k=[1], exclude_self=False)
    dropped = evaluate_qrels(queries, ["a"], CORPUS, IDS, qrels, k=[1, 3])
    assert kept["ndcg_at_1"] == 1.0
    # Without a, the ranking is b, c, d and R = 1 (c).
    assert dropped["mrr_at_3"] == pytest.approx(1 / 2)
    assert dropped["recall_at_3"] == 1.0
    assert dropped["ndcg_at_1"] == 0.0


def test_no_scorable_query_gives_nan():
    result = _hand({"q": {"a": 0}}, [1])
    assert result.num_queries_scored == 0
    assert math.isnan(result.metrics["ndcg_at_1"])


def test_recall_counts_relevant_documents_beyond_the_largest_cutoff():
    # Three relevant documents, k = 1: one found of three, whatever the largest cut-off is.
    result = _hand({"q": {"a": 1, "b": 1, "c": 1}}, [1])
    assert result.metrics["recall_at_1"] == pytest.approx(1 / 3)
    assert result.metrics["f1_score_at_1"] == pytest.approx(2 * 1 * (1 / 3) / (1 + 1 / 3))
    assert result.metrics["map_at_1"] == 1.0  # divided by min(R, k) = 1
