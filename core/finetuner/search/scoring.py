"""Ranking scores for the three distances, and the one ordering rule every search uses.

A ranking score is "higher is better" for every distance, so exact and annoy search share one
top-k path:

- ``cosine``: the dot product of L2-normalised vectors.
- ``sqeuclidean`` and ``euclidean``: ``2 q.x - |x|^2``, which is ``|q|^2 - |q - x|^2``. The
  ``|q|^2`` term is the same for every candidate of a query, so leaving it out changes no ranking
  and turns the whole score into one matrix product (the query gets an extra ``-1`` column, the
  index an extra ``|x|^2`` column). Distances are recovered only for the k results kept.
"""

from __future__ import annotations

__all__ = ["order_candidates", "prepare_index", "prepare_queries", "reported_scores"]

import numpy as np
import torch
import torch.nn.functional as F


def prepare_queries(rows: torch.Tensor, distance: str) -> torch.Tensor:
    if distance == "cosine":
        return F.normalize(rows, dim=1)
    return torch.cat([2.0 * rows, rows.new_full((rows.shape[0], 1), -1.0)], dim=1)


def prepare_index(rows: torch.Tensor, distance: str) -> torch.Tensor:
    if distance == "cosine":
        return F.normalize(rows, dim=1)
    return torch.cat([rows, (rows * rows).sum(dim=1, keepdim=True)], dim=1)


def reported_scores(
    ranking: torch.Tensor,
    query_rows: torch.Tensor,
    result_rows: torch.Tensor | None,
    distance: str,
) -> torch.Tensor:
    """The score to show for kept results: cosine similarity, or the (squared) distance.

    ``ranking`` is ``(queries, k)``, ``result_rows`` the matching index rows ``(queries, k, dim)``.
    Distances are computed from the difference of the vectors, not from the ranking score, whose
    ``|q|^2 + |x|^2 - 2 q.x`` form loses digits to cancellation far from the origin. Absent
    results (ranking ``-inf``) show NaN.
    """
    missing = torch.isneginf(ranking)
    if distance == "cosine":
        out = ranking.clone()
    else:
        if result_rows is None:
            raise ValueError("reported_scores: distances need the result rows")
        difference = result_rows - query_rows.unsqueeze(1)
        out = (difference * difference).sum(dim=2)
        if distance == "euclidean":
            out.sqrt_()
    return out.masked_fill_(missing, float("nan"))


def order_candidates(
    scores: np.ndarray, positions: np.ndarray, keep: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``keep`` best candidates: higher score first, equal scores by lower position.

    Candidate matrices are small (queries x a few k), where numpy's sort is several times
    quicker than torch's on CPU.
    """
    order = np.lexsort((positions, -scores), axis=-1)[:, :keep]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(positions, order, 1)
