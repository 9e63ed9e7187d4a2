"""Batch samplers: which items of a :class:`~finetuner.data.dataset.Dataset` form each batch.

Both are deterministic per ``(seed, epoch)``, so a resumed run sees the batches an
uninterrupted one would have seen. They yield lists of item positions, as a ``DataLoader``'s
``batch_sampler`` does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["ClassBalancedBatchSampler", "RandomBatchSampler"]


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
