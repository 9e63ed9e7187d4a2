"""What the run report shows of each query: its nDCG, and its top results before and after.

Recorded at the ``before`` and ``after`` evaluations through ``ctx.record_query_results``, for
at most :data:`MAX_QUERIES` queries (evenly spread over the evaluation's queries) and their
first :data:`MAX_RESULTS` results.
"""

from __future__ import annotations

__all__ = ["MAX_QUERIES", "MAX_RESULTS", "query_records", "spread_rows"]

import math
from typing import Any

import numpy as np

MAX_QUERIES = 1000
MAX_RESULTS = 5


def spread_rows(count: int) -> np.ndarray:
    """The query rows kept: all of them, or :data:`MAX_QUERIES` spread evenly."""
    if count <= MAX_QUERIES:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, MAX_QUERIES).astype(np.int64))


def query_records(result: Any, queries: Any, index: Any) -> list[dict[str, Any]]:
    """One record per kept query of *result* (an ``EvaluationResult`` with details):
    ``id``, ``query``, ``score`` (nDCG, ``None`` when unscorable), ``results`` and
    ``relevant``, the results described by the data set they come from; ``[]`` for a result
    without per-query scores."""
    if getattr(result, "query_ndcg", None) is None or getattr(result, "relevant", None) is None:
        return []
    source = index if index is not None else queries
    records = []
    for row in spread_rows(len(queries)):
        row = int(row)
        found = [int(j) for j in result.indices[row][:MAX_RESULTS] if j >= 0]
        score = float(result.query_ndcg[row])
        records.append(
            {
                "id": str(queries.ids[row]),
                "query": queries.describe(row),
                "score": None if math.isnan(score) else score,
                "results": [source.describe(j) for j in found],
                "relevant": [bool(flag) for flag in result.relevant[row][: len(found)]],
            }
        )
    return records
