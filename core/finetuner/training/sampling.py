"""How a fit batches its data: the batch size and the sampler the loss needs."""

from __future__ import annotations

import warnings

from ..config import FitConfig
from ..data import (
    KINDS,
    ClassBalancedBatchSampler,
    Dataset,
    NoDuplicatesBatchSampler,
    RandomBatchSampler,
    ShardedBatchSampler,
)
from ..errors import ConfigError, DataWarning
from .losses import CLASSIFICATION_LOSSES, uses_in_batch_negatives

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "Sampler",
    "batch_size_for",
    "build_sampler",
    "sampler_kind",
    "warn_unfilled_batches",
]

DEFAULT_BATCH_SIZE = 32

Sampler = (
    ClassBalancedBatchSampler | NoDuplicatesBatchSampler | RandomBatchSampler | ShardedBatchSampler
)


def batch_size_for(config: FitConfig, data: Dataset) -> int:
    """The batch size: the option (32 by default), at most the size of *data*, at least 2."""
    return max(2, min(config.batch_size or DEFAULT_BATCH_SIZE, len(data)))


def sampler_kind(config: FitConfig, data: Dataset) -> str:
    """``'class'`` (class-balanced batches), ``'no_duplicates'`` or ``'random'``: the option,
    or for ``'auto'`` no-duplicates batches for in-batch-negative losses on pairs and
    retrieval data, class-balanced for label losses on labeled data, and random otherwise."""
    labeled = data.kind == "labeled"
    if config.sampler == "class" and not labeled:
        raise ConfigError(
            f"sampler='class' needs class labels, but train_data holds "
            f"{KINDS[data.kind]}; use sampler='auto', 'no_duplicates' or 'random'."
        )
    if config.sampler != "auto":
        return config.sampler
    in_batch = uses_in_batch_negatives(config.loss, config.loss_options)
    if in_batch and data.kind in ("pairs", "retrieval"):
        return "no_duplicates"
    if not labeled or config.loss in CLASSIFICATION_LOSSES:
        return "random"
    return "class"


def build_sampler(
    kind: str,
    data: Dataset,
    batch_size: int,
    num_items_per_class: int,
    seed: int,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> Sampler:
    """Batches of *data* of *kind*; the order of each epoch depends only on (seed, epoch).
    With several ranks, *batch_size* is each rank's: the batches of ``batch_size *
    world_size`` items are drawn once, and each rank takes its part of every one."""
    size = min(batch_size * world_size, len(data))
    inner: Sampler
    if kind == "class":
        assert data.labels is not None
        inner = ClassBalancedBatchSampler(data.labels, size, num_items_per_class, seed)
    elif kind == "no_duplicates":
        inner = NoDuplicatesBatchSampler.from_dataset(data, size, seed)
    else:
        inner = RandomBatchSampler(len(data), size, seed)
    return ShardedBatchSampler(inner, rank, world_size) if world_size > 1 else inner


def warn_unfilled_batches(sampler: Sampler) -> None:
    """Warn, once per fit, when a class-balanced *sampler* cannot fill the batch size asked
    for: it draws ``num_items_per_class`` items from each of at most as many classes as the
    data has, so a large batch of few classes comes out smaller."""
    inner = sampler.inner if isinstance(sampler, ShardedBatchSampler) else sampler
    if not isinstance(inner, ClassBalancedBatchSampler) or inner.filled >= inner.batch_size:
        return
    asked, classes = inner.batch_size, sum(1 for m in inner.members if len(m))
    per_class = _per_class_to_fill(asked, classes)
    warnings.warn(
        f"batch_size={asked}: the class-balanced sampler trains with batches of {inner.filled} "
        f"items, {inner.filled // inner.per_class} classes of num_items_per_class="
        f"{inner.per_class} (train_data has {classes} classes). For batches of "
        f"{per_class * min(classes, asked // per_class)}, pass num_items_per_class={per_class}; "
        "or use sampler='random', which fills any batch size.",
        DataWarning,
        stacklevel=2,
    )


def _per_class_to_fill(batch_size: int, classes: int) -> int:
    """The smallest ``num_items_per_class`` whose batches come closest to *batch_size*."""
    start = max(2, -(-batch_size // max(classes, 1)))
    candidates = range(start, max(start, batch_size // 2) + 1)
    return max(candidates, key=lambda p: (p * min(classes, batch_size // p), -p))
