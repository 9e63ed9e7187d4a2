"""Training data: conversion of user data into tensors, batching and class-balanced sampling.

Users hand over docarray ``DocList``s or plain Python lists of ``(tensor, label)`` pairs. They
are converted once into a :class:`Dataset` of stacked tensors and integer class codes, so the
training hot path never touches per-item pydantic objects.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .errors import DataError

__all__ = [
    "LABEL_TAG",
    "ClassBalancedBatchSampler",
    "Dataset",
    "RandomBatchSampler",
    "load_dataset",
    "split_dataset",
]

LABEL_TAG = "finetuner_label"
"""The ``tags`` key holding a document's class label, as in the classic API."""


@dataclass
class Dataset:
    """Items as one stacked tensor, with integer class codes.

    ``labels[i]`` indexes ``classes``; ``ids[i]`` is the item's id (the document id of a
    ``DocList``, else its position as a string).
    """

    inputs: torch.Tensor
    labels: np.ndarray
    classes: list[Any]
    ids: list[str]
    source: str = "data"
    _label_tensor: torch.Tensor | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def label_tensor(self) -> torch.Tensor:
        if self._label_tensor is None:
            self._label_tensor = torch.as_tensor(self.labels, dtype=torch.long)
        return self._label_tensor

    def batch(self, indices: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The inputs and labels of *indices*, gathered in one indexing operation."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.inputs.index_select(0, index), self.label_tensor.index_select(0, index)

    def subset(self, indices: Sequence[int] | np.ndarray) -> Dataset:
        index = np.asarray(indices, dtype=np.int64)
        return Dataset(
            inputs=self.inputs[torch.as_tensor(index)],
            labels=self.labels[index],
            classes=self.classes,
            ids=[self.ids[i] for i in index],
            source=self.source,
        )

    def describe(self, i: int) -> str:
        """A short display string for item *i* (used for example results)."""
        return f"{self.ids[i]} (label {self.classes[int(self.labels[i])]!r})"

    # torch DataLoader protocol: batched fetching, no per-item Python work.
    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batch(indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[i], self.label_tensor[i]


def _as_tensor(value: Any, where: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (int, float)):
        return torch.tensor(value)
    raise DataError(
        f"{where}: expected a tensor (torch.Tensor or numpy array), got {type(value).__name__}. "
        "Text and image data need a text or image backbone; this data must hold tensors."
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
            f"or tags={{'{LABEL_TAG}': ...}} on documents, or (tensor, label) pairs."
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
    return torch.stack([t.to(torch.float32) for t in tensors])


def load_dataset(data: Any, *, name: str = "train_data") -> Dataset:
    """Convert *data* into a :class:`Dataset`.

    Accepts a :class:`Dataset`, a docarray ``DocList`` whose documents have a ``tensor`` and a
    label (``label`` field or ``tags['finetuner_label']``), or a list of ``(tensor, label)``
    pairs. Raises :class:`~finetuner.errors.DataError` saying what is wrong and where.
    """
    if isinstance(data, Dataset):
        return data
    if data is None:
        raise DataError(f"{name} is missing: pass a DocList or a list of (tensor, label) pairs.")
    if isinstance(data, str):
        from .datasets import BUILTIN_DATASETS, load_builtin

        if data in BUILTIN_DATASETS:
            return load_builtin(data)
        raise DataError(
            f"{name}: '{data[:80]}' is not a built-in data set ({', '.join(BUILTIN_DATASETS)}); "
            "CSV files and pushed data sets are not supported by this version. Pass a DocList "
            "or a list of (tensor, label) pairs."
        )
    try:
        from docarray import DocList
    except ImportError:  # pragma: no cover - docarray is a dependency
        DocList = ()  # type: ignore[assignment,misc]

    if isinstance(data, DocList):
        docs = list(data)
        if not docs:
            raise DataError(f"{name} is empty: it needs at least one document.")
        tensors, raw_labels, ids = [], [], []
        for i, doc in enumerate(docs):
            tensor = getattr(doc, "tensor", None)
            if tensor is None:
                raise DataError(
                    f"{name}[{i}] (id {doc.id}) has no tensor. This model takes tensors; "
                    "put the item in the document's `tensor` field."
                )
            tensors.append(_as_tensor(tensor, f"{name}[{i}].tensor"))
            raw_labels.append(_doc_label(doc))
            ids.append(str(doc.id))
    elif isinstance(data, Sequence) or isinstance(data, Iterator):
        items = list(data)
        if not items:
            raise DataError(f"{name} is empty: it needs at least one (tensor, label) pair.")
        tensors, raw_labels, ids = [], [], []
        for i, item in enumerate(items):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise DataError(
                    f"{name}[{i}]: expected a (tensor, label) pair, got "
                    f"{type(item).__name__}{' of length ' + str(len(item)) if isinstance(item, (tuple, list)) else ''}."
                )
            value, label = item
            tensors.append(_as_tensor(value, f"{name}[{i}][0]"))
            if isinstance(label, torch.Tensor | np.ndarray | np.generic):
                label = label.item()
            raw_labels.append(label)
            ids.append(f"{name}[{i}]")  # positions are not identities across data sets
    else:
        raise DataError(
            f"{name}: unsupported type {type(data).__name__}. Pass a docarray DocList or a list "
            "of (tensor, label) pairs."
        )
    inputs = _stack(tensors, name)
    if not torch.isfinite(inputs).all():
        raise DataError(f"{name} holds NaN or infinite values; clean the data before training.")
    labels, classes = _labels_to_codes(raw_labels, name)
    return Dataset(inputs=inputs, labels=labels, classes=classes, ids=ids, source=name)


def split_dataset(dataset: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Hold out *fraction* of *dataset* for validation, stratified by class where possible."""
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for code in range(dataset.num_classes):
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
