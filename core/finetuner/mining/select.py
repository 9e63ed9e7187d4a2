"""Which of each query's search results become its hard negatives: the filters and sampling.

The input is each query's ranking (scores and corpus positions, best first) and which results
are known positives of that query. A result is dropped by the first rule that applies:

1. ``known_positive``: it is one of the query's positives (by text).
2. ``outside_range``: its rank among the query's other results (known positives take no rank;
   ranks count from 0) is below ``range_min``. Results ranked ``range_max`` or later are not
   candidates at all.
3. ``margin``: its score is at least the query's lowest positive score minus ``margin``: it is
   about as close to the query as a positive, so probably an unlabelled positive.
4. ``max_score``: its score is above ``max_score``.

Of what is left, ``sampling='top'`` takes the ``num_negatives`` best and ``'random'`` a sample
drawn with ``seed``, kept in rank order. A query left with fewer than ``num_negatives`` is
dropped: training rows need the same number of negatives each.
"""

from __future__ import annotations

__all__ = ["FILTERS", "SAMPLINGS", "Selection", "select_negatives"]

from dataclasses import dataclass

import numpy as np

FILTERS = ("known_positive", "outside_range", "margin", "max_score")
SAMPLINGS = ("top", "random")


@dataclass(frozen=True)
class Selection:
    """The chosen corpus positions ``(queries, num_negatives)`` of the kept queries (``kept``
    is one bool per query; rows of dropped queries are ``-1``) and the counts of each rule."""

    positions: np.ndarray
    kept: np.ndarray
    counts: dict[str, int]


def select_negatives(
    scores: np.ndarray,
    positions: np.ndarray,
    known: np.ndarray,
    positive_scores: np.ndarray | None = None,
    *,
    num_negatives: int,
    range_min: int = 0,
    range_max: int = 100,
    margin: float | None = None,
    max_score: float | None = None,
    sampling: str = "top",
    seed: int = 0,
) -> Selection:
    """Apply the rules of the module docstring to ``(queries, k)`` results, best first.

    *positions* is ``-1`` where a query has no more results, *known* marks known positives and
    *positive_scores* (needed with *margin*) holds each query's lowest positive score.
    """
    valid = positions >= 0
    known = known & valid
    other = valid & ~known
    rank = np.cumsum(other, axis=1) - 1
    candidate = other & (rank < range_max)
    in_range = candidate & (rank >= range_min)
    eligible = in_range.copy()
    counts = {
        "candidates": int(known.sum() + candidate.sum()),
        "known_positive": int(known.sum()),
        "outside_range": int(candidate.sum() - in_range.sum()),
    }
    if margin is not None:
        if positive_scores is None:
            raise ValueError("select_negatives: margin needs positive_scores")
        close = eligible & (scores >= (positive_scores - margin)[:, None])
        counts["margin"] = int(close.sum())
        eligible &= ~close
    else:
        counts["margin"] = 0
    if max_score is not None:
        high = eligible & (scores > max_score)
        counts["max_score"] = int(high.sum())
        eligible &= ~high
    else:
        counts["max_score"] = 0
    counts["eligible"] = int(eligible.sum())
    kept = eligible.sum(axis=1) >= num_negatives
    if sampling == "random":
        keys = np.random.default_rng(seed).random(eligible.shape)
        keys[~eligible] = 2.0  # after every eligible result
        columns = np.sort(np.argsort(keys, axis=1, kind="stable")[:, :num_negatives], axis=1)
    else:
        columns = np.argsort(~eligible, axis=1, kind="stable")[:, :num_negatives]
    chosen = np.take_along_axis(positions, columns, axis=1)
    chosen[~kept] = -1
    counts["queries_kept"] = int(kept.sum())
    counts["queries_dropped"] = int((~kept).sum())
    return Selection(chosen, kept, counts)
