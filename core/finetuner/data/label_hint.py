"""A warning for two-column CSV files that are probably ``item,label`` rows read as pairs.

Without ``CSVOptions(is_labeled=True)``, two columns of text are ``query,document`` pairs. A
second column with few distinct short values, each on several rows, is much more likely a
class label: training on it as documents fits a retriever to return label names.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence

from ..errors import DataWarning

__all__ = ["looks_like_labels", "warn_if_labels"]

MIN_ROWS = 4
"""Fewer rows than this tell nothing."""
MAX_LABEL_CHARS = 40
"""A longer value reads as a document, not a label."""


def looks_like_labels(items: Sequence[str], candidates: Sequence[str]) -> bool:
    """Whether *candidates* (the second column) look like labels of *items* (the first): few
    distinct short values (at most a third as many as rows), each on at least two rows, and
    fewer distinct values than the first column has."""
    counts = Counter(candidates)
    return (
        len(candidates) >= MIN_ROWS
        and len(counts) <= max(2, len(candidates) // 3)
        and min(counts.values()) >= 2
        and len(counts) < len(set(items))
        and max(len(value) for value in counts) <= MAX_LABEL_CHARS
    )


def warn_if_labels(items: Sequence[str], candidates: Sequence[str], source: str) -> None:
    """Warn (:class:`~finetuner.errors.DataWarning`) when :func:`looks_like_labels`."""
    if not looks_like_labels(items, candidates):
        return
    counts = Counter(candidates)
    shown = ", ".join(repr(value) for value, _ in counts.most_common(3))
    more = ", ..." if len(counts) > 3 else ""
    warnings.warn(
        f"{source}: the second column looks like class labels ({len(counts)} distinct values, "
        f"each on several rows: {shown}{more}), but two columns without is_labeled are read "
        "as query,document pairs. If the rows are item,label, pass "
        "csv_options=CSVOptions(is_labeled=True) (in a config file, csv_options: "
        "{is_labeled: true}; finetuner data push --labeled); if they are pairs, ignore this "
        "warning.",
        DataWarning,
        stacklevel=2,
    )
