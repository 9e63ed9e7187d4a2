"""The leaf of the data package: :class:`Dataset`, its :class:`Column`s and :class:`Batch`es.

A :class:`Dataset` is training or evaluation data after conversion: columns of items (a
stacked tensor, or a list of texts or image references) with integer class codes, or pair
scores. This module also holds the names every other data module shares: the kinds of data,
the modalities of items and the ``tags`` keys of the classic API. It imports nothing from
finetuner but :mod:`finetuner.errors`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import DataError

__all__ = [
    "IMAGE",
    "KINDS",
    "LABEL_TAG",
    "SCORE_TAG",
    "TENSOR",
    "TEXT",
    "Batch",
    "Column",
    "Dataset",
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
    "retrieval": "queries with a relevant document each (query, positive, and optional negatives)",
}


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
        """The number of rows: of a tensor, a list, or a mapping of tensors (tokenised text,
        whose length is that of its tensors, not its number of fields)."""
        first = self.items[0]
        while isinstance(first, Mapping) and first:
            first = next(iter(first.values()))
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
        """Single-column labeled data: this data, for pairs the column of *modality* (rows
        keep their labels, so a text and its image are relevant to each other), and for
        retrieval data its queries and positives (:meth:`as_labeled`)."""
        if self.kind == "labeled" or (modality is None and len(self.columns) == 1):
            return self
        if self.kind == "retrieval" and modality in (None, self.columns[0].modality):
            return self.as_labeled()
        chosen = [c for c in self.columns if c.modality == modality]
        if self.kind != "pairs" or not chosen:
            raise DataError(
                f"{self.source} holds {KINDS[self.kind]}; this needs labeled items"
                f"{f' ({modality})' if modality else ''}."
            )
        return Dataset([chosen[0]], self.labels, self.classes, self.ids, source=self.source)

    def as_labeled(self) -> Dataset:
        """Retrieval data as labeled single-column items: each distinct query and its distinct
        positives share the query's group label (negatives are left out). A text that occurs
        again, as a query or a positive, keeps the group it got first and is stored once; each
        item keeps the id of the row it first occurs in."""
        if self.kind != "retrieval":
            raise DataError(f"{self.source} holds {KINDS[self.kind]}, not retrieval data.")
        queries, positives = self.columns[0].values, self.columns[1].values
        group_of: dict[Any, int] = {}
        items: list[Any] = []
        labels: list[int] = []
        ids: list[str] = []
        groups = 0
        for row, (query, positive) in enumerate(zip(queries, positives)):
            group = group_of.get(query)
            if group is None:
                group = group_of[query] = groups
                groups += 1
                items.append(query)
                labels.append(group)
                ids.append(self.ids[row])
            if positive not in group_of:
                group_of[positive] = group
                items.append(positive)
                labels.append(group)
                ids.append(self.ids[row])
        return Dataset(
            [Column(self.columns[0].modality, items)],
            np.asarray(labels, dtype=np.int64),
            list(range(groups)),
            ids,
            source=self.source,
        )

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
