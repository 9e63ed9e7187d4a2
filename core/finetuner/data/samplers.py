"""Batch samplers: which items of a :class:`~finetuner.data.dataset.Dataset` form each batch.

All are deterministic per ``(seed, epoch)``, so a resumed run sees the batches an
uninterrupted one would have seen. They yield lists of item positions, as a ``DataLoader``'s
``batch_sampler`` does.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ..distributed.env import shard_bounds
from ..errors import DataError
from .dataset import Dataset

__all__ = [
    "ClassBalancedBatchSampler",
    "NoDuplicatesBatchSampler",
    "RandomBatchSampler",
    "ShardedBatchSampler",
]


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

    @property
    def filled(self) -> int:
        """The items of each batch: fewer than ``batch_size`` when the classes cannot fill it."""
        present = sum(1 for m in self.members if len(m))
        return self.per_class * min(self.classes_per_batch, present)

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


class _PlannedEpochs:
    """A sampler whose batches of each epoch are planned whole, once, when first asked for:
    ``len`` is then exact, and iterating twice gives the same batches."""

    epoch: int
    _cached: tuple[int, list[list[int]]] | None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """The batches of the current epoch (computed once per epoch)."""
        if self._cached is None or self._cached[0] != self.epoch:
            self._cached = (self.epoch, self._plan(self.epoch))
        return self._cached[1]

    def _plan(self, epoch: int) -> list[list[int]]:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.batches())

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches():
            yield list(batch)


class NoDuplicatesBatchSampler(_PlannedEpochs):
    """Shuffled batches in which no key (a text, an image path, a tensor's bytes) occurs in
    two rows, so in-batch negatives are never copies of a row's query or positive.

    ``keys[i]`` holds the keys of row *i* (all its columns). Each epoch shuffles the rows
    (deterministic per ``(seed, epoch)``) and fills batches in one pass: a row that would
    repeat a key of the batch waits in a queue, and waiting rows go first into the following
    batches. Batches are full while the rows allow; the last ones may be smaller. Every row
    occurs exactly once per epoch. A row left alone at the end joins a batch with room that
    shares none of its items, or takes the place of the one row it clashes with in a batch,
    which moves to a third batch it fits. Data too repetitive for *batch_size* (more than two
    batches, and more than a tenth of the batches, holding a single row) is a
    :class:`~finetuner.errors.DataError`.
    """

    def __init__(
        self,
        keys: Sequence[Sequence[Hashable]],
        batch_size: int,
        seed: int,
        *,
        source: str = "train_data",
    ) -> None:
        self.keys = [frozenset(row) for row in keys]
        self.batch_size, self.seed, self.source = batch_size, seed, source
        self.epoch = 0
        self._cached: tuple[int, list[list[int]]] | None = None

    @classmethod
    def from_dataset(cls, data: Dataset, batch_size: int, seed: int) -> NoDuplicatesBatchSampler:
        """A sampler over the rows of *data*, keyed by the items of all its columns."""
        columns = [_column_keys(column.values) for column in data.columns]
        return cls(list(zip(*columns)), batch_size, seed, source=data.source)

    def _plan(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        stream = iter(rng.permutation(len(self.keys)).tolist())
        pending: list[int] = []
        batches: list[list[int]] = []
        while True:
            batch, used = self._from_pending(pending)
            while len(batch) < self.batch_size:
                row = next(stream, None)
                if row is None:
                    break
                if not self._add_if_free(row, batch, used):
                    pending.append(row)
            if not batch:
                break
            batches.append(batch)
        batches = self._merge_single_rows(batches)
        singles = sum(len(batch) == 1 for batch in batches)
        if singles > max(2, len(batches) // 10):
            raise self._too_repetitive()
        return batches

    def _from_pending(self, pending: list[int]) -> tuple[list[int], set[Hashable]]:
        """A batch begun with the waiting rows that fit together, oldest first; the rest keep
        waiting (*pending* is updated in place)."""
        batch: list[int] = []
        used: set[Hashable] = set()
        waiting: list[int] = []
        for pos, row in enumerate(pending):
            if len(batch) == self.batch_size:
                waiting.extend(pending[pos:])
                break
            if not self._add_if_free(row, batch, used):
                waiting.append(row)
        pending[:] = waiting
        return batch, used

    def _add_if_free(self, row: int, batch: list[int], used: set[Hashable]) -> bool:
        """Add *row* to *batch* if none of its texts is *used* yet; says whether it was."""
        if not self.keys[row].isdisjoint(used):
            return False
        batch.append(row)
        used.update(self.keys[row])
        return True

    def _merge_single_rows(self, batches: list[list[int]]) -> list[list[int]]:
        """Batches of one row (the rows left at the end, which repeat each other's items)
        placed elsewhere where they can be: into an earlier batch with room that shares none of
        their items, or into a batch where they clash with one row only, which then moves to
        a third batch with room that it fits."""
        where = {row: b for b, batch in enumerate(batches) for row in batch}
        holders: dict[Hashable, list[int]] = {}
        for row, keys in enumerate(self.keys):
            for key in keys:
                holders.setdefault(key, []).append(row)

        def clashes(row: int) -> dict[int, set[int]]:
            """The rows of each batch that share an item with *row*, by batch."""
            found: dict[int, set[int]] = {}
            for key in self.keys[row]:
                for other in holders[key]:
                    if other != row:
                        found.setdefault(where[other], set()).add(other)
            return found

        def move(row: int, target: int) -> None:
            batches[where[row]].remove(row)
            batches[target].append(row)
            where[row] = target

        def with_room(row: int, excluded: set[int]) -> int | None:
            found = clashes(row)
            return next(
                (
                    b
                    for b, batch in enumerate(batches)
                    if 0 < len(batch) < self.batch_size and b not in excluded and b not in found
                ),
                None,
            )

        for own, batch in enumerate(batches):
            if len(batch) != 1:
                continue
            row = batch[0]
            target = with_room(row, {own})
            if target is not None:
                move(row, target)
                continue
            found = clashes(row)
            for b, clash in found.items():
                if b == own or len(clash) != 1:
                    continue
                (other,) = clash
                home = with_room(other, {own, b})
                if home is not None:
                    move(other, home)
                    move(row, b)
                    break
        return [batch for batch in batches if batch]

    def _too_repetitive(self) -> DataError:
        counts = Counter(key for row in self.keys for key in row)
        key, count = counts.most_common(1)[0]
        shown = repr(key if not isinstance(key, bytes) else "<a tensor>")
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return DataError(
            f"{self.source} has too few distinct texts for batch_size={self.batch_size} with "
            f"sampler='no_duplicates': rows share their items so often ({shown} occurs in "
            f"{count} of {len(self.keys)} rows) that a batch without a repeated item holds a "
            "single row. Use a smaller batch_size, vary the negatives (mine them again from a "
            "larger corpus), or pass sampler='random'."
        )


def _column_keys(values: Any) -> list[Hashable]:
    """The key of each item of a column: texts and image paths as they are, tensors (and
    in-memory images) by their bytes."""
    if isinstance(values, torch.Tensor):
        return [row.numpy().tobytes() for row in values.detach().cpu()]
    return [v if isinstance(v, str) else np.asarray(v).tobytes() for v in values]


class ShardedBatchSampler(_PlannedEpochs):
    """This rank's share of every batch of *inner*, a sampler of global batches (the batch
    size times the number of ranks): contiguous parts of equal size, the first ranks one item
    more when a batch does not divide evenly, so the ranks see disjoint items of one seeded
    order. A global batch with fewer items than ranks (the end of an epoch) is left out, since
    every rank must train on every step."""

    def __init__(self, inner: Any, rank: int, world_size: int) -> None:
        self.inner, self.rank, self.world_size = inner, rank, world_size
        self.epoch = 0
        self._cached = None

    def _plan(self, epoch: int) -> list[list[int]]:
        self.inner.set_epoch(epoch)
        shards = []
        for batch in self.inner:
            if len(batch) >= self.world_size:
                start, stop = shard_bounds(len(batch), self.rank, self.world_size)
                shards.append(list(batch[start:stop]))
        return shards
