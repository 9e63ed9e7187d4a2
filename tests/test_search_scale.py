"""Exact search sized by a memory budget: the same results at any chunk size, bounded memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from finetuner.search import (
    Embeddings,
    empty_exclusions,
    exact_top_k,
    exclusions_by_id,
    exclusions_by_position,
    plan_chunks,
    recall_against_exact,
)

ROOT = Path(__file__).resolve().parents[1]


def unchunked(queries, index, limit, distance, exclusions):
    """The whole score matrix at once, sorted by (score descending, position ascending)."""
    q, x = torch.from_numpy(queries), torch.from_numpy(index)
    if distance == "cosine":
        scores = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(x, dim=1).T
    else:
        scores = 2.0 * q @ x.T - (x * x).sum(dim=1)
    scores = scores.numpy().copy()
    scores[exclusions.query_pos, exclusions.index_pos] = -np.inf
    k = min(limit, index.shape[0])
    positions = np.broadcast_to(np.arange(index.shape[0]), scores.shape)
    order = np.lexsort((positions, -scores), axis=-1)[:, :k]
    best = np.take_along_axis(scores, order, 1)
    return np.where(np.isneginf(best), -1, order)


def tied_data(seed, num_queries=23, num_index=57):
    """Rows of dimension 8 with four entries of +-1 (norm 2): normalising and every dot product
    are exact in float32, so equal rows give bit-equal scores whatever the tile; 70 such rows
    among 57 index rows leave many exact ties, and rows 10-19 copy row 0."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((num_queries + num_index, 8), dtype=np.float32)
    for row in rows:
        row[rng.choice(8, size=4, replace=False)] = rng.choice([-1.0, 1.0], size=4)
    queries, index = rows[:num_queries], rows[num_queries:].copy()
    index[10:20] = index[0]
    return queries, index


BUDGETS = [1, 2_000, 20_000, 200_000, None]  # bytes; 1 forces 1 x 1 tiles


@pytest.mark.parametrize("distance", ["cosine", "euclidean", "sqeuclidean"])
@pytest.mark.parametrize("limit", [1, 7, 57, 80])  # 57 and 80: k >= corpus size
@pytest.mark.parametrize("budget", BUDGETS)
def test_any_budget_gives_the_unchunked_results(distance, limit, budget):
    queries, index = tied_data(0)
    kwargs = {} if budget is None else {"memory_budget": budget}
    for exclusions in (
        empty_exclusions(),
        exclusions_by_id(np.arange(23) % 5, np.arange(57) % 7),
    ):
        scores, positions = exact_top_k(
            Embeddings(queries, "q"), Embeddings(index, "x"), limit, distance, exclusions, **kwargs
        )
        expected = unchunked(queries, index, limit, distance, exclusions)
        np.testing.assert_array_equal(positions, expected)
        assert positions.shape == (23, min(limit, 57))
        assert np.isneginf(scores[positions < 0]).all()


@pytest.mark.parametrize("rows", [(1, 1), (3, 4), (5, 57), (23, 2)])
def test_fixed_chunk_sizes_and_self_search_match_too(rows):
    queries, _ = tied_data(1)
    emb = Embeddings(queries, "q")
    exclusions = exclusions_by_position(23)
    _, positions = exact_top_k(
        emb, emb, 6, "cosine", exclusions, query_rows=rows[0], index_rows=rows[1]
    )
    np.testing.assert_array_equal(positions, unchunked(queries, queries, 6, "cosine", exclusions))
    assert not (positions == np.arange(23)[:, None]).any()


def test_the_plan_fits_the_budget_and_shrinks_with_it():
    budget = 512 * 2**20
    query_rows, index_rows = plan_chunks(10_000, 1_000_000, 384, 20, budget)
    assert query_rows == 1_024 and 10_000 <= index_rows <= 30_000
    tile = query_rows * index_rows * 4
    assert tile < budget / 4  # the float32 score tile leaves room for the rest
    small = plan_chunks(10_000, 1_000_000, 384, 20, 8 * 2**20)
    assert small[0] < query_rows and small[0] * small[1] < query_rows * index_rows
    assert plan_chunks(3, 5, 384, 20, budget) == (3, 5)  # never larger than the data
    assert plan_chunks(10, 100, 8, 5, 1) == (1, 1)  # a floor of one row each


def test_recall_against_exact_counts_the_share_found():
    queries, index = tied_data(2, num_queries=40, num_index=60)
    q, x = Embeddings(queries, "q"), Embeddings(index, "x")
    none = empty_exclusions()
    _, exact = exact_top_k(q, x, 4, "euclidean", none)
    assert recall_against_exact(q, x, exact, 4, "euclidean", none) == (1.0, 40)
    half = exact.copy()
    half[:, 2:] = -1
    assert recall_against_exact(q, x, half, 4, "euclidean", none)[0] == pytest.approx(0.5)
    recall, checked = recall_against_exact(q, x, half, 4, "euclidean", none, sample_size=9)
    assert checked == 9 and recall == pytest.approx(0.5)


def test_recall_sample_keeps_each_sampled_querys_exclusions():
    queries, _ = tied_data(3, num_queries=30)
    emb = Embeddings(queries, "q")
    exclusions = exclusions_by_position(30)
    _, exact = exact_top_k(emb, emb, 3, "cosine", exclusions)
    recall, checked = recall_against_exact(
        emb, emb, exact, 3, "cosine", exclusions, sample_size=11, seed=4
    )
    assert (recall, checked) == (1.0, 11)  # a sample searched with its own rows excluded
    sub = exclusions.subset(np.array([2, 5, 9]))
    assert sub.query_pos.tolist() == [0, 1, 2] and sub.index_pos.tolist() == [2, 5, 9]


MEMORY_SCRIPT = """
import json, sys, time
import numpy as np
from finetuner.search import Embeddings, empty_exclusions, exact_top_k

def status_kib(field):
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(fields[field].split()[0])

num_index, budget = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
index = rng.standard_normal((num_index, 384), dtype=np.float32)
queries = rng.standard_normal((2_000, 384), dtype=np.float32)
try:  # start the peak afresh, so creating the data is not counted
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
except OSError:
    pass
before = status_kib("VmRSS")
exact_top_k(Embeddings(queries, "q"), Embeddings(index, "x"), 20, "cosine", empty_exclusions(),
            memory_budget=budget)
print(json.dumps({"extra_mib": (status_kib("VmHWM") - before) / 1024}))
"""


def extra_peak_mib(num_index: int, budget: int) -> float:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "core"), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(num_index), str(budget)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["extra_mib"]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_extra_memory_stays_within_the_budget_as_the_index_grows():
    # 2,000 queries; an index of 50,000 and of 200,000 rows (300 MB) under a 64 MiB budget. The
    # unchunked score matrix would be 400 MB and 1.6 GB; the growth must not follow the index.
    budget = 64 * 2**20
    small, large = extra_peak_mib(50_000, budget), extra_peak_mib(200_000, budget)
    # The budget, plus slack for the result, allocator and library overhead.
    assert small < 64 + 48 and large < 64 + 48, (small, large)
    assert large < small + 32, (small, large)
