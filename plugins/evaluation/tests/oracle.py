"""Independent reference for the tests: brute-force float64 ranking and ir-measures metrics.

Nothing here imports finetuner_evaluation, so a bug there cannot hide in both places.
"""

from __future__ import annotations

import math

import ir_measures
import numpy as np
from ir_measures import AP, RR, P, R, Success, nDCG


def labelled_clusters(n, dim, num_labels, rng, *, spread=1.0, tail=1.2):
    """Points around one centre per label; label sizes fall off so some labels are rare."""
    weights = 1.0 / np.arange(1, num_labels + 1) ** tail
    labels = rng.choice(num_labels, size=n, p=weights / weights.sum())
    centres = rng.normal(size=(num_labels, dim))
    points = centres[labels] + spread * rng.normal(size=(n, dim))
    return points.astype(np.float32), labels


def brute_force_ranking(queries, index, distance, limit, excluded=frozenset()):
    """Per query, the best ``limit`` index positions: score descending, then position ascending."""
    q = queries.astype(np.float64)
    x = index.astype(np.float64)
    if distance == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        score = q @ x.T
    else:
        squared = ((q[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
        score = -(np.sqrt(squared) if distance == "euclidean" else squared)
    positions = np.arange(x.shape[0])
    ranking = []
    for i in range(q.shape[0]):
        order = np.lexsort((positions, -score[i]))
        kept = [int(j) for j in order if (i, int(j)) not in excluded]
        ranking.append(kept[:limit])
    return ranking


def oracle_metrics(ranking, query_labels, index_labels, limit, excluded=frozenset()):
    """Mean of the eight metrics over queries with R > 0, via ir-measures; and the skipped count.

    Follows the oracle mapping of METRICS.md: scores ``limit - rank`` are strictly decreasing,
    and ``average_precision = AP@k * R / min(R, k)``. dcg has no ir-measures twin (tested by
    hand elsewhere), so it is not returned here.
    """
    qrels, run, num_relevant = {}, {}, {}
    for i, results in enumerate(ranking):
        relevant = {
            f"d{j}"
            for j, label in enumerate(index_labels)
            if label == query_labels[i] and (i, j) not in excluded
        }
        num_relevant[f"q{i}"] = len(relevant)
        if relevant:
            qrels[f"q{i}"] = dict.fromkeys(relevant, 1)
        run[f"q{i}"] = {f"d{j}": float(limit - rank) for rank, j in enumerate(results)}
    measures = [P @ limit, R @ limit, RR @ limit, nDCG @ limit, Success @ limit, AP @ limit]
    per_query: dict[str, dict[str, float]] = {q: {} for q in qrels}
    for row in ir_measures.iter_calc(measures, qrels, run):
        per_query[row.query_id][str(row.measure)] = row.value
    totals = dict.fromkeys(
        [
            "precision_at_k",
            "recall_at_k",
            "f1_score_at_k",
            "hit_at_k",
            "average_precision",
            "reciprocal_rank",
            "ndcg_at_k",
        ],
        0.0,
    )
    for qid, values in per_query.items():
        r = num_relevant[qid]
        p = values.get(f"P@{limit}", 0.0)
        rec = values.get(f"R@{limit}", 0.0)
        totals["precision_at_k"] += p
        totals["recall_at_k"] += rec
        totals["f1_score_at_k"] += 2 * p * rec / (p + rec) if p + rec > 0 else 0.0
        totals["hit_at_k"] += values.get(f"Success@{limit}", 0.0)
        totals["average_precision"] += values.get(f"AP@{limit}", 0.0) * r / min(r, limit)
        totals["reciprocal_rank"] += values.get(f"RR@{limit}", 0.0)
        totals["ndcg_at_k"] += values.get(f"nDCG@{limit}", 0.0)
    scored = len(per_query)
    means = {name: total / scored if scored else math.nan for name, total in totals.items()}
    return means, len(ranking) - scored
