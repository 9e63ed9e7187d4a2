"""Single values and documents as items: the pieces every conversion into a Dataset shares.

An item is a text, an image reference (resolved to a local path) or a tensor; a column holds
items of one modality. These helpers find the item in a Python value or a document, stack
tensors into one column, turn labels into class codes and check scores, and say what is
wrong and where when they cannot.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .dataset import IMAGE, LABEL_TAG, TENSOR, TEXT, Column
from .image_references import is_image_reference, resolve_image_reference

__all__ = [
    "IMAGE_FIELDS",
    "as_tensor",
    "column_of",
    "doc_items",
    "doc_label",
    "finite_scores",
    "item_of",
    "labels_to_codes",
    "one_modality",
    "pair_labels",
    "stack_items",
]

IMAGE_FIELDS = ("url", "uri", "image", "image_url", "image_path")
"""The document fields that may name an image, in the order they are looked at."""


def as_tensor(value: Any, where: str) -> torch.Tensor:
    """*value* (a tensor, a numpy array or a list of numbers) as a tensor."""
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


def item_of(value: Any, where: str) -> tuple[str, Any]:
    """The modality and raw value of one item given as a Python value."""
    if isinstance(value, str):
        if is_image_reference(value):
            return IMAGE, resolve_image_reference(value, where=where)
        return TEXT, value
    if isinstance(value, os.PathLike):
        return IMAGE, resolve_image_reference(os.fspath(value), where=where)
    return TENSOR, as_tensor(value, where)


def doc_items(doc: Any, where: str) -> list[tuple[str, Any]]:
    """The items a document carries: its text, its image (url/uri) and its tensor."""
    items: list[tuple[str, Any]] = []
    text = getattr(doc, "text", None)
    if isinstance(text, str):
        items.append((TEXT, text))
    for name in IMAGE_FIELDS:
        ref = getattr(doc, name, None)
        if isinstance(ref, str) and ref:
            items.append((IMAGE, resolve_image_reference(ref, where=f"{where}.{name}")))
            break
    tensor = getattr(doc, "tensor", None)
    if tensor is not None and not any(m == IMAGE for m, _ in items):
        items.append((TENSOR, as_tensor(tensor, f"{where}.tensor")))
    return items


def doc_label(doc: Any) -> Any:
    """A document's class label: its ``label`` field, else ``tags['finetuner_label']``."""
    label = getattr(doc, "label", None)
    if label is None:
        tags = getattr(doc, "tags", None)
        if isinstance(tags, dict):
            label = tags.get(LABEL_TAG)
    return label


def labels_to_codes(raw: list[Any], where: str) -> tuple[np.ndarray, list[Any]]:
    """Integer codes of *raw* labels and the sorted classes they index; every item needs one."""
    missing = [i for i, label in enumerate(raw) if label is None]
    if missing:
        shown = ", ".join(str(i) for i in missing[:5])
        raise DataError(
            f"{where}: {len(missing)} item(s) have no label (positions {shown}"
            f"{', ...' if len(missing) > 5 else ''}). Give every item a label: a `label` field "
            f"or tags={{'{LABEL_TAG}': ...}} on documents, (item, label) pairs, or an "
            "`item,label` CSV read with CSVOptions(is_labeled=True)."
        )
    _check_label_kinds(raw, where)
    try:
        classes = sorted(set(raw))
    except TypeError:
        classes = sorted(set(raw), key=repr)
    code = {label: i for i, label in enumerate(classes)}
    return np.fromiter((code[label] for label in raw), dtype=np.int64, count=len(raw)), classes


def _label_kind(label: Any) -> str | None:
    """``'text'`` or ``'number'`` for a label that can name a class; ``None`` otherwise."""
    if isinstance(label, str):
        return "text"
    if isinstance(label, (bool, int, np.integer)):
        return "number"
    if isinstance(label, (float, np.floating)):
        return "number" if np.isfinite(label) else None
    return None


def _check_label_kinds(raw: list[Any], where: str) -> None:
    """Labels are strings or finite numbers: a list, a dict or NaN names no class, and ``0``
    next to ``'0'`` would silently make two classes of what reads as one."""
    seen: dict[str, tuple[int, str]] = {}
    for i, label in enumerate(raw):
        kind = _label_kind(label)
        if kind is None:
            raise DataError(
                f"{where}[{i}]: the label {label!r:.60} ({type(label).__name__}) cannot name a "
                "class; give each item one label, a string or a finite number."
            )
        first = seen.setdefault(str(label), (i, kind))
        if first[1] != kind:
            raise DataError(
                f"{where}[{i}]: the label {label!r:.60} is a {kind}, and the label at position "
                f"{first[0]} is the {first[1]} {raw[first[0]]!r:.60}: they would be two classes; "
                "give labels of one type (all strings or all numbers)."
            )


def pair_labels(texts: list[str]) -> tuple[np.ndarray, list[Any]]:
    """Rows of a text-image pair set that share their text share a label."""
    code: dict[str, int] = {}
    labels = np.fromiter((code.setdefault(t, len(code)) for t in texts), np.int64, len(texts))
    return labels, list(range(len(code)))


def stack_items(tensors: list[torch.Tensor], where: str) -> torch.Tensor:
    """One float tensor of the items, which must share a shape and hold finite values."""
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


def column_of(modality: str, values: list[Any], where: str) -> Column:
    """A column of *values*, tensors stacked into one."""
    if modality == TENSOR:
        return Column(TENSOR, stack_items(values, where))
    return Column(modality, values)


def one_modality(kinds: list[str], where: str) -> str:
    """The one modality of a column's items; a column mixing them is an error."""
    found = sorted(set(kinds))
    if len(found) > 1:
        first = kinds[0]
        bad = next(i for i, k in enumerate(kinds) if k != first)
        raise DataError(
            f"{where}: items mix {' and '.join(found)} ({first} at position 0, {kinds[bad]} at "
            f"position {bad}); one column holds one kind of item."
        )
    return found[0]


def finite_scores(raw: list[Any], where: str, what: str) -> np.ndarray:
    """*raw* scores (or margins: *what*) as float32, each a finite number."""
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
