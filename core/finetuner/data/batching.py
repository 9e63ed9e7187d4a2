"""Batching: raw items of a :class:`~finetuner.data.dataset.Dataset` into model inputs.

The training hot path gathers raw items by index and preprocesses whole batches (in
``DataLoader`` workers when ``num_workers > 0``); it never builds per-item pydantic objects.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .dataset import Batch, Dataset

__all__ = ["Collate", "iterate_batches"]


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
