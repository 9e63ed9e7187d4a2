"""How a fit batches its data: the batch size and the sampler the loss needs."""

from __future__ import annotations

from ..config import FitConfig
from ..data import (
    KINDS,
    ClassBalancedBatchSampler,
    Dataset,
    NoDuplicatesBatchSampler,
    RandomBatchSampler,
    ShardedBatchSampler,
)
from ..errors import ConfigError
from .losses import CLASSIFICATION_LOSSES, uses_in_batch_negatives

__all__ = ["DEFAULT_BATCH_SIZE", "Sampler", "batch_size_for", "build_sampler", "sampler_kind"]

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
