"""Properties of the retrieval metrics on random rankings (METRICS.md), and agreement with
ir-measures.

For one query the metrics read a ranking: the relevance (or grade) of each result, best first,
and ``R``, the query's number of relevant documents. The binary metrics
(``per_query_metrics``) and the graded qrels metrics (``judged_gains`` + ``graded_metrics``)
must stay within their bounds, grow with ``k`` where their definition makes them grow (hits,
recall, hit, reciprocal rank, DCG), and equal ir-measures' (trec_eval's) values under the oracle
mapping of METRICS.md. The rankings are random; the scores handed to ir-measures are strictly
decreasing (``n - rank``), so no tie is left for it to break differently.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("finetuner_evaluation")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from finetuner_evaluation import METRIC_NAMES  # noqa: E402
from finetuner_evaluation._graded import graded_metrics, judged_gains  # noqa: E402
from finetuner_evaluation._metrics import per_query_metrics  # noqa: E402

EXAMPLES = settings(max_examples=60, deadline=None)

BINARY = [name for name in METRIC_NAMES if name != "dcg_at_k"]  # the ones bounded by 1
GROWING_BINARY = ["recall_at_k", "hit_at_k", "reciprocal_rank", "dcg_at_k"]
GROWING_GRADED = ["recall", "hit", "mrr", "dcg"]


@st.composite
def binary_rankings(draw):
    """``(queries, K)`` relevance and each query's ``R``: no more hits than relevant documents
    (the index holds ``R`` of them, possibly fewer found than ``R``, or more than ``K``)."""
    queries = draw(st.integers(1, 6))
    width = draw(st.integers(1, 12))
    rows, relevant = [], []
    for _ in range(queries):
        row = draw(st.lists(st.booleans(), min_size=width, max_size=width))
        relevant.append(sum(row) + draw(st.integers(0 if any(row) else 1, 8)))
        rows.append(row)
    return np.array(rows, dtype=bool), np.array(relevant, dtype=np.int64)


@st.composite
def judged_runs(draw):
    """Graded judgments of a small corpus for a few queries, and each query's ranking of the
    corpus (a random permutation, cut at a random length)."""
    docs = draw(st.integers(1, 12))
    queries = draw(st.integers(1, 5))
    grade = st.integers(0, 3)
    qrels, rankings = {}, []
    for q in range(queries):
        judged = draw(st.dictionaries(st.integers(0, docs - 1), grade, max_size=docs))
        if judged:
            qrels[f"q{q}"] = {f"d{d}": g for d, g in judged.items()}
        order = draw(st.permutations(range(docs)))
        rankings.append(list(order[: draw(st.integers(1, docs))]))
    return qrels, rankings, docs


def _positions(rankings, width):
    positions = np.full((len(rankings), width), -1, dtype=np.int64)
    for row, ranking in enumerate(rankings):
        positions[row, : len(ranking)] = ranking[:width]
    return positions


def _graded(qrels, rankings, docs, cutoffs):
    width = max(cutoffs)
    gains, ideal, relevant = judged_gains(
        _positions(rankings, width),
        [f"q{q}" for q in range(len(rankings))],
        [f"d{d}" for d in range(docs)],
        qrels,
        exclude_self=False,
    )
    return graded_metrics(gains, ideal, cutoffs, num_relevant=relevant)


def _binary_at(relevance, relevant, k):
    values = per_query_metrics(relevance[:, :k], relevant)
    values["hits"] = relevance[:, :k].sum(axis=1)
    return values


# --- bounds ---------------------------------------------------------------------------------


@EXAMPLES
@given(binary_rankings())
def test_binary_metrics_stay_within_their_bounds(ranking):
    relevance, relevant = ranking
    k = relevance.shape[1]
    values = _binary_at(relevance, relevant, k)
    for name in BINARY:
        assert np.all((values[name] >= 0) & (values[name] <= 1 + 1e-12)), name
    hits = values["hits"]
    assert np.allclose(values["precision_at_k"] * k, hits)
    assert np.allclose(values["recall_at_k"] * relevant, hits)
    assert np.all(values["precision_at_k"] <= np.minimum(relevant, k) / k + 1e-12)
    assert np.array_equal(values["hit_at_k"], (hits > 0).astype(float))
    assert np.array_equal(values["reciprocal_rank"] > 0, hits > 0)
    assert np.all(values["reciprocal_rank"][hits > 0] >= 1 / k)
    ideal = np.array([sum(1 / math.log2(i + 2) for i in range(min(r, k))) for r in relevant])
    assert np.all(values["dcg_at_k"] <= ideal + 1e-12)
    p, r, f1 = values["precision_at_k"], values["recall_at_k"], values["f1_score_at_k"]
    assert np.all(f1 <= np.maximum(p, r) + 1e-12) and np.all(f1 >= np.minimum(p, r) - 1e-12)


@EXAMPLES
@given(binary_rankings())
def test_a_ranking_with_every_relevant_document_first_scores_one(ranking):
    relevance, relevant = ranking
    k = relevance.shape[1]
    ideal = np.arange(k)[None, :] < np.minimum(relevant, k)[:, None]
    values = per_query_metrics(ideal, relevant)
    for name in ("average_precision", "ndcg_at_k", "reciprocal_rank", "hit_at_k"):
        assert np.allclose(values[name], 1.0), name


@EXAMPLES
@given(judged_runs(), st.integers(1, 14))
def test_graded_metrics_stay_within_their_bounds(run, k):
    qrels, rankings, docs = run
    values = _graded(qrels, rankings, docs, (k,))
    scored = ~np.isnan(values[f"ndcg_at_{k}"])
    for name in ("precision", "recall", "f1_score", "hit", "map", "mrr", "ndcg"):
        column = values[f"{name}_at_{k}"][scored]
        assert np.all((column >= 0) & (column <= 1 + 1e-12)), name
    assert np.all(values[f"dcg_at_{k}"][scored] >= 0)
    # Exactly the queries with a judgment above 0 are scored.
    expected = [any(g > 0 for g in qrels.get(f"q{q}", {}).values()) for q in range(len(rankings))]
    assert scored.tolist() == expected


# --- monotone in k --------------------------------------------------------------------------


@EXAMPLES
@given(binary_rankings())
def test_hits_recall_hit_rr_and_dcg_never_fall_as_k_grows(ranking):
    relevance, relevant = ranking
    previous = None
    for k in range(1, relevance.shape[1] + 1):
        values = _binary_at(relevance, relevant, k)
        if previous is not None:
            for name in [*GROWING_BINARY, "hits"]:
                assert np.all(values[name] >= previous[name] - 1e-12), (name, k)
        previous = values


@EXAMPLES
@given(judged_runs())
def test_graded_recall_hit_mrr_and_dcg_never_fall_as_k_grows(run):
    qrels, rankings, docs = run
    cutoffs = tuple(range(1, docs + 3))  # past the corpus too: missing results gain nothing
    values = _graded(qrels, rankings, docs, cutoffs)
    for name in GROWING_GRADED:
        table = np.stack([values[f"{name}_at_{k}"] for k in cutoffs], axis=1)
        scored = ~np.isnan(table[:, 0])
        assert np.all(np.diff(table[scored], axis=1) >= -1e-12), name


@EXAMPLES
@given(judged_runs())
def test_graded_binary_metrics_are_those_of_the_binary_relevance(run):
    qrels, rankings, docs = run
    k = docs
    values = _graded(qrels, rankings, docs, (k,))
    scored = ~np.isnan(values[f"precision_at_{k}"])
    if not scored.any():
        return
    relevance = np.zeros((len(rankings), k), dtype=bool)
    relevant = np.zeros(len(rankings), dtype=np.int64)
    for q, ranking in enumerate(rankings):
        judged = qrels.get(f"q{q}", {})
        relevance[q, : len(ranking)] = [judged.get(f"d{d}", 0) > 0 for d in ranking]
        relevant[q] = sum(g > 0 for g in judged.values())
    binary = per_query_metrics(relevance[scored], relevant[scored])
    pairs = {"precision": "precision_at_k", "recall": "recall_at_k", "map": "average_precision"}
    for graded, name in {**pairs, "mrr": "reciprocal_rank", "hit": "hit_at_k"}.items():
        assert np.allclose(values[f"{graded}_at_{k}"][scored], binary[name]), graded


# --- against ir-measures --------------------------------------------------------------------


def _ir_measures(qrels, rankings, cutoffs):
    ir_measures = pytest.importorskip("ir_measures")
    from ir_measures import AP, RR, P, R, Success, nDCG

    run = {
        f"q{q}": {f"d{d}": float(len(ranking) - rank) for rank, d in enumerate(ranking)}
        for q, ranking in enumerate(rankings)
    }
    measures = [m @ k for k in cutoffs for m in (P, R, RR, nDCG, Success, AP)]
    values: dict[str, dict[str, float]] = {}
    for row in ir_measures.iter_calc(measures, qrels, run):
        values.setdefault(row.query_id, {})[str(row.measure)] = row.value
    return values


@settings(max_examples=40, deadline=None)
@given(judged_runs(), st.sets(st.integers(1, 14), min_size=1, max_size=3))
def test_graded_metrics_agree_with_ir_measures(run, ks):
    qrels, rankings, docs = run
    cutoffs = tuple(sorted(ks))
    ours = _graded(qrels, rankings, docs, cutoffs)
    theirs = _ir_measures(qrels, rankings, cutoffs)
    for q in range(len(rankings)):
        judged = qrels.get(f"q{q}", {})
        r = sum(g > 0 for g in judged.values())
        if r == 0:
            continue  # not scored here; trec_eval gives it zeros
        got = theirs[f"q{q}"]
        for k in cutoffs:
            expected = {
                "precision": got[f"P@{k}"],
                "recall": got[f"R@{k}"],
                "mrr": got[f"RR@{k}"],
                "ndcg": got[f"nDCG@{k}"],
                "hit": got[f"Success@{k}"],
                "map": got[f"AP@{k}"] * r / min(r, k),
            }
            for name, value in expected.items():
                assert ours[f"{name}_at_{k}"][q] == pytest.approx(value, abs=1e-6), (name, k)


@settings(max_examples=40, deadline=None)
@given(binary_rankings())
def test_binary_metrics_agree_with_ir_measures(ranking):
    relevance, relevant = ranking
    k = relevance.shape[1]
    # Documents d0.. are ranked; relevant documents that were not found are judged but unranked.
    qrels, rankings = {}, []
    for q, (row, r) in enumerate(zip(relevance, relevant)):
        judged = {f"d{i}": 1 for i, rel in enumerate(row) if rel}
        judged.update({f"missing{j}": 1 for j in range(int(r) - int(row.sum()))})
        qrels[f"q{q}"] = judged
        rankings.append(list(range(k)))
    theirs = _ir_measures(qrels, rankings, (k,))
    ours = per_query_metrics(relevance, relevant)
    for q in range(len(rankings)):
        got = theirs[f"q{q}"]
        r = int(relevant[q])
        p, rec = got[f"P@{k}"], got[f"R@{k}"]
        expected = {
            "precision_at_k": p,
            "recall_at_k": rec,
            "f1_score_at_k": 2 * p * rec / (p + rec) if p + rec > 0 else 0.0,
            "hit_at_k": got[f"Success@{k}"],
            "average_precision": got[f"AP@{k}"] * r / min(r, k),
            "reciprocal_rank": got[f"RR@{k}"],
            "ndcg_at_k": got[f"nDCG@{k}"],
        }
        for name, value in expected.items():
            assert ours[name][q] == pytest.approx(value, abs=1e-9), name
