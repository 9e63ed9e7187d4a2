"""Batching: raw items of a :class:`~finetuner.data.dataset.Dataset` into model inputs.

The training hot path gathers raw items by index and preprocesses whole batches (in
``DataLoader`` workers when ``num_workers > 0``); it never builds per-item pydantic objects.
"""

from __future__ import annotations

import itertools
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
    *,
    skip: int = 0,
    seed: int = 0,
) -> Iterator[Batch]:
    """Preprocessed batches of *data* in the order of *sampler*, without its first *skip*
    batches, built in *num_workers* ``DataLoader`` worker processes (0: in this process).

    The workers' random seeds come from *seed*, not from torch's global generator, so
    starting the workers draws nothing from the random streams training uses."""
    indices: Any = itertools.islice(sampler, skip, None) if skip else sampler
    if num_workers == 0:
        for chosen in indices:
            yield collate(data.take(chosen))
        return
    import torch
    from torch.utils.data import DataLoader

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    yield from DataLoader(
        data,  # type: ignore[arg-type]
        batch_sampler=list(indices) if skip else sampler,
        collate_fn=collate,  # type: ignore[arg-type]
        num_workers=num_workers,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(seed),
    )
