"""What hard-negative mining reads: (query, positive) pairs and the corpus to mine from.

Pairs come as a list of ``(query, positive)`` tuples, a two-column CSV file (``query,document``,
an optional header row ``query,positive`` or ``query,document``), or documents with ``query``
and ``pos`` (or ``positive``) attributes, such as a docarray ``DocList``. The corpus is a list
of texts, a text file with one document per line, or a CSV file whose first column is the
document. Every text must be a non-empty string; errors name the file and line.
"""

from __future__ import annotations

__all__ = ["QueryGroups", "group_pairs", "read_corpus", "read_pairs"]

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError

_HEADERS = ({"query", "document"}, {"query", "positive"}, {"query", "pos"})


def _text(value: Any, where: str, what: str) -> str:
    if not isinstance(value, str):
        raise DataError(
            f"mine_hard_negatives: {where}: the {what} must be a string, got "
            f"{type(value).__name__}; pass texts."
        )
    if not value.strip():
        raise DataError(f"mine_hard_negatives: {where}: the {what} is empty; remove the row.")
    return value


def _read_pairs_csv(path: Path) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    with path.open(newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            if not row or not any(cell.strip() for cell in row):
                continue
            where = f"{path}:{line}"
            if len(row) != 2:
                raise DataError(
                    f"mine_hard_negatives: {where} has {len(row)} columns; pairs files need "
                    "two, query,document (quote texts that hold commas)."
                )
            if not pairs and line == 1 and {c.strip().lower() for c in row} in _HEADERS:
                continue  # a header row
            pairs.append((_text(row[0], where, "query"), _text(row[1], where, "document")))
    return pairs


def _pair_of(item: Any, where: str) -> tuple[str, str]:
    if isinstance(item, (tuple, list)):
        if len(item) != 2:
            raise DataError(
                f"mine_hard_negatives: {where} has {len(item)} values; pairs are "
                "(query, positive) tuples."
            )
        query, positive = item
    else:
        query = getattr(item, "query", None)
        positive = getattr(item, "pos", getattr(item, "positive", None))
        if query is None or positive is None:
            raise DataError(
                f"mine_hard_negatives: {where} is a {type(item).__name__}; pass (query, "
                "positive) tuples or documents with .query and .pos (or .positive) texts."
            )
    return _text(query, where, "query"), _text(positive, where, "positive")


def _existing(name: str | os.PathLike[str], what: str, instead: str) -> Path:
    path = Path(name)
    if not path.is_file():
        raise DataError(
            f"mine_hard_negatives: {what} file '{path}' does not exist; pass {instead}."
        )
    return path


def read_pairs(pairs: Any) -> list[tuple[str, str]]:
    """The ``(query, positive)`` pairs of *pairs* (see the module docstring); at least one."""
    if isinstance(pairs, (str, os.PathLike)):
        path = _existing(pairs, "pairs", "a CSV file of query,document rows or a list of tuples")
        out = _read_pairs_csv(path)
        source = f"'{path}'"
    else:
        if not isinstance(pairs, Iterable):
            raise DataError(
                "mine_hard_negatives: pairs must be a CSV file, a list of (query, positive) "
                f"tuples or documents with .query and .pos, got {type(pairs).__name__}."
            )
        out = [_pair_of(item, f"pair {i}") for i, item in enumerate(pairs)]
        source = "pairs"
    if not out:
        raise DataError(f"mine_hard_negatives: {source} holds no (query, positive) pairs.")
    return out


def read_corpus(corpus: Any) -> list[str]:
    """The documents of *corpus*: a list of texts, a text file (one a line) or a CSV file."""
    if isinstance(corpus, (str, os.PathLike)):
        path = _existing(corpus, "corpus", "a text file, one document a line, or a list of texts")
        with path.open(newline="", encoding="utf-8") as handle:
            if path.suffix.lower() == ".csv":
                rows = [(line, row[0]) for line, row in enumerate(csv.reader(handle), 1) if row]
            else:
                rows = [(line, text.rstrip("\r\n")) for line, text in enumerate(handle, 1)]
        docs = [_text(text, f"{path}:{line}", "document") for line, text in rows if text.strip()]
        source = f"corpus file '{path}'"
    elif isinstance(corpus, Iterable):
        docs = [_text(doc, f"corpus item {i}", "document") for i, doc in enumerate(corpus)]
        source = "corpus"
    else:
        raise DataError(
            "mine_hard_negatives: corpus must be a list of texts or a file, got "
            f"{type(corpus).__name__}."
        )
    if not docs:
        raise DataError(f"mine_hard_negatives: the {source} holds no documents.")
    return docs


@dataclass(frozen=True)
class QueryGroups:
    """The distinct queries, in order of first appearance, each with its distinct positives."""

    queries: list[str]
    positives: list[list[str]]

    def pair_positions(self, documents: dict[str, int]) -> tuple[list[int], list[int]]:
        """(query position, document position) of every positive found in *documents*."""
        query_pos, doc_pos = [], []
        for q, texts in enumerate(self.positives):
            for text in texts:
                if text in documents:
                    query_pos.append(q)
                    doc_pos.append(documents[text])
        return query_pos, doc_pos


def group_pairs(pairs: list[tuple[str, str]]) -> QueryGroups:
    groups: dict[str, dict[str, None]] = {}
    for query, positive in pairs:
        groups.setdefault(query, {})[positive] = None
    return QueryGroups(list(groups), [list(p) for p in groups.values()])
