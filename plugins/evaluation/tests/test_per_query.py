"""The per-query results the evaluation records for the run report (``queries.json``)."""

from __future__ import annotations

import numpy as np
import pytest

from finetuner.testing import make_tiny_data, run_recorded_fit
from finetuner_evaluation import EvaluationCallback, _per_query, evaluate_embeddings


def test_each_querys_ndcg_averages_to_the_published_metric(tmp_path):
    # two of the 40 queries have a label of their own: they cannot be scored
    data = make_tiny_data(seed=1) + make_tiny_data(num_classes=2, per_class=1, seed=5)
    data = [(x, y if i < 40 else 10 + i) for i, (x, y) in enumerate(data)]
    callback = EvaluationCallback(query_data=data, limit=4)
    run = run_recorded_fit(tmp_path, callbacks=[callback], epochs=1).run
    results = run.query_results()
    assert set(results) == {"mlp"} and set(results["mlp"]) == {"before", "after"}
    for stage in ("before", "after"):
        recorded = results["mlp"][stage]
        assert recorded["metric"] == "ndcg_at_k" and len(recorded["queries"]) == 42
        scores = [q["score"] for q in recorded["queries"]]
        assert scores[40:] == [None, None]
        published = run.metrics()[stage]["mlp_ndcg_at_k"]
        assert np.mean(scores[:40]) == pytest.approx(published, abs=1e-12)
        first = recorded["queries"][0]
        assert first["id"] == "query_data[0]" and len(first["results"]) == 4
        labels = [int(r.split("label ")[1].rstrip(")")) for r in first["results"]]
        assert first["relevant"] == [label == 0 for label in labels]


def test_at_most_max_queries_are_kept_spread_over_the_queries(monkeypatch):
    monkeypatch.setattr(_per_query, "MAX_QUERIES", 7)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 4)).astype(np.float32)
    labels = np.arange(50) % 5
    result = evaluate_embeddings(vectors, labels, limit=3, return_details=True)

    class Items:  # the two things query_records reads of a data set
        ids = tuple(f"item{i}" for i in range(50))

        def __len__(self):
            return 50

        def describe(self, i):
            return f"item {i}"

    records = _per_query.query_records(result, Items(), None)
    assert [r["id"] for r in records] == [f"item{i}" for i in (0, 8, 16, 24, 32, 40, 49)]
    assert all(len(r["results"]) == 3 == len(r["relevant"]) for r in records)
