"""All metrics against ir-measures on random labelled data, for every search set-up and distance."""

from __future__ import annotations

import numpy as np
import pytest
from oracle import brute_force_ranking, labelled_clusters, oracle_metrics

from finetuner_evaluation import METRIC_NAMES, evaluate_embeddings

LIMIT = 10


def _self_search(exclude_self):
    rng = np.random.default_rng(7)
    points, labels = labelled_clusters(200, 6, 40, rng)
    excluded = {(i, i) for i in range(200)} if exclude_self else set()
    call = {"query_embeddings": points, "query_labels": labels.tolist()}
    oracle = {"queries": points, "index": points, "qlab": labels, "ilab": labels}
    return call, oracle, excluded


def _index_search(with_ids):
    rng = np.random.default_rng(11)
    index, index_labels = labelled_clusters(300, 6, 30, rng)
    index_labels = np.array([f"label-{v}" for v in index_labels])
    index_ids = np.array([f"doc-{j}" for j in range(300)], dtype=object)
    index_ids[7] = "doc-3"  # one id on two index rows: both are excluded for query doc-3
    from_index = rng.choice(300, size=60, replace=False)
    from_index[0] = 3
    fresh, fresh_labels = labelled_clusters(40, 6, 30, rng)
    fresh_labels = np.array([f"label-{v}" for v in fresh_labels])
    fresh_labels[:5] = "label-nowhere"  # R = 0: these queries are skipped
    queries = np.concatenate([index[from_index], fresh])
    query_labels = np.concatenate([index_labels[from_index], fresh_labels])
    query_ids = [f"doc-{j}" for j in from_index] + [f"new-{j}" for j in range(40)]
    call = {
        "query_embeddings": queries,
        "query_labels": list(query_labels),
        "index_embeddings": index,
        "index_labels": index_labels,
    }
    excluded = set()
    if with_ids:
        call["query_ids"] = query_ids
        call["index_ids"] = index_ids
        excluded = {
            (i, j)
            for i, qid in enumerate(query_ids)
            for j, iid in enumerate(index_ids)
            if qid == iid
        }
        assert len(excluded) == 61
    oracle = {"queries": queries, "index": index, "qlab": query_labels, "ilab": index_labels}
    return call, oracle, excluded


SETUPS = {
    "self, exclude_self": lambda: _self_search(True),
    "self, keep self": lambda: _self_search(False),
    "index, ids excluded": lambda: _index_search(True),
    "index, no ids": lambda: _index_search(False),
}


@pytest.mark.parametrize("distance", ["cosine", "euclidean", "sqeuclidean"])
@pytest.mark.parametrize("setup", list(SETUPS))
def test_metrics_and_ranking_match_independent_oracle(setup, distance):
    call, data, excluded = SETUPS[setup]()
    exclude_self = setup != "self, keep self"

    result = evaluate_embeddings(
        **call, limit=LIMIT, distance=distance, exclude_self=exclude_self, return_details=True
    )

    expected_ranking = brute_force_ranking(
        data["queries"], data["index"], distance, LIMIT, excluded
    )
    assert [row[row >= 0].tolist() for row in result.indices] == expected_ranking
    expected, skipped = oracle_metrics(
        expected_ranking, data["qlab"], data["ilab"], LIMIT, excluded
    )
    assert result.num_queries_skipped == skipped
    assert result.num_queries_scored == len(expected_ranking) - skipped
    for name, value in expected.items():
        assert result.metrics[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert set(result.metrics) == set(METRIC_NAMES)


def test_the_data_covers_the_hard_cases():
    """The set-ups above really contain skipped queries, R < k and self matches."""
    call, data, _ = _self_search(True)
    counts = {label: int((data["ilab"] == label).sum()) for label in set(data["ilab"].tolist())}
    r_values = [counts[label] - 1 for label in data["qlab"]]
    assert min(r_values) == 0
    assert any(0 < r < LIMIT for r in r_values)
    assert max(r_values) > LIMIT
    result = evaluate_embeddings(**call, limit=LIMIT, return_details=True)
    assert result.num_queries_skipped == r_values.count(0) > 0


def test_self_is_counted_in_r_only_when_it_can_be_found():
    points = np.array([[0.0, 1.0], [0.0, 2.0], [5.0, 0.0]], dtype=np.float32)
    labels = ["a", "a", "b"]
    kept = evaluate_embeddings(points, labels, limit=2, exclude_self=False, return_details=True)
    dropped = evaluate_embeddings(points, labels, limit=2, exclude_self=True, return_details=True)
    # With itself in the index each "a" query finds both "a" items (R = 2); "b" finds itself.
    assert kept.metrics["recall_at_k"] == 1.0
    assert kept.num_queries_skipped == 0
    # Without itself, "a" has R = 1 and finds the other "a"; "b" has R = 0 and is skipped.
    assert dropped.metrics["recall_at_k"] == 1.0
    assert dropped.num_queries_skipped == 1
    assert dropped.indices.tolist() == [[1, 2], [0, 2], [0, 1]]
