"""Approximate search: close enough to exact at the defaults, labelled, and picked by auto."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import finetuner_evaluation._evaluate as evaluate_module
from finetuner_evaluation import evaluate_embeddings


@pytest.fixture(scope="module")
def clustered():
    """20,000 x 64 index, 1,000 queries, 200 labels: Gaussian centres plus noise (sigma 1.0)."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(200, 64, generator=g)
    index_labels = torch.randint(0, 200, (20_000,), generator=g)
    query_labels = torch.randint(0, 200, (1_000,), generator=g)
    index = centres[index_labels] + torch.randn(20_000, 64, generator=g)
    queries = centres[query_labels] + torch.randn(1_000, 64, generator=g)
    return queries, query_labels.numpy(), index, index_labels.numpy()


@pytest.fixture(scope="module")
def exact_recall(clustered):
    return evaluate_embeddings(*clustered)["recall_at_k"]


def test_annoy_defaults_reach_95_percent_of_exact_recall(clustered, exact_recall):
    result = evaluate_embeddings(*clustered, search="annoy", return_details=True)
    assert result.approximate is True
    assert result.search == "annoy"
    assert result.metrics["recall_at_k"] >= 0.95 * exact_recall


def test_the_recall_check_is_sharp_enough_to_catch_a_stingy_search(clustered, exact_recall):
    stingy = evaluate_embeddings(*clustered, search="annoy", n_trees=1, search_k=20)
    assert stingy["recall_at_k"] < 0.95 * exact_recall


@pytest.mark.parametrize("distance", ["cosine", "euclidean", "sqeuclidean"])
def test_annoy_finds_the_exact_results_on_easy_data(distance):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 16)) * 4
    labels = np.repeat(np.arange(20), 15)
    points = (centres[labels] + 0.5 * rng.normal(size=(300, 16))).astype(np.float32)
    exact = evaluate_embeddings(points, labels, limit=10, distance=distance, return_details=True)
    approx = evaluate_embeddings(
        points, labels, limit=10, distance=distance, search="annoy", return_details=True
    )
    # Same candidates, rescored exactly: identical positions and scores, self still excluded.
    np.testing.assert_array_equal(approx.indices, exact.indices)
    np.testing.assert_allclose(approx.scores, exact.scores, rtol=1e-5, atol=1e-5)
    assert not (approx.indices == np.arange(300)[:, None]).any()
    assert approx.metrics == pytest.approx(dict(exact.metrics))


def test_annoy_excludes_by_id_even_when_several_index_rows_share_it():
    index = np.array([[1.0, 0.0], [1.0, 0.01], [1.0, 0.02], [0.0, 1.0]], dtype=np.float32)
    result = evaluate_embeddings(
        np.array([[1.0, 0.0]]),
        ["a"],
        index,
        ["a", "a", "a", "b"],
        limit=2,
        search="annoy",
        query_ids=["q"],
        index_ids=["q", "q", "x", "y"],
        return_details=True,
    )
    assert result.indices.tolist() == [[2, 3]]
    assert result.metrics["recall_at_k"] == 1.0  # R = 1: the two rows with id "q" do not count


def test_auto_is_exact_for_small_indexes_and_annoy_for_large_ones(clustered, monkeypatch):
    small = evaluate_embeddings(*clustered, search="auto", return_details=True)
    assert (small.search, small.approximate) == ("exact", False)
    monkeypatch.setattr(evaluate_module, "AUTO_ANNOY_MIN_INDEX_ROWS", 20_000)
    large = evaluate_embeddings(*clustered, search="auto", return_details=True)
    assert (large.search, large.approximate) == ("annoy", True)


def test_annoy_reports_its_recall_against_exact_search(clustered):
    approx = evaluate_embeddings(*clustered, search="annoy", return_details=True)
    exact = evaluate_embeddings(*clustered, return_details=True)
    assert exact.annoy_recall is None
    found = [
        len(set(a) & set(e)) / len(e) for a, e in zip(approx.indices, exact.indices, strict=True)
    ]
    # 1,000 queries: the check runs on all of them, so it is the full mean.
    assert approx.annoy_recall == pytest.approx(np.mean(found))
    assert 0.9 <= approx.annoy_recall <= 1.0
    stingy = evaluate_embeddings(
        *clustered, search="annoy", n_trees=1, search_k=20, return_details=True
    )
    assert stingy.annoy_recall < approx.annoy_recall
