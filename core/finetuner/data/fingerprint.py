"""A data set's fingerprint: its row count and a hash of what it holds, as loaded.

A resumed run compares the fingerprints of its training and validation data with those it
started with, so that a resume on other data is refused instead of silently training on it.
The hash (BLAKE2b) covers the kind, the items of every column (tensor bytes, dtypes and shapes,
texts, image paths or pixels), the class of every row (by label, not by its code) and the
scores; ids and the data's source are left out, so a file that moved still matches.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from .dataset import Dataset

__all__ = ["fingerprint"]


def _feed_array(digest: Any, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    if array.dtype.hasobject:  # pointers are no content: hash what they point to
        for value in array.ravel():
            _feed_value(digest, repr(value))
    else:
        digest.update(array.data)


def _feed_value(digest: Any, value: Any) -> None:
    if isinstance(value, str):
        data = value.encode("utf-8", errors="surrogatepass")
        digest.update(b"s%d:" % len(data))
        digest.update(data)
    elif isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(value, np.ndarray):
        _feed_array(digest, value)
    elif hasattr(value, "tobytes") and hasattr(value, "size"):  # a PIL image
        digest.update(f"image{value.size}{getattr(value, 'mode', '')}".encode())
        digest.update(value.tobytes())
    else:
        _feed_value(digest, repr(value))


def fingerprint(dataset: Dataset) -> dict[str, Any]:
    """``{"rows": N, "blake2b": hex}`` of *dataset*: equal exactly when it holds the same rows
    in the same order."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{dataset.kind}|{len(dataset.columns)}|".encode())
    for column in dataset.columns:
        digest.update(f"column {column.modality}|".encode())
        if isinstance(column.values, torch.Tensor):
            _feed_value(digest, column.values)
        else:
            for value in column.values:
                _feed_value(digest, value)
    if dataset.labels is not None:
        for label in dataset.classes:
            _feed_value(digest, repr(label))
        _feed_array(digest, np.asarray(dataset.labels, dtype=np.int64))
    if dataset.scores is not None:
        _feed_array(digest, np.asarray(dataset.scores))
    return {"rows": len(dataset), "blake2b": digest.hexdigest()}
