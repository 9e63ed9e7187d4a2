"""The search's inputs: embeddings read in row slices, and pairs that may never be a result.

Embeddings stay as given (numpy array or torch tensor) and are read in row slices converted to
float32 on the CPU, so a float64 or GPU input never gets a second full-size copy. Exclusions are
integer (query position, index position) pairs, sorted by query.
"""

from __future__ import annotations

__all__ = [
    "Embeddings",
    "Exclusions",
    "empty_exclusions",
    "exclusions_by_id",
    "exclusions_by_position",
]

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import DataError

_FINITE_CHECK_ROWS = 16_384


class Embeddings:
    """A 2-D matrix of embeddings that hands out float32 CPU row slices."""

    __slots__ = ("_data", "caller", "dim", "name", "num_rows")

    def __init__(self, data: Any, name: str, *, caller: str = "search"):
        """*name* and *caller* (the public function that was called) name the input in errors."""
        if isinstance(data, torch.Tensor):
            data = data.detach()
            is_numeric = data.dtype.is_floating_point or not (
                data.dtype.is_complex or data.dtype == torch.bool
            )
        elif isinstance(data, np.ndarray):
            is_numeric = data.dtype.kind in "fiu"
        else:
            raise DataError(
                f"{caller}: {name} must be a 2-D numpy array or torch tensor, "
                f"got {type(data).__name__}."
            )
        if not is_numeric:
            raise DataError(f"{caller}: {name} must hold real numbers, got dtype {data.dtype}.")
        if data.ndim != 2:
            raise DataError(
                f"{caller}: {name} must be 2-D (rows x dimensions), got shape {tuple(data.shape)}."
            )
        if data.shape[0] == 0 or data.shape[1] == 0:
            raise DataError(
                f"{caller}: {name} is empty (shape {tuple(data.shape)}); "
                "pass at least one row with at least one dimension."
            )
        self._data = data
        self.name, self.caller = name, caller
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
                    f"{self.caller}: {self.name} row {start + int(bad[0, 0])} holds NaN or "
                    "infinity; check the model that made them."
                )


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

    def subset(self, rows: np.ndarray) -> Exclusions:
        """The pairs of the queries at *rows* (sorted, distinct), renumbered to their place."""
        keep = np.isin(self.query_pos, rows)
        return Exclusions(
            np.searchsorted(rows, self.query_pos[keep]).astype(np.int64), self.index_pos[keep]
        )

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
