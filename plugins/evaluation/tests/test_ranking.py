"""Ranking details: ties, chunking, padding, distances, and dcg by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from oracle import brute_force_ranking, labelled_clusters

from finetuner_evaluation import DISTANCES, METRIC_NAMES, evaluate_embeddings


def _exact_vectors(n, rng):
    """Rows with four entries of +-1 (norm 2): normalising and every dot product are exact in
    float32, so equal vectors give bit-equal scores however the search is chunked."""
    rows = np.zeros((n, 8), dtype=np.float32)
    for row in rows:
        row[rng.choice(8, size=4, replace=False)] = rng.choice([-1.0, 1.0], size=4)
    return rows


@pytest.mark.parametrize("distance", DISTANCES)
def test_equal_scores_go_to_the_lower_index_position(distance):
    a = [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    b = [1.0, -1.0, 1.0, -1.0, 0.0, 0.0, 0.0, 0.0]
    c = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    index = np.array([c, a, b, a, c, a, b, a], dtype=np.float32)
    query = np.array([a], dtype=np.float32)
    labels = ["c", "a", "b", "a", "c", "a", "b", "a"]

    result = evaluate_embeddings(
        query, ["a"], index, labels, limit=6, distance=distance, return_details=True
    )

    # a ties four ways; b and c tie as well (both orthogonal to a, both at the same distance).
    assert result.indices.tolist() == [[1, 3, 5, 7, 0, 2]]


@pytest.mark.parametrize("chunk_rows", [1, 2, 3])
def test_ties_hold_across_chunk_boundaries_and_at_the_cut_off(chunk_rows):
    # 40 equal vectors: whichever chunk a tied item sits in, the lowest positions win,
    # including when the limit cuts through the tie (torch.topk alone picks arbitrarily).
    index = np.ones((40, 4), dtype=np.float32)
    index[::5] = [1.0, -1.0, 1.0, -1.0]
    query = np.ones((1, 4), dtype=np.float32)
    labels = np.zeros(40, dtype=int)

    for rows in (chunk_rows, None):
        result = evaluate_embeddings(
            query, [0], index, labels, limit=5, _chunk_rows=rows, return_details=True
        )
        assert result.indices.tolist() == [[1, 2, 3, 4, 6]]


def test_a_wide_tie_inside_one_chunk_keeps_the_lowest_positions():
    index = np.zeros((5000, 2), dtype=np.float32)
    index[:, 0] = 1.0
    index[::7, 1] = 1.0  # 715 equal best matches spread over the chunk
    result = evaluate_embeddings(
        np.array([[0.0, 1.0]]), [0], index, np.zeros(5000, int), limit=5, return_details=True
    )
    assert result.indices.tolist() == [[0, 7, 14, 21, 28]]


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("with_index", [False, True])
def test_small_chunks_give_the_same_results_as_one_chunk(distance, with_index):
    rng = np.random.default_rng(3)
    points = _exact_vectors(150, rng)  # many exact ties
    labels = rng.integers(0, 6, size=150)
    args = (points[:70], labels[:70], points, labels) if with_index else (points, labels)
    kwargs = {"query_ids": list(range(70)), "index_ids": list(range(150))} if with_index else {}

    whole = evaluate_embeddings(
        *args, **kwargs, limit=12, distance=distance, return_details=True, _chunk_rows=10_000
    )
    for rows in (5, 13, 64):
        chunked = evaluate_embeddings(
            *args, **kwargs, limit=12, distance=distance, return_details=True, _chunk_rows=rows
        )
        np.testing.assert_array_equal(chunked.indices, whole.indices)
        np.testing.assert_array_equal(chunked.scores, whole.scores)
        assert chunked.metrics == whole.metrics
    assert whole.indices.tolist() == brute_force_ranking(
        args[0],
        args[2] if with_index else points,
        distance,
        12,
        {(i, i) for i in range(150)},
    )


def test_small_chunks_on_float_data_rank_alike():
    rng = np.random.default_rng(5)
    points, labels = labelled_clusters(300, 16, 8, rng)
    whole = evaluate_embeddings(points, labels, return_details=True)
    chunked = evaluate_embeddings(points, labels, return_details=True, _chunk_rows=17)
    np.testing.assert_array_equal(chunked.indices, whole.indices)
    np.testing.assert_allclose(chunked.scores, whole.scores, rtol=0, atol=1e-6)
    assert chunked.metrics == pytest.approx(whole.metrics)


def test_precision_is_padded_when_the_index_is_smaller_than_the_limit():
    index = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], dtype=np.float32)
    result = evaluate_embeddings(
        np.array([[1.0, 0.0]]), ["x"], index, ["x", "x", "y"], limit=10, return_details=True
    )
    assert result.indices.tolist() == [[0, 1, 2] + [-1] * 7]
    assert np.isnan(result.scores[0, 3:]).all()
    assert result.metrics["precision_at_k"] == pytest.approx(2 / 10)
    assert result.metrics["recall_at_k"] == 1.0
    assert result.metrics["average_precision"] == 1.0  # min(R, k) = 2 hits at ranks 1 and 2
    assert result.metrics["f1_score_at_k"] == pytest.approx(2 * 0.2 * 1.0 / 1.2)


def test_self_search_pads_when_exclusion_leaves_fewer_than_limit():
    points = np.eye(3, dtype=np.float32)
    result = evaluate_embeddings(points, [0, 0, 1], limit=5, return_details=True)
    assert result.indices[:, 2:].tolist() == [[-1, -1, -1]] * 3
    assert result.metrics["precision_at_k"] == pytest.approx(1 / 5)  # 2 scored queries, 1 hit


def test_dcg_and_every_metric_by_hand():
    # Points on a line; the query at 0 ranks the index by position: 1, 2, 3, 4, 5, 6.
    index = np.array([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0]], dtype=np.float32)
    labels = ["n", "y", "n", "y", "n", "y"]
    metrics = evaluate_embeddings(
        np.array([[0.0]]), ["y"], index, labels, limit=4, distance="euclidean"
    )
    # rel = [0, 1, 0, 1], R = 3, k = 4
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    expected = {
        "precision_at_k": 2 / 4,
        "recall_at_k": 2 / 3,
        "f1_score_at_k": 2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3),
        "hit_at_k": 1.0,
        "average_precision": (1 / 2 + 2 / 4) / 3,
        "reciprocal_rank": 1 / 2,
        "dcg_at_k": dcg,
        "ndcg_at_k": dcg / ideal,
    }
    assert list(metrics) == list(METRIC_NAMES)
    assert all(type(v) is float for v in metrics.values())
    assert metrics == pytest.approx(expected)


def test_reported_scores_per_distance():
    query = np.array([[3.0, 4.0]], dtype=np.float32)
    index = np.array([[3.0, 4.0], [0.0, 4.0], [6.0, 8.0]], dtype=np.float32)
    labels = [0, 0, 0]
    got = {
        d: evaluate_embeddings(query, [0], index, labels, limit=3, distance=d, return_details=True)
        for d in DISTANCES
    }
    assert got["cosine"].indices.tolist() == [[0, 2, 1]]
    np.testing.assert_allclose(got["cosine"].scores, [[1.0, 1.0, 0.8]], atol=1e-6)
    assert got["euclidean"].indices.tolist() == [[0, 1, 2]]
    np.testing.assert_allclose(got["euclidean"].scores, [[0.0, 3.0, 5.0]], atol=1e-5)
    np.testing.assert_allclose(got["sqeuclidean"].scores, [[0.0, 9.0, 25.0]], atol=1e-4)


def test_torch_float64_and_numpy_inputs_agree():
    rng = np.random.default_rng(9)
    points, labels = labelled_clusters(120, 8, 5, rng)
    from_numpy = evaluate_embeddings(points, labels)
    from_torch = evaluate_embeddings(
        torch.from_numpy(points).double().requires_grad_(), torch.from_numpy(labels)
    )
    assert from_torch == pytest.approx(from_numpy)


def test_no_scorable_query_gives_nan_means_and_counts_them_all():
    points = np.eye(4, dtype=np.float32)
    result = evaluate_embeddings(points, ["a", "b", "c", "d"], return_details=True)
    assert result.num_queries_scored == 0
    assert result.num_queries_skipped == 4
    assert all(math.isnan(v) for v in result.metrics.values())
