"""Turn what the caller passes into checked, search-ready pieces.

The embeddings and exclusions are the core search's (:mod:`finetuner.search`, re-exported here).
Labels and ids become small integer codes, so relevance and exclusion are integer comparisons on
arrays.
"""

from __future__ import annotations

__all__ = [
    "Embeddings",
    "Exclusions",
    "empty_exclusions",
    "encode_pair",
    "exclusions_by_id",
    "exclusions_by_position",
]

from typing import Any

import numpy as np
import torch

from finetuner.search import (
    Embeddings,
    Exclusions,
    empty_exclusions,
    exclusions_by_id,
    exclusions_by_position,
)
from finetuner_evaluation._errors import DataError


def _as_key_list_or_array(values: Any, name: str, expected: int) -> list | np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise DataError(
                f"evaluate_embeddings: {name} must be one-dimensional, got shape {values.shape}."
            )
        out: list | np.ndarray = values
    elif isinstance(values, (str, bytes)):
        raise DataError(
            f"evaluate_embeddings: {name} must be a sequence of labels, not a single string."
        )
    else:
        try:
            out = list(values)
        except TypeError:
            raise DataError(
                f"evaluate_embeddings: {name} must be a sequence of labels or a 1-D array, "
                f"got {type(values).__name__}."
            ) from None
    if len(out) != expected:
        raise DataError(
            f"evaluate_embeddings: {name} has {len(out)} entries but there are {expected} "
            "embedding rows; pass one entry per row."
        )
    return out


_FAST_KINDS = ("biu", "f", "US")


def encode_pair(
    query_values: Any,
    index_values: Any | None,
    *,
    names: tuple[str, str],
    counts: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray | None]:
    """Map labels (or ids) of queries and index to shared int64 codes: equal values, equal codes.

    ``index_values=None`` encodes the queries alone. Values need only be hashable; arrays of one
    plain dtype take a vectorised path, anything else a single dict pass.
    """
    query = _as_key_list_or_array(query_values, names[0], counts[0])
    index = (
        None if index_values is None else _as_key_list_or_array(index_values, names[1], counts[1])
    )
    parts = [query] if index is None else [query, index]
    if all(isinstance(p, np.ndarray) for p in parts):
        kinds = {p.dtype.kind for p in parts}
        if any(kinds <= set(group) for group in _FAST_KINDS):
            _, codes = np.unique(np.concatenate(parts), return_inverse=True)
            codes = codes.astype(np.int64, copy=False).reshape(-1)
            return codes[: counts[0]], (None if index is None else codes[counts[0] :])
    table: dict[Any, int] = {}
    encoded = []
    for part, name in zip(parts, names):
        seq = part.tolist() if isinstance(part, np.ndarray) else part
        try:
            encoded.append(
                np.fromiter(
                    (table.setdefault(v, len(table)) for v in seq), dtype=np.int64, count=len(seq)
                )
            )
        except TypeError as exc:
            raise DataError(
                f"evaluate_embeddings: {name} must hold hashable values (strings or ints): {exc}."
            ) from None
    return encoded[0], (None if index is None else encoded[1])
