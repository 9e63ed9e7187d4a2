"""The evaluation's options and metric names, in a light module.

The callback checks its options against these when it is created, and listing plugins imports
the callback; keeping them here keeps torch, numpy and annoy out of both. The distances and
annoy defaults are the core search's (``finetuner.search``, whose constants import nothing).
"""

from __future__ import annotations

__all__ = [
    "ANNOY_RECALL_NAME",
    "AUTO_ANNOY_MIN_INDEX_ROWS",
    "DEFAULT_N_TREES",
    "DEFAULT_SEARCH_K_FACTOR",
    "DISTANCES",
    "METRIC_NAMES",
    "QRELS_METRIC_NAMES",
    "SEARCHES",
    "qrels_metric_keys",
]

from finetuner.search import DEFAULT_N_TREES, DEFAULT_SEARCH_K_FACTOR, DISTANCES

METRIC_NAMES = (
    "precision_at_k",
    "recall_at_k",
    "f1_score_at_k",
    "hit_at_k",
    "average_precision",
    "reciprocal_rank",
    "dcg_at_k",
    "ndcg_at_k",
)

#: Metrics of judged (qrels) evaluation, each published at every cut-off ``k`` as
#: ``{caption}_{name}_at_{k}``: ``map`` is ``average_precision`` and ``mrr`` is
#: ``reciprocal_rank``, both cut at ``k``; ``dcg`` and ``ndcg`` use the graded gains.
QRELS_METRIC_NAMES = ("precision", "recall", "f1_score", "hit", "map", "mrr", "dcg", "ndcg")


def qrels_metric_keys(cutoffs: list[int] | tuple[int, ...]) -> list[str]:
    """``precision_at_1, ..., ndcg_at_1, precision_at_10, ...``: every metric at each cut-off."""
    return [f"{name}_at_{k}" for k in cutoffs for name in QRELS_METRIC_NAMES]


SEARCHES = ("exact", "annoy", "auto")

#: With annoy, the callback also publishes ``{caption}_annoy_recall_at_k``: the mean share of
#: each query's exact top-k that annoy found (exact search on up to 1,000 sampled queries).
ANNOY_RECALL_NAME = "annoy_recall_at_k"

#: ``search="auto"`` switches to annoy from this many index rows on, and stays exact below.
#: Exact search costs queries x rows x dim multiply-adds and nothing up front: 10,000 queries
#: against 100,000 x 384 rows take 5 s on the reference's two cores (20 s on a slower,
#: shared two-core box), so up to about a million rows it finishes in minutes at worst and
#: its results are exact. annoy first copies every row into its forest and builds the trees
#: (about 3-4 s per 100,000 rows of dimension 384 at the defaults) and then answers in nearly
#: constant time per query; at 100,000 rows it saved little (15 s against 18 s, same box), so
#: it is worth its approximation only well beyond that.
AUTO_ANNOY_MIN_INDEX_ROWS = 1_000_000
