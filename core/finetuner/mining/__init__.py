"""Hard-negative mining: for (query, positive) pairs, find documents that the model ranks close
to the query but that are not its positives, as negatives for contrastive training.

:func:`mine_hard_negatives` is also ``finetuner.mine_hard_negatives`` and the command
``finetuner mine``; :func:`~finetuner.mining.select.select_negatives` holds the filter rules.
"""

from __future__ import annotations

from .inputs import QueryGroups, group_pairs
from .mine import MiningSummary, mine_from_embeddings, mine_hard_negatives
from .select import FILTERS, SAMPLINGS, Selection, select_negatives

__all__ = [
    "FILTERS",
    "SAMPLINGS",
    "MiningSummary",
    "QueryGroups",
    "Selection",
    "group_pairs",
    "mine_from_embeddings",
    "mine_hard_negatives",
    "select_negatives",
]
