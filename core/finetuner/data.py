"""Training data: conversion of user data into columns of items, batching and sampling.

Users hand over CSV files, docarray ``DocList``s, pushed data set names or plain Python lists.
Each is converted once into a :class:`Dataset`: columns of items (a stacked tensor, or a list
of texts or image references) with integer class codes, or pair scores. The training hot path
gathers raw items by index and preprocesses whole batches (in ``DataLoader`` workers when
``num_workers > 0``); it never builds per-item pydantic objects.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .errors import DataError

__all__ = [
    "IMAGE",
    "KINDS",
    "LABEL_TAG",
    "SCORE_TAG",
    "TENSOR",
    "TEXT",
    "Batch",
    "ClassBalancedBatchSampler",
    "Column",
    "Dataset",
    "RandomBatchSampler",
    "align_classes",
    "encodable_values",
    "load_dataset",
    "split_dataset",
]

LABEL_TAG = "finetuner_label"
"""The ``tags`` key holding a document's class label, as in the classic API."""
SCORE_TAG = "finetuner_score"
"""The ``tags`` key holding a pair's similarity score, as in the classic API."""

TENSOR, TEXT, IMAGE = "tensor", "text", "image"
KINDS = {
    "labeled": "items with class labels",
    "pairs": "text-image pairs (a text column and an image column)",
    "scored": "pairs with a similarity score (a, b, score)",
    "triplets": "query, positive, negative and the teacher's margin",
}
_COLUMNS = {"labeled": 1, "pairs": 2, "scored": 2, "triplets": 3}


@dataclass
class Column:
    """One column of items: a stacked float tensor (``modality='tensor'``) or a list of texts
    or image references (paths, arrays or tensors)."""

    modality: str
    values: Any

    def __len__(self) -> int:
        return (
            int(self.values.shape[0]) if isinstance(self.values, torch.Tensor) else len(self.values)
        )

    def take(self, indices: Sequence[int] | torch.Tensor) -> Any:
        if isinstance(self.values, torch.Tensor):
            return self.values.index_select(0, torch.as_tensor(indices, dtype=torch.long))
        values = self.values
        return [
            values[i] for i in (indices.tolist() if isinstance(indices, torch.Tensor) else indices)
        ]


@dataclass
class Batch:
    """Raw items of one batch (one entry per column), with labels or scores."""

    items: list[Any]
    labels: torch.Tensor | None
    scores: torch.Tensor | None

    def __len__(self) -> int:
        first = self.items[0]
        return int(first.shape[0]) if isinstance(first, torch.Tensor) else len(first)


@dataclass
class Dataset:
    """Training or evaluation data as columns of items.

    ``kind`` is one of :data:`KINDS`. ``labels[i]`` indexes ``classes`` (labeled data, and
    pairs, whose rows with the same text share a label); ``scores`` holds pair scores or
    triplet margins. ``ids[i]`` is the item's id (a document id, a ``file:line`` or a position).
    """

    columns: list[Column]
    labels: np.ndarray | None
    classes: list[Any]
    ids: list[str]
    kind: str = "labeled"
    scores: np.ndarray | None = None
    source: str = "data"
    _label_tensor: torch.Tensor | None = field(default=None, repr=False)

    @classmethod
    def from_tensors(
        cls,
        inputs: torch.Tensor,
        labels: np.ndarray,
        classes: list[Any],
        ids: list[str],
        source: str = "data",
    ) -> Dataset:
        return cls([Column(TENSOR, inputs)], labels, classes, ids, source=source)

    def __len__(self) -> int:
        return len(self.columns[0])

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(c.modality for c in self.columns)

    @property
    def inputs(self) -> torch.Tensor:
        """The stacked tensor of single-column tensor data."""
        column = self.columns[0]
        if column.modality != TENSOR:
            raise DataError(f"{self.source} holds {column.modality} items, not tensors.")
        return column.values

    @property
    def item_shape(self) -> tuple[int, ...] | None:
        """The shape of one item of tensor data (``None`` for text and images)."""
        column = self.columns[0]
        if column.modality != TENSOR:
            return None
        return tuple(int(d) for d in column.values.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def label_tensor(self) -> torch.Tensor:
        if self._label_tensor is None:
            labels = self.labels if self.labels is not None else np.zeros(len(self), np.int64)
            self._label_tensor = torch.as_tensor(labels, dtype=torch.long)
        return self._label_tensor

    def take(self, indices: Sequence[int]) -> Batch:
        """The raw items of *indices*, gathered column by column (one index tensor for all)."""
        index = torch.as_tensor(indices, dtype=torch.long)
        labels = self.label_tensor.index_select(0, index) if self.labels is not None else None
        scores = (
            torch.from_numpy(self.scores).index_select(0, index)
            if self.scores is not None
            else None
        )
        return Batch([c.take(index) for c in self.columns], labels, scores)

    def batch(self, indices: Sequence[int] | torch.Tensor) -> tuple[Any, torch.Tensor]:
        """The first column's items and the labels of *indices* (single-column data)."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.columns[0].take(index), self.label_tensor.index_select(0, index)

    def subset(self, indices: Sequence[int] | np.ndarray) -> Dataset:
        index = np.asarray(indices, dtype=np.int64)
        return Dataset(
            columns=[Column(c.modality, c.take(index.tolist())) for c in self.columns],
            labels=self.labels[index] if self.labels is not None else None,
            classes=self.classes,
            ids=[self.ids[i] for i in index],
            kind=self.kind,
            scores=self.scores[index] if self.scores is not None else None,
            source=self.source,
        )

    def column(self, modality: str | None = None) -> Dataset:
        """Single-column labeled data: this data, or for pairs the column of *modality*
        (rows keep their labels, so a text and its image are relevant to each other)."""
        if self.kind == "labeled" or (modality is None and len(self.columns) == 1):
            return self
        chosen = [c for c in self.columns if c.modality == modality]
        if self.kind != "pairs" or not chosen:
            raise DataError(
                f"{self.source} holds {KINDS[self.kind]}; this needs labeled items"
                f"{f' ({modality})' if modality else ''}."
            )
        return Dataset([chosen[0]], self.labels, self.classes, self.ids, source=self.source)

    def describe(self, i: int) -> str:
        """A short display string for item *i* (used for example results): text as text,
        images as their path, tensors as their id and label."""
        column = self.columns[0]
        value = column.values[i]
        if column.modality == TEXT:
            text = " ".join(str(value).split())
            return text if len(text) <= 120 else text[:117] + "..."
        if column.modality == IMAGE and isinstance(value, (str, os.PathLike)):
            return str(value)
        label = self.classes[int(self.labels[i])] if self.labels is not None else None
        return f"{self.ids[i]} (label {label!r})"

    # torch DataLoader protocol: batched fetching, no per-item Python work.
    def __getitems__(self, indices: list[int]) -> Batch:
        return self.take(indices)

    def __getitem__(self, i: int) -> Batch:
        return self.take([i])


class Collate:
    """Preprocesses a raw :class:`Batch` into model inputs, column by column; picklable, so
    ``DataLoader`` workers run it."""

    def __init__(self, preprocessors: Sequence[Callable[[Any], Any]]) -> None:
        self.preprocessors = list(preprocessors)

    def __call__(self, batch: Batch) -> Batch:
        return Batch(
            [p(items) for p, items in zip(self.preprocessors, batch.items)],
            batch.labels,
            batch.scores,
        )


def iterate_batches(
    data: Dataset,
    sampler: Any,
    collate: Collate,
    num_workers: int = 0,
) -> Iterator[Batch]:
    """Preprocessed batches of *data* in the order of *sampler*, built in *num_workers*
    ``DataLoader`` worker processes (0: in this process)."""
    if num_workers == 0:
        for indices in sampler:
            yield collate(data.take(indices))
        return
    from torch.utils.data import DataLoader

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    yield from DataLoader(
        data,  # type: ignore[arg-type]
        batch_sampler=sampler,
        collate_fn=collate,  # type: ignore[arg-type]
        num_workers=num_workers,
        persistent_workers=False,
    )


def _as_tensor(value: Any, where: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (int, float)):
        return torch.tensor(value)
    raise DataError(
        f"{where}: expected a tensor (torch.Tensor or numpy array), a text or an image path, "
        f"got {type(value).__name__}."
    )


def _doc_label(doc: Any) -> Any:
    label = getattr(doc, "label", None)
    if label is None:
        tags = getattr(doc, "tags", None)
        if isinstance(tags, dict):
            label = tags.get(LABEL_TAG)
    return label


def _labels_to_codes(raw: list[Any], where: str) -> tuple[np.ndarray, list[Any]]:
    missing = [i for i, label in enumerate(raw) if label is None]
    if missing:
        shown = ", ".join(str(i) for i in missing[:5])
        raise DataError(
            f"{where}: {len(missing)} item(s) have no label (positions {shown}"
            f"{', ...' if len(missing) > 5 else ''}). Give every item a label: a `label` field "
            f"or tags={{'{LABEL_TAG}': ...}} on documents, (item, label) pairs, or an "
            "`item,label` CSV read with CSVOptions(is_labeled=True)."
        )
    try:
        classes = sorted(set(raw))
    except TypeError:
        classes = sorted(set(raw), key=repr)
    code = {label: i for i, label in enumerate(classes)}
    return np.fromiter((code[label] for label in raw), dtype=np.int64, count=len(raw)), classes


def _stack(tensors: list[torch.Tensor], where: str) -> torch.Tensor:
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        first = tuple(tensors[0].shape)
        bad = next(i for i, t in enumerate(tensors) if tuple(t.shape) != first)
        raise DataError(
            f"{where}: items have different shapes ({first} at position 0, "
            f"{tuple(tensors[bad].shape)} at position {bad}); every tensor must have one shape."
        )
    stacked = torch.stack([t.to(torch.float32) for t in tensors])
    if not torch.isfinite(stacked).all():
        raise DataError(f"{where} holds NaN or infinite values; clean the data before training.")
    return stacked


_IMAGE_FIELDS = ("url", "uri", "image", "image_url", "image_path")


def _item_of(value: Any, where: str) -> tuple[str, Any]:
    """The modality and raw value of one item given as a Python value."""
    if isinstance(value, str):
        from .csv_data import is_image_reference, resolve_image_reference

        if is_image_reference(value):
            return IMAGE, resolve_image_reference(value, where=where)
        return TEXT, value
    if isinstance(value, os.PathLike):
        from .csv_data import resolve_image_reference

        return IMAGE, resolve_image_reference(os.fspath(value), where=where)
    return TENSOR, _as_tensor(value, where)


def _doc_items(doc: Any, where: str) -> list[tuple[str, Any]]:
    """The items a document carries: its text, its image (url/uri) and its tensor."""
    items: list[tuple[str, Any]] = []
    text = getattr(doc, "text", None)
    if isinstance(text, str):
        items.append((TEXT, text))
    for name in _IMAGE_FIELDS:
        ref = getattr(doc, name, None)
        if isinstance(ref, str) and ref:
            from .csv_data import resolve_image_reference

            items.append((IMAGE, resolve_image_reference(ref, where=f"{where}.{name}")))
            break
    tensor = getattr(doc, "tensor", None)
    if tensor is not None and not any(m == IMAGE for m, _ in items):
        items.append((TENSOR, _as_tensor(tensor, f"{where}.tensor")))
    return items


def _column(modality: str, values: list[Any], where: str) -> Column:
    if modality == TENSOR:
        return Column(TENSOR, _stack(values, where))
    return Column(modality, values)


def _one_modality(kinds: list[str], where: str) -> str:
    found = sorted(set(kinds))
    if len(found) > 1:
        first = kinds[0]
        bad = next(i for i, k in enumerate(kinds) if k != first)
        raise DataError(
            f"{where}: items mix {' and '.join(found)} ({first} at position 0, {kinds[bad]} at "
            f"position {bad}); one column holds one kind of item."
        )
    return found[0]


def _finite_scores(raw: list[Any], where: str, what: str) -> np.ndarray:
    try:
        scores = np.asarray([float(s) for s in raw], dtype=np.float32)
    except (TypeError, ValueError):
        bad = next(i for i, s in enumerate(raw) if not _is_number(s))
        raise DataError(f"{where}[{bad}]: the {what} {raw[bad]!r} is not a number.") from None
    if not np.isfinite(scores).all():
        bad = int(np.flatnonzero(~np.isfinite(scores))[0])
        raise DataError(f"{where}[{bad}]: the {what} {raw[bad]!r} is not a finite number.")
    return scores


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _from_docs(docs: list[Any], name: str) -> Dataset:
    """A DocList: single items with labels, text-image pairs, scored pairs or triplets."""
    from .document import ScoredPair, Triplet

    ids = [str(getattr(doc, "id", i)) for i, doc in enumerate(docs)]
    first = docs[0]
    if isinstance(first, ScoredPair | Triplet):
        fields = ("a", "b") if isinstance(first, ScoredPair) else ("query", "positive", "negative")
        kind = "scored" if isinstance(first, ScoredPair) else "triplets"
        what = "score" if kind == "scored" else "margin"
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
                items = _doc_items(getattr(doc, field_name), f"{name}[{i}].{field_name}")
                if len(items) != 1:
                    raise DataError(
                        f"{name}[{i}].{field_name} must hold exactly one item (a text, an image "
                        f"or a tensor); it holds {len(items)}."
                    )
                modalities[j].append(items[0][0])
                columns[j].append(items[0][1])
            raw_scores.append(getattr(doc, what))
        cols = [
            _column(_one_modality(m, f"{name}.{f}"), v, f"{name}.{f}")
            for m, v, f in zip(modalities, columns, fields)
        ]
        scores = _finite_scores(raw_scores, name, what)
        return Dataset(cols, None, [], ids, kind=kind, scores=scores, source=name)

    per_doc = [_doc_items(doc, f"{name}[{i}]") for i, doc in enumerate(docs)]
    counts = {len(items) for items in per_doc}
    if counts == {1}:
        modality = _one_modality([items[0][0] for items in per_doc], name)
        values = [items[0][1] for items in per_doc]
        labels, classes = _labels_to_codes([_doc_label(doc) for doc in docs], name)
        return Dataset([_column(modality, values, name)], labels, classes, ids, source=name)
    if counts == {2} and all({m for m, _ in items} == {TEXT, IMAGE} for items in per_doc):
        texts = [next(v for m, v in items if m == TEXT) for items in per_doc]
        images = [next(v for m, v in items if m == IMAGE) for items in per_doc]
        labels, classes = _pair_labels(texts)
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


def _pair_labels(texts: list[str]) -> tuple[np.ndarray, list[Any]]:
    """Rows of a text-image pair set that share their text share a label."""
    code: dict[str, int] = {}
    labels = np.fromiter((code.setdefault(t, len(code)) for t in texts), np.int64, len(texts))
    return labels, list(range(len(code)))


def _from_table(table: Any) -> Dataset:
    """A parsed CSV file."""
    ids = [f"{table.source}:{line}" for line in table.lines]
    columns = [Column(m, list(v)) for m, v in zip(table.modalities, table.columns)]
    labels: np.ndarray | None = None
    classes: list[Any] = []
    if table.labels is not None:
        labels, classes = _labels_to_codes(list(table.labels), table.source)
    scores = np.asarray(table.scores, np.float32) if table.scores is not None else None
    return Dataset(
        columns, labels, classes, ids, kind=table.kind, scores=scores, source=table.source
    )


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
        modality, raw = _item_of(value, f"{name}[{i}][0]")
        kinds.append(modality)
        values.append(raw)
        if isinstance(label, torch.Tensor | np.ndarray | np.generic):
            label = label.item()
        raw_labels.append(label)
    modality = _one_modality(kinds, name)
    labels, classes = _labels_to_codes(raw_labels, name)
    ids = [f"{name}[{i}]" for i in range(len(items))]  # positions are not identities across sets
    return Dataset([_column(modality, values, name)], labels, classes, ids, source=name)


def load_dataset(data: Any, *, name: str = "train_data", csv_options: Any = None) -> Dataset:
    """Convert *data* into a :class:`Dataset`.

    Accepts a :class:`Dataset`; a CSV file path or open text stream (read with *csv_options*,
    a :class:`~finetuner.csv_data.CSVOptions`); the name of a built-in or pushed data set; a
    docarray ``DocList`` (items in ``text``, ``url``/``uri`` or ``tensor``, labels in
    ``label`` or ``tags['finetuner_label']``, text-image pairs, or
    :class:`~finetuner.document.ScoredPair` / :class:`~finetuner.document.Triplet`
    documents); or a list of ``(item, label)`` pairs. Raises
    :class:`~finetuner.errors.DataError` saying what is wrong and where.
    """
    if isinstance(data, Dataset):
        return data
    if data is None:
        raise DataError(
            f"{name} is missing: pass a CSV file, a DocList, a data set name or a list of "
            "(item, label) pairs."
        )
    from .csv_data import as_csv_options, is_csv_source, read_csv

    if is_csv_source(data):
        return _from_table(read_csv(data, as_csv_options(csv_options), name=name))
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
        return _from_items(items, name)
    raise DataError(
        f"{name}: unsupported type {type(data).__name__}. Pass a CSV file, a docarray DocList, "
        "a data set name or a list of (item, label) pairs."
    )


def _from_name(value: str, name: str) -> Dataset:
    from .datasets import BUILTIN_DATASETS, load_builtin
    from .datastore import load_pushed, pushed_names

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
    from .errors import close_matches_hint

    names = [*BUILTIN_DATASETS, *pushed]
    raise DataError(
        f"{name}: '{value[:80]}' is neither a CSV file nor a known data set. Data sets: "
        f"{', '.join(names)} (push your own with finetuner.push_data(name, data))."
        f"{close_matches_hint(value, names)}"
    )


def _doc_value(doc: Any, modality: str, where: str) -> Any:
    items = _doc_items(doc, where)
    for kind, value in items:
        if kind == modality or (modality == "image" and kind == "tensor"):
            return value
    found = ", ".join(kind for kind, _ in items) or "nothing"
    raise DataError(f"{where} (id {doc.id}) holds {found}; this model embeds {modality} items.")


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
                return [_item_of(t, f"data[{i}]")[1] for i, t in enumerate(data)], None
            raise DataError(
                "this model takes tensors, not strings; texts need a text model and image "
                "paths an image model (see finetuner.describe_models())."
            )
    raise DataError(
        f"cannot encode data of type {type(data).__name__}: pass a DocList, a list of texts or "
        "image paths, a tensor, a numpy array or a list of tensors."
    )


def _stack_tensors(values: list[Any]) -> torch.Tensor:
    return torch.stack([torch.as_tensor(np.asarray(t), dtype=torch.float32) for t in values])


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


def split_dataset(dataset: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Hold out *fraction* of *dataset* for validation, stratified by class where possible."""
    rng = np.random.default_rng(seed)
    held: list[int] = []
    if dataset.labels is None:  # scored pairs and triplets: a plain random split
        held = rng.permutation(len(dataset))[: round(len(dataset) * fraction)].tolist()
    for code in range(dataset.num_classes if dataset.labels is not None else 0):
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


class RandomBatchSampler:
    """Shuffled batches; the order of epoch *e* depends only on ``(seed, e)``, so a resumed
    run sees the same batches as an uninterrupted one."""

    def __init__(self, num_items: int, batch_size: int, seed: int, drop_last: bool = False):
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return max(1, self.num_items // self.batch_size)
        return math.ceil(self.num_items / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.num_items, generator=gen).tolist()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = order[start : start + self.batch_size]
            if batch:
                yield batch


class ClassBalancedBatchSampler:
    """Batches of ``num_items_per_class`` items from each of ``batch_size // num_items_per_class``
    classes, so every batch holds positives and negatives for metric-learning losses.

    Classes with fewer items than ``num_items_per_class`` are drawn with repetition. An epoch
    covers each item about once. Deterministic per ``(seed, epoch)``.
    """

    def __init__(
        self, labels: np.ndarray, batch_size: int, num_items_per_class: int, seed: int
    ) -> None:
        self.labels = np.asarray(labels)
        self.batch_size, self.seed = batch_size, seed
        self.num_classes = int(self.labels.max()) + 1 if len(self.labels) else 0
        self.per_class = max(2, min(num_items_per_class, batch_size // 2))
        self.classes_per_batch = max(2, min(self.num_classes, batch_size // self.per_class))
        self.members = [np.flatnonzero(self.labels == c) for c in range(self.num_classes)]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        per_batch = self.per_class * self.classes_per_batch
        return max(1, math.ceil(len(self.labels) / per_batch))

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        # One queue of shuffled items per class, refilled when it runs dry.
        queues = [rng.permutation(m).tolist() for m in self.members]
        present = [c for c in range(self.num_classes) if len(self.members[c])]
        for _ in range(len(self)):
            chosen = rng.choice(
                present, size=min(self.classes_per_batch, len(present)), replace=False
            )
            batch: list[int] = []
            for c in chosen:
                for _ in range(self.per_class):
                    if not queues[c]:
                        queues[c] = rng.permutation(self.members[c]).tolist()
                    batch.append(queues[c].pop())
            yield batch
