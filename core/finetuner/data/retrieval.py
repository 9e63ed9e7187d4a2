"""Retrieval data (queries, their positives and optional negatives) from JSONL files, lists of
dicts and :class:`~finetuner.data.documents.RetrievalExample` documents.

Every form is a sequence of *records* ``{"query": str, "pos": str | [str, ...], "neg": [str,
...]}`` (``neg`` optional). A record makes one row ``(query, positive, negative_1, ...,
negative_k)`` per positive; every record of a data set has the same number ``k`` of negatives.
Items are texts, or image references (a column whose every cell names an image holds images).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import DataError, close_matches_hint
from .dataset import IMAGE, TEXT, Column, Dataset
from .image_references import is_image_reference, resolve_image_reference
from .items import pair_labels

__all__ = ["JSONL_SUFFIX", "is_jsonl_source", "read_jsonl", "records_dataset"]

JSONL_SUFFIX = ".jsonl"
_KEYS = ("query", "pos", "neg")
_FORM = '{"query": "...", "pos": "..." or ["...", ...], "neg": ["...", ...]} ("neg" optional)'


def is_jsonl_source(value: Any) -> bool:
    """Whether *value* is a path ending in ``.jsonl``."""
    if isinstance(value, str | os.PathLike):
        path = os.fspath(value)
        return isinstance(path, str) and path.lower().endswith(JSONL_SUFFIX)
    return False


def read_jsonl(source: str | os.PathLike[str], *, name: str = "train_data") -> Dataset:
    """Retrieval data from a JSONL file, one record per non-blank line; errors name
    ``file:line``. Relative image paths are read from the file's folder."""
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise DataError(f"{name}: JSONL file not found: {path}. Check the path.")
    records: list[Any] = []
    wheres: list[str] = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}:{number}: not valid JSON ({exc.msg}, column {exc.colno}); each "
                    f"line is one object {_FORM}."
                ) from None
            wheres.append(f"{path}:{number}")
    if not records:
        raise DataError(f"{name}: {path} is empty; each line is one object {_FORM}.")
    return records_dataset(records, wheres, source=path, base_dir=os.path.dirname(path))


def records_dataset(
    records: Sequence[Any],
    wheres: Sequence[str],
    *,
    source: str,
    base_dir: str = "",
    ids: Sequence[str] | None = None,
) -> Dataset:
    """Retrieval data from *records* (dicts, or objects with ``query``/``pos``/``neg``
    attributes); ``wheres[i]`` names record *i* in errors and, unless *ids* are given, is the
    id of its rows."""
    rows: list[list[str]] = []
    row_ids: list[str] = []
    negatives: int | None = None
    first = ""
    for i, (record, where) in enumerate(zip(records, wheres)):
        query, positives, negs = _parse_record(record, where)
        if negatives is None:
            negatives, first = len(negs), where
        elif len(negs) != negatives:
            raise DataError(
                f"{where}: {len(negs)} negative(s), but {first} has {negatives}; every record "
                "needs the same number of negatives (drop or add some, or mine them again "
                "with one num_negatives)."
            )
        for positive in positives:
            rows.append([query, positive, *negs])
            row_ids.append(ids[i] if ids is not None else where)
    columns = [_column([row[j] for row in rows], row_ids, base_dir) for j in range(len(rows[0]))]
    labels, classes = pair_labels(columns[0].values)
    return Dataset(columns, labels, classes, row_ids, kind="retrieval", source=source)


def _parse_record(record: Any, where: str) -> tuple[str, list[str], list[str]]:
    if not isinstance(record, Mapping):
        if all(hasattr(record, key) for key in _KEYS):  # RetrievalExample documents
            record = {key: getattr(record, key) for key in _KEYS}
        else:
            raise DataError(f"{where}: expected an object {_FORM}, got {type(record).__name__}.")
    unknown = sorted(set(record) - set(_KEYS))
    if unknown:
        raise DataError(
            f"{where}: unknown key {unknown[0]!r}; a record has the keys query, pos and neg."
            + close_matches_hint(str(unknown[0]), _KEYS)
        )
    for key in ("query", "pos"):
        if key not in record:
            raise DataError(f"{where}: the record has no {key!r}; each record is {_FORM}.")
    query = _text(record["query"], f"{where}: 'query'")
    pos = record["pos"]
    positives = [pos] if isinstance(pos, str) else pos
    if not isinstance(positives, list) or not positives:
        raise DataError(f"{where}: 'pos' must be a text or a non-empty list of texts.")
    negs = record.get("neg") or []
    if not isinstance(negs, list):
        raise DataError(f"{where}: 'neg' must be a list of texts, not {type(negs).__name__}.")
    return (
        query,
        [_text(p, f"{where}: 'pos'[{i}]") for i, p in enumerate(positives)],
        [_text(n, f"{where}: 'neg'[{i}]") for i, n in enumerate(negs)],
    )


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where} must be a text (or an image path), not {type(value).__name__}.")
    if not value.strip():
        raise DataError(f"{where} is empty; every query, positive and negative needs a text.")
    return value


def _column(cells: list[str], wheres: list[str], base_dir: str) -> Column:
    """A text column, or an image column when every cell names an image."""
    if not all(is_image_reference(cell) for cell in cells):
        return Column(TEXT, cells)
    seen: dict[str, str] = {}
    paths = []
    for cell, where in zip(cells, wheres):
        if cell not in seen:
            seen[cell] = resolve_image_reference(cell, where=where, base_dir=base_dir)
        paths.append(seen[cell])
    return Column(IMAGE, paths)
