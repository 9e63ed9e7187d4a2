"""Turn what the caller passes into checked, search-ready pieces.

Embeddings stay as given (numpy array or torch tensor) and are read in row slices converted to
float32 on the CPU, so a float64 or GPU input never gets a second full-size copy. Labels and ids
become small integer codes, so relevance and exclusion are integer comparisons on arrays.
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

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from finetuner_evaluation._errors import DataError

_FINITE_CHECK_ROWS = 16_384


class Embeddings:
    """A 2-D matrix of embeddings that hands out float32 CPU row slices."""

    __slots__ = ("_data", "dim", "name", "num_rows")

    def __init__(self, data: Any, name: str):
        if isinstance(data, torch.Tensor):
            data = data.detach()
            is_numeric = data.dtype.is_floating_point or not (
                data.dtype.is_complex or data.dtype == torch.bool
            )
        elif isinstance(data, np.ndarray):
            is_numeric = data.dtype.kind in "fiu"
        else:
            raise DataError(
                f"evaluate_embeddings: {name} must be a 2-D numpy array or torch tensor, "
                f"got {type(data).__name__}."
            )
        if not is_numeric:
            raise DataError(
                f"evaluate_embeddings: {name} must hold real numbers, got dtype {data.dtype}."
            )
        if data.ndim != 2:
            raise DataError(
                f"evaluate_embeddings: {name} must be 2-D (rows x dimensions), "
                f"got shape {tuple(data.shape)}."
            )
        if data.shape[0] == 0 or data.shape[1] == 0:
            raise DataError(
                f"evaluate_embeddings: {name} is empty (shape {tuple(data.shape)}); "
                "pass at least one row with at least one dimension."
            )
        self._data = data
        self.name = name
        self.num_rows, self.dim = int(data.shape[0]), int(data.shape[1])

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` as a contiguous float32 CPU tensor (a copy only when needed)."""
        part = self._data[start:stop]
        if isinstance(part, np.ndarray):
            if part.dtype != np.float32 or not part.flags.c_contiguous or not part.flags.writeable:
                part = np.array(part, dtype=np.float32, order="C")
            return torch.from_numpy(part)
        return part.to(device="cpu", dtype=torch.float32).contiguous()

    def take(self, positions: np.ndarray) -> torch.Tensor:
        """The rows at ``positions`` (any order, repeats allowed) as a float32 CPU tensor."""
        if isinstance(self._data, np.ndarray):
            return torch.from_numpy(np.asarray(self._data[positions], dtype=np.float32))
        picked = self._data[torch.from_numpy(positions).to(self._data.device)]
        return picked.to(device="cpu", dtype=torch.float32)

    def check_finite(self) -> None:
        # A row sum is finite when every entry is (barring overflow, checked exactly below); a
        # matrix-vector product reads the rows once, several times quicker than torch.isfinite.
        ones = torch.ones(self.dim)
        for start in range(0, self.num_rows, _FINITE_CHECK_ROWS):
            chunk = self.rows(start, start + _FINITE_CHECK_ROWS)
            if bool(torch.isfinite(torch.mv(chunk, ones)).all()):
                continue
            bad = (~torch.isfinite(chunk)).any(dim=1).nonzero()
            if bad.numel():
                raise DataError(
                    f"evaluate_embeddings: {self.name} row {start + int(bad[0, 0])} holds NaN or "
                    "infinity; check the model output before evaluating."
                )


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


@dataclass(frozen=True, slots=True)
class Exclusions:
    """(query position, index position) pairs that may never be a result, sorted by query."""

    query_pos: np.ndarray
    index_pos: np.ndarray

    @property
    def max_per_query(self) -> int:
        if self.query_pos.size == 0:
            return 0
        return int(np.bincount(self.query_pos).max())

    def for_queries(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = np.searchsorted(self.query_pos, [start, stop])
        return self.query_pos[lo:hi], self.index_pos[lo:hi]

    def removed_relevant(self, query_codes: np.ndarray, index_codes: np.ndarray) -> np.ndarray:
        """Per query, how many excluded index items carry the query's label."""
        same = index_codes[self.index_pos] == query_codes[self.query_pos]
        return np.bincount(self.query_pos[same], minlength=query_codes.shape[0])


def exclusions_by_position(num_queries: int) -> Exclusions:
    """The query set is its own index: query ``i`` never matches index position ``i``."""
    pos = np.arange(num_queries, dtype=np.int64)
    return Exclusions(pos, pos)


def exclusions_by_id(query_ids: np.ndarray, index_ids: np.ndarray) -> Exclusions:
    """Every index item whose id code equals the query's id code (ids need not be unique)."""
    order = np.argsort(index_ids, kind="stable")
    sorted_ids = index_ids[order]
    lo = np.searchsorted(sorted_ids, query_ids, side="left")
    per_query = np.searchsorted(sorted_ids, query_ids, side="right") - lo
    total = int(per_query.sum())
    query_pos = np.repeat(np.arange(query_ids.shape[0], dtype=np.int64), per_query)
    first = np.repeat(lo, per_query)
    offset = np.arange(total, dtype=np.int64) - np.repeat(
        np.cumsum(per_query) - per_query, per_query
    )
    return Exclusions(query_pos, order[first + offset].astype(np.int64, copy=False))


def empty_exclusions() -> Exclusions:
    empty = np.zeros(0, dtype=np.int64)
    return Exclusions(empty, empty)
