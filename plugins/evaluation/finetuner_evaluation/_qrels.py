"""Read queries, a corpus and relevance judgments (qrels), and check them against each other.

Queries and corpus: a CSV file of ``id,text`` rows (no header), a JSONL file in BEIR's layout
(``{"_id": ..., "text": ..., "title": ...}``, the title optional), a mapping ``{id: item}`` or a
docarray ``DocList`` (each document's ``id`` and its ``text``, image ``url``/``uri`` or
``tensor``). A title is joined before the text with one space, as BEIR does:
``(title + " " + text).strip()``; an empty or missing title leaves the text as it is.

Qrels: a TREC file (``qid 0 docid rel``, whitespace separated), a BEIR TSV
(``query-id<TAB>corpus-id<TAB>score`` after a header line) or a mapping
``{qid: {docid: rel}}``. Relevance grades are integers; a grade above 0 is relevant.
Nothing here imports torch.
"""

from __future__ import annotations

__all__ = [
    "Items",
    "Judgments",
    "check_cutoffs",
    "check_distinct",
    "check_judgments",
    "qrels_source",
    "read_items",
    "read_qrels",
]

import csv
import json
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetuner.errors import ConfigError, DataError

_SHOWN = 5


@dataclass(frozen=True, slots=True)
class Items:
    """Queries or corpus documents: ids (strings, distinct) and the items a model encodes."""

    ids: list[str]
    values: list[Any]
    source: str

    def describe(self, row: int) -> str:
        value = self.values[row]
        text = value if isinstance(value, str) else f"<{type(value).__name__}>"
        return f"{self.ids[row]}: {text[:80]}"


Judgments = dict[str, dict[str, int]]
"""``{query id: {document id: grade}}``."""


def read_items(data: Any, name: str) -> Items:
    """Queries or corpus from a CSV or JSONL file, a mapping or a ``DocList``."""
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.is_file():
            raise DataError(f"{name}: no file {str(path)!r}; give a .csv or .jsonl file.")
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            rows = _jsonl_rows(path, name)
        elif suffix in (".csv", ".tsv"):
            rows = _csv_rows(path, name, "\t" if suffix == ".tsv" else ",")
        else:
            raise DataError(
                f"{name}: {path} is neither .csv (id,text rows) nor .jsonl (BEIR layout); "
                "rename it to say which."
            )
        return _items(rows, name, str(path))
    if isinstance(data, Mapping):
        where = [(f"{name}[{key!r}]", str(key), value) for key, value in data.items()]
        return _items(where, name, name)
    if _is_doclist(data):
        rows = [
            (f"{name}[{i}]", str(doc.id), _doc_value(doc, f"{name}[{i}]"))
            for i, doc in enumerate(data)
        ]
        return _items(rows, name, name)
    raise DataError(
        f"{name}: unsupported type {type(data).__name__}; pass a .csv or .jsonl file, a "
        "{id: text} mapping or a docarray DocList."
    )


def _items(rows: list[tuple[str, str, Any]], name: str, source: str) -> Items:
    if not rows:
        raise DataError(f"{name}: {source} is empty; it needs at least one item.")
    first: dict[str, str] = {}
    for where, item_id, _ in rows:
        if item_id in first:
            raise DataError(
                f"{name}: {where} repeats the id {item_id!r} of {first[item_id]}; ids must be "
                "distinct."
            )
        first[item_id] = where
    return Items([r[1] for r in rows], [r[2] for r in rows], source)


def _csv_rows(path: Path, name: str, delimiter: str) -> list[tuple[str, str, Any]]:
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.reader(handle, delimiter=delimiter), start=1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != 2 or not row[0].strip():
                raise DataError(
                    f"{name}: {path}:{line} has {len(row)} field(s); each row is id,text "
                    "(quote a text that holds the delimiter)."
                )
            rows.append((f"{path}:{line}", row[0].strip(), row[1]))
    return rows


def _jsonl_rows(path: Path, name: str) -> list[tuple[str, str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{line}"
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise DataError(f"{name}: {where} is not valid JSON ({exc.msg}).") from None
            if not isinstance(record, dict) or "_id" not in record:
                raise DataError(
                    f'{name}: {where} needs an object with "_id" and "text" (BEIR layout).'
                )
            text, title = record.get("text"), record.get("title") or ""
            if not isinstance(text, str) or not isinstance(title, str):
                raise DataError(f'{name}: {where} needs "text" (and "title", if any) as strings.')
            rows.append((where, str(record["_id"]), f"{title} {text}".strip() if title else text))
    return rows


def _is_doclist(data: Any) -> bool:
    try:
        from docarray import DocList
    except ImportError:  # pragma: no cover - docarray is a dependency of the core
        return False
    return isinstance(data, DocList)


def _doc_value(doc: Any, where: str) -> Any:
    text = getattr(doc, "text", None)
    if isinstance(text, str):
        title = getattr(doc, "title", None)
        return f"{title} {text}".strip() if isinstance(title, str) and title else text
    for field in ("url", "uri"):
        ref = getattr(doc, field, None)
        if isinstance(ref, str) and ref:
            return ref
    tensor = getattr(doc, "tensor", None)
    if tensor is not None:
        return tensor
    raise DataError(f"{where} (id {doc.id}) has no text, url/uri or tensor to encode.")


def qrels_source(qrels: Any) -> str:
    """How errors name the judgments: ``qrels`` for a mapping, ``qrels PATH`` for a file."""
    return "qrels" if isinstance(qrels, Mapping) else f"qrels {qrels}"


def read_qrels(data: Any, name: str = "qrels") -> Judgments:
    """Judgments from a TREC file, a BEIR TSV or a ``{qid: {docid: grade}}`` mapping."""
    if isinstance(data, Mapping):
        return _from_mapping(data, name)
    if not isinstance(data, (str, os.PathLike)):
        raise DataError(
            f"{name}: unsupported type {type(data).__name__}; pass a TREC qrels file, a BEIR "
            "TSV or a {query id: {document id: grade}} mapping."
        )
    path = Path(data)
    if not path.is_file():
        raise DataError(f"{name}: no file {str(path)!r}; give a TREC qrels file or a BEIR TSV.")
    judgments: Judgments = {}
    seen: dict[tuple[str, str], int] = {}
    with path.open(encoding="utf-8") as handle:
        lines = [(n, raw.rstrip("\n\r")) for n, raw in enumerate(handle, start=1) if raw.strip()]
    if not lines:
        raise DataError(f"{name}: {path} is empty; it needs at least one judgment.")
    beir = lines[0][1].split("\t")[0].strip().lower() == "query-id"
    for line, raw in lines[1:] if beir else lines:
        fields = raw.split("\t") if beir else raw.split()
        if len(fields) != (3 if beir else 4):
            layout = "query-id<TAB>corpus-id<TAB>score" if beir else "qid 0 docid rel"
            raise DataError(f"{name}: {path}:{line} is not '{layout}': {raw[:80]!r}.")
        qid, docid, grade = (
            (fields[0], fields[1], fields[2]) if beir else (fields[0], fields[2], fields[3])
        )
        where = f"{path}:{line}"
        key = (qid.strip(), docid.strip())
        if key in seen:
            raise DataError(
                f"{name}: {where} judges query {key[0]!r} and document {key[1]!r} again "
                f"(first at line {seen[key]}); keep one judgment per pair."
            )
        seen[key] = line
        judgments.setdefault(key[0], {})[key[1]] = _grade(grade, name, where)
    return judgments


def _grade(value: Any, name: str, where: str) -> int:
    if isinstance(value, bool):
        raise DataError(f"{name}: {where} has the grade {value!r}; grades are integers.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{name}: {where} has the grade {value!r}; grades are integers.") from None
    if not number.is_integer():
        raise DataError(f"{name}: {where} has the grade {value!r}; grades are integers.")
    return int(number)


def _from_mapping(data: Mapping[Any, Any], name: str) -> Judgments:
    if not data:
        raise DataError(f"{name} is empty; it needs at least one judgment.")
    judgments: Judgments = {}
    for qid, docs in data.items():
        if not isinstance(docs, Mapping):
            raise DataError(
                f"{name}[{qid!r}] must map document ids to grades, got {type(docs).__name__}."
            )
        judgments[str(qid)] = {
            str(docid): _grade(grade, name, f"[{qid!r}][{docid!r}]")
            for docid, grade in docs.items()
        }
    return judgments


def check_judgments(
    judgments: Judgments,
    query_ids: list[str],
    corpus_ids: list[str],
    sources: tuple[str, str, str],
) -> None:
    """Every judged query and document must be among the queries and the corpus."""
    for what, known, found, source in (
        ("query", set(query_ids), list(judgments), sources[0]),
        ("document", set(corpus_ids), [d for docs in judgments.values() for d in docs], sources[1]),
    ):
        unknown = list(dict.fromkeys(i for i in found if i not in known))
        if unknown:
            shown = ", ".join(repr(i) for i in unknown[:_SHOWN])
            more = ", ..." if len(unknown) > _SHOWN else ""
            raise DataError(
                f"{sources[2]} names {len(unknown)} {what} id(s) not in {source}: {shown}{more}; "
                f"check that the qrels and the {what} data belong together."
            )


def check_distinct(ids: list[str], name: str) -> None:
    """Ids given as a list (to ``evaluate_qrels``) must be distinct, like those of a file."""
    _items([(f"{name}[{i}]", str(v), None) for i, v in enumerate(ids)], name, name)


def check_cutoffs(owner: str, k: Any) -> tuple[int, ...]:
    """``k`` as a tuple of distinct positive integers, in the order given."""
    values = [k] if _is_int(k) else k
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ConfigError(f"{owner}: k must be a cut-off or a list of them, not {k!r}.")
    for value in values:
        if not _is_int(value) or value < 1:
            raise ConfigError(
                f"{owner}: each cut-off in k must be a positive integer, not {value!r}."
            )
    if len(set(values)) != len(values):
        raise ConfigError(f"{owner}: k {list(values)} repeats a cut-off.")
    return tuple(int(v) for v in values)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
