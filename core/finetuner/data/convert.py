"""Conversion of user data into a :class:`~finetuner.data.dataset.Dataset`, once, up front.

Users hand over CSV files, docarray ``DocList``s, built-in or pushed data set names or plain
Python lists; :func:`load_dataset` turns each into columns of items with integer class codes,
or pair scores. :func:`split_dataset` holds part of it out for validation, :func:`align_classes`
gives validation data the training classes, and :func:`encodable_values` picks the raw items
a model embeds.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import DataError, close_matches_hint
from .builtin import BUILTIN_DATASETS, load_builtin
from .csv_options import as_csv_options, is_csv_source
from .csv_reader import CSVTable, read_csv
from .dataset import IMAGE, TENSOR, TEXT, Column, Dataset
from .items import (
    column_of,
    doc_items,
    doc_label,
    finite_scores,
    item_of,
    labels_to_codes,
    one_modality,
    pair_labels,
)
from .retrieval import is_jsonl_source, read_jsonl, records_dataset
from .store import load_pushed, pushed_names

__all__ = ["align_classes", "encodable_values", "load_dataset", "split_dataset"]


def load_dataset(data: Any, *, name: str = "train_data", csv_options: Any = None) -> Dataset:
    """Convert *data* into a :class:`Dataset`.

    Accepts a :class:`Dataset`; a CSV file path or open text stream (read with *csv_options*,
    a :class:`~finetuner.data.csv_options.CSVOptions`); the name of a built-in or pushed data
    set; a docarray ``DocList`` (items in ``text``, ``url``/``uri`` or ``tensor``, labels in
    ``label`` or ``tags['finetuner_label']``, text-image pairs, or
    :class:`~finetuner.data.documents.ScoredPair` / :class:`~finetuner.data.documents.Triplet`
    / :class:`~finetuner.data.documents.RetrievalExample` documents); a ``.jsonl`` file or a
    list of dicts of retrieval records (``{"query", "pos", "neg"}``, see
    :mod:`finetuner.data.retrieval`); or a list of ``(item, label)`` pairs. Raises
    :class:`~finetuner.errors.DataError` saying what is wrong and where.
    """
    if isinstance(data, Dataset):
        return data
    if data is None:
        raise DataError(
            f"{name} is missing: pass a CSV file, a DocList, a data set name or a list of "
            "(item, label) pairs."
        )
    if is_csv_source(data):
        return _from_table(read_csv(data, as_csv_options(csv_options), name=name))
    if is_jsonl_source(data):
        return read_jsonl(data, name=name)
    if isinstance(data, (str, os.PathLike)):
        return _from_name(os.fspath(data), name)
    try:
        from docarray import DocList
    except ImportError:  # pragma: no cover - docarray is a dependency
        DocList = ()  # type: ignore[assignment,misc]

    if isinstance(data, DocList):
        docs = list(data)
        if not docs:
            raise DataError(f"{name} is empty: it needs at least one document.")
        return _from_docs(docs, name)
    if isinstance(data, Sequence) or isinstance(data, Iterator):
        items = list(data)
        if not items:
            raise DataError(f"{name} is empty: it needs at least one (item, label) pair.")
        if isinstance(items[0], Mapping):
            return records_dataset(items, [f"{name}[{i}]" for i in range(len(items))], source=name)
        return _from_items(items, name)
    raise DataError(
        f"{name}: unsupported type {type(data).__name__}. Pass a CSV file, a docarray DocList, "
        "a data set name or a list of (item, label) pairs."
    )


def _from_name(value: str, name: str) -> Dataset:
    if value in BUILTIN_DATASETS:
        return load_builtin(value)
    pushed = pushed_names()
    if value in pushed:
        return load_pushed(value)
    if os.path.exists(value):
        raise DataError(
            f"{name}: '{value}' is a file without a .csv/.tsv suffix; rename it, or pass an open "
            "file object: open(path, newline='')."
        )
    names = [*BUILTIN_DATASETS, *pushed]
    raise DataError(
        f"{name}: '{value[:80]}' is neither a CSV file nor a known data set. Data sets: "
        f"{', '.join(names)} (push your own with finetuner.push_data(name, data))."
        f"{close_matches_hint(value, names)}"
    )


def _from_table(table: CSVTable) -> Dataset:
    """A parsed CSV file."""
    ids = [f"{table.source}:{line}" for line in table.lines]
    columns = [Column(m, list(v)) for m, v in zip(table.modalities, table.columns)]
    labels: np.ndarray | None = None
    classes: list[Any] = []
    if table.kind == "retrieval":
        labels, classes = pair_labels(table.columns[0])
    elif table.labels is not None:
        labels, classes = labels_to_codes(list(table.labels), table.source)
    scores = np.asarray(table.scores, np.float32) if table.scores is not None else None
    return Dataset(
        columns, labels, classes, ids, kind=table.kind, scores=scores, source=table.source
    )


def _from_docs(docs: list[Any], name: str) -> Dataset:
    """A DocList: single items with labels, text-image pairs, scored pairs or triplets."""
    from .documents import RetrievalExample, ScoredPair, Triplet

    ids = [str(getattr(doc, "id", i)) for i, doc in enumerate(docs)]
    if isinstance(docs[0], RetrievalExample):
        wheres = [f"{name}[{i}] (id {doc_id})" for i, doc_id in enumerate(ids)]
        return records_dataset(docs, wheres, source=name, ids=ids)
    if isinstance(docs[0], ScoredPair | Triplet):
        return _from_compound_docs(docs, ids, name, scored=isinstance(docs[0], ScoredPair))
    per_doc = [doc_items(doc, f"{name}[{i}]") for i, doc in enumerate(docs)]
    counts = {len(items) for items in per_doc}
    if counts == {1}:
        modality = one_modality([items[0][0] for items in per_doc], name)
        values = [items[0][1] for items in per_doc]
        labels, classes = labels_to_codes([doc_label(doc) for doc in docs], name)
        return Dataset([column_of(modality, values, name)], labels, classes, ids, source=name)
    if counts == {2} and all({m for m, _ in items} == {TEXT, IMAGE} for items in per_doc):
        texts = [next(v for m, v in items if m == TEXT) for items in per_doc]
        images = [next(v for m, v in items if m == IMAGE) for items in per_doc]
        labels, classes = pair_labels(texts)
        return Dataset(
            [Column(TEXT, texts), Column(IMAGE, images)],
            labels,
            classes,
            ids,
            kind="pairs",
            source=name,
        )
    bad = next(i for i, items in enumerate(per_doc) if len(items) != 1)
    found = [m for m, _ in per_doc[bad]]
    raise DataError(
        f"{name}[{bad}] (id {ids[bad]}) holds {len(found)} items ({', '.join(found) or 'none'}). "
        "A document holds one item (text, an image url/uri, or a tensor) with a label, or a "
        "text and an image (a text-image pair); use finetuner.document.ScoredPair or Triplet "
        "for scored pairs and triplets."
    )


def _from_compound_docs(docs: list[Any], ids: list[str], name: str, *, scored: bool) -> Dataset:
    """``ScoredPair`` (*scored*) or ``Triplet`` documents: one column per field, one item in
    each, and the pair's score or the triplet's margin."""
    first = docs[0]
    fields = ("a", "b") if scored else ("query", "positive", "negative")
    kind = "scored" if scored else "triplets"
    what = "score" if scored else "margin"
    columns: list[list[Any]] = [[] for _ in fields]
    modalities: list[list[str]] = [[] for _ in fields]
    raw_scores = []
    for i, doc in enumerate(docs):
        if type(doc) is not type(first):
            raise DataError(
                f"{name}[{i}] is a {type(doc).__name__} but {name}[0] is a "
                f"{type(first).__name__}; a data set holds one form."
            )
        for j, field_name in enumerate(fields):
            items = doc_items(getattr(doc, field_name), f"{name}[{i}].{field_name}")
            if len(items) != 1:
                raise DataError(
                    f"{name}[{i}].{field_name} must hold exactly one item (a text, an image "
                    f"or a tensor); it holds {len(items)}."
                )
            modalities[j].append(items[0][0])
            columns[j].append(items[0][1])
        raw_scores.append(getattr(doc, what))
    cols = [
        column_of(one_modality(m, f"{name}.{f}"), v, f"{name}.{f}")
        for m, v, f in zip(modalities, columns, fields)
    ]
    scores = finite_scores(raw_scores, name, what)
    return Dataset(cols, None, [], ids, kind=kind, scores=scores, source=name)


def _from_items(items: list[Any], name: str) -> Dataset:
    """A list of ``(item, label)`` pairs, items being tensors, texts or image paths."""
    values, kinds, raw_labels = [], [], []
    for i, entry in enumerate(items):
        if not isinstance(entry, (tuple, list)) or len(entry) != 2:
            raise DataError(
                f"{name}[{i}]: expected an (item, label) pair, got "
                f"{type(entry).__name__}{' of length ' + str(len(entry)) if isinstance(entry, (tuple, list)) else ''}."
            )
        value, label = entry
        modality, raw = item_of(value, f"{name}[{i}][0]")
        kinds.append(modality)
        values.append(raw)
        if (
            isinstance(label, torch.Tensor | np.ndarray | np.generic)
            and math.prod(label.shape) == 1
        ):
            label = label.item()  # one number; a longer array is refused below
        raw_labels.append(label)
    modality = one_modality(kinds, name)
    labels, classes = labels_to_codes(raw_labels, name)
    ids = [f"{name}[{i}]" for i in range(len(items))]  # positions are not identities across sets
    return Dataset([column_of(modality, values, name)], labels, classes, ids, source=name)


def split_dataset(dataset: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Hold out *fraction* of *dataset* for validation, stratified by class where possible;
    retrieval data holds out *fraction* of its queries, each with all of its rows."""
    rng = np.random.default_rng(seed)
    held: list[int] = []
    codes = range(dataset.num_classes if dataset.labels is not None else 0)
    if dataset.labels is None:  # scored pairs and triplets: a plain random split
        held = rng.permutation(len(dataset))[: round(len(dataset) * fraction)].tolist()
    elif dataset.kind == "retrieval":  # whole queries, so no query is in both parts
        groups = rng.permutation(dataset.num_classes)[: round(dataset.num_classes * fraction)]
        held = np.flatnonzero(np.isin(dataset.labels, groups)).tolist()
        codes = range(0)
    for code in codes:
        members = np.flatnonzero(dataset.labels == code)
        rng.shuffle(members)
        take = round(len(members) * fraction)
        held.extend(members[:take].tolist())
    if not held:
        raise DataError(
            f"val_split={fraction} leaves no item for validation out of {len(dataset)}; use a "
            "larger val_split or pass eval_data."
        )
    mask = np.zeros(len(dataset), dtype=bool)
    mask[held] = True
    train_idx, val_idx = np.flatnonzero(~mask), np.flatnonzero(mask)
    if len(train_idx) == 0:
        raise DataError(f"val_split={fraction} leaves no item for training.")
    return dataset.subset(train_idx), dataset.subset(val_idx)


def align_classes(evaluation: Dataset, train: Dataset) -> Dataset:
    """Re-code *evaluation*'s labels so equal labels share a code with *train*."""
    code = {label: i for i, label in enumerate(train.classes)}
    classes = list(train.classes)
    mapping = []
    for label in evaluation.classes:
        if label not in code:
            code[label] = len(classes)
            classes.append(label)
        mapping.append(code[label])
    labels = np.asarray(mapping, dtype=np.int64)[evaluation.labels]
    return dataclasses.replace(evaluation, labels=labels, classes=classes, _label_tensor=None)


def encodable_values(data: Any, modality: str) -> tuple[Any, Any]:
    """The raw items of *data* for a model that embeds *modality* items, plus the DocList whose
    ``embedding`` fields to fill (or ``None``).

    *data* is a :class:`Dataset`, a ``DocList``, a tensor or numpy array, or a list of texts,
    image paths or tensors; raises :class:`~finetuner.errors.DataError` for anything else.
    """
    from docarray import DocList

    if isinstance(data, Dataset):
        return data.column(modality if modality != TENSOR else None).columns[0].values, None
    if isinstance(data, DocList):
        if len(data) > 0 and not hasattr(data[0], "embedding"):
            raise DataError(
                f"documents of type {type(data[0]).__name__} have no `embedding` field to fill; "
                "use finetuner.Document or add `embedding: AnyEmbedding | None = None`."
            )
        values = [_doc_value(doc, modality, f"data[{i}]") for i, doc in enumerate(data)]
        return (_stack_tensors(values) if modality == TENSOR else values), data
    if isinstance(data, torch.Tensor):
        return data.to(torch.float32), None
    if isinstance(data, np.ndarray):
        if data.dtype.kind not in "biuf":
            raise DataError(
                f"cannot encode a numpy array of dtype {data.dtype}: tensor items are numbers; "
                "pass texts as a list of strings."
            )
        return torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)), None
    if isinstance(data, str):
        raise DataError("encode takes a list of texts, not one string: encode(model, [text]).")
    if isinstance(data, (list, tuple)):
        if not data:
            return [], None
        if all(isinstance(t, (torch.Tensor, np.ndarray)) for t in data):
            return _stack_tensors(list(data)), None
        if all(isinstance(t, (str, os.PathLike)) for t in data):
            if modality == "text" and all(isinstance(t, str) for t in data):
                return list(data), None
            if modality == "image":
                return [item_of(t, f"data[{i}]")[1] for i, t in enumerate(data)], None
            raise DataError(
                "this model takes tensors, not strings; texts need a text model and image "
                "paths an image model (see finetuner.describe_models())."
            )
    raise DataError(
        f"cannot encode data of type {type(data).__name__}: pass a DocList, a list of texts or "
        "image paths, a tensor, a numpy array or a list of tensors."
    )


def _doc_value(doc: Any, modality: str, where: str) -> Any:
    items = doc_items(doc, where)
    for kind, value in items:
        if kind == modality or (modality == "image" and kind == "tensor"):
            return value
    found = ", ".join(kind for kind, _ in items) or "nothing"
    raise DataError(f"{where} (id {doc.id}) holds {found}; this model embeds {modality} items.")


def _stack_tensors(values: list[Any]) -> torch.Tensor:
    return torch.stack([torch.as_tensor(np.asarray(t), dtype=torch.float32) for t in values])
