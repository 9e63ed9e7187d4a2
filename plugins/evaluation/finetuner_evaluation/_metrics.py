"""The eight retrieval metrics of METRICS.md, computed on whole result matrices at once.

Input is a ``(queries, k)`` boolean relevance matrix (rank 1 first; a missing result is simply
not relevant, which is the padding rule of ``precision_at_k``) and ``R``, the number of relevant
index items per query. Queries with ``R = 0`` cannot be scored and are left out of the means.
"""

from __future__ import annotations

__all__ = [
    "METRIC_NAMES",
    "mean_metrics",
    "per_query_metrics",
    "query_scores",
    "relevance_matrix",
]

import numpy as np

from finetuner_evaluation._constants import METRIC_NAMES


def relevance_matrix(
    positions: np.ndarray, query_labels: np.ndarray, index_labels: np.ndarray
) -> np.ndarray:
    """``rel[q, i]``: the result at rank ``i + 1`` exists and has the query's label."""
    found = positions >= 0
    result_labels = index_labels[np.where(found, positions, 0)]
    return found & (result_labels == query_labels[:, None])


def per_query_metrics(relevance: np.ndarray, num_relevant: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric per query; ``relevance`` is ``(queries, k)`` and every ``num_relevant > 0``."""
    k = relevance.shape[1]
    rel = relevance.astype(np.float64)
    ranks = np.arange(1, k + 1, dtype=np.float64)
    discounts = 1.0 / np.log2(ranks + 1.0)
    hits_so_far = np.cumsum(rel, axis=1)
    hits = hits_so_far[:, -1]
    r = num_relevant.astype(np.float64)
    ideal_count = np.minimum(num_relevant, k)

    precision = hits / k
    recall = hits / r
    denominator = precision + recall
    f1 = np.divide(
        2.0 * precision * recall,
        denominator,
        out=np.zeros_like(denominator),
        where=denominator > 0,
    )
    first_rank = np.argmax(relevance, axis=1) + 1.0
    dcg = rel @ discounts
    ideal_dcg = np.cumsum(discounts)[ideal_count - 1]
    return {
        "precision_at_k": precision,
        "recall_at_k": recall,
        "f1_score_at_k": f1,
        "hit_at_k": (hits > 0).astype(np.float64),
        "average_precision": (rel * hits_so_far / ranks).sum(axis=1) / ideal_count,
        "reciprocal_rank": np.where(hits > 0, 1.0 / first_rank, 0.0),
        "dcg_at_k": dcg,
        "ndcg_at_k": dcg / ideal_dcg,
    }


def mean_metrics(relevance: np.ndarray, num_relevant: np.ndarray) -> tuple[dict[str, float], int]:
    """Means over the queries with ``R > 0`` (NaN if there are none), and how many those are."""
    scored = num_relevant > 0
    count = int(scored.sum())
    if count == 0:
        return {name: float("nan") for name in METRIC_NAMES}, 0
    values = per_query_metrics(relevance[scored], num_relevant[scored])
    return {name: float(values[name].mean()) for name in METRIC_NAMES}, count


def query_scores(relevance: np.ndarray, num_relevant: np.ndarray, name: str) -> np.ndarray:
    """The metric *name* of every query, NaN for the queries with ``R = 0``."""
    scores = np.full(relevance.shape[0], np.nan)
    scored = num_relevant > 0
    if scored.any():
        scores[scored] = per_query_metrics(relevance[scored], num_relevant[scored])[name]
    return scores
