"""What ``ctx`` does for plugins during a fit: encode data with the current weights, load data
the way the fit does, and record example results in the run.

In a distributed fit ``ctx.encode`` is a collective: each rank encodes its part of the data and
every rank gets all the vectors, so every rank computes the same metrics. Plugins call it on
every rank (hooks run on every rank, with the same events)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..data import TENSOR, Dataset, encodable_values, load_dataset
from ..distributed import gather_array_rows, shard_bounds
from ..encoding import encode_items
from ..errors import ConfigError
from ..models.prompts import with_prompt
from ..runs.writer import RunWriter
from .model_setup import MODEL_NAME
from .setup import FitSetup

__all__ = ["FitServices"]


class FitServices:
    """The implementations behind ``ctx.encode``, ``ctx.load_data`` and
    ``ctx.record_examples`` for one fit."""

    def __init__(self, setup: FitSetup, writer: RunWriter) -> None:
        self.setup, self.writer = setup, writer

    def load_data(self, data: Any, name: str) -> Dataset:
        return load_dataset(data, name=name, csv_options=self.setup.config.csv_options)

    def encode(
        self,
        data: Any,
        *,
        model: str | None,
        batch_size: int,
        num_workers: int,
        prompt: str | None = None,
    ) -> np.ndarray:
        models = self.setup.models
        name = model or MODEL_NAME
        if name not in models.modules:
            raise ConfigError(
                f"no model named '{name}' in this fit; models: {', '.join(models.modules)}."
            )
        modality = models.metadata[name]["modality"]
        if isinstance(data, (list, tuple)) and data and not isinstance(data[0], (list, tuple)):
            values = encodable_values(data, modality)[0]  # bare texts, image paths or tensors
        else:
            dataset = data if isinstance(data, Dataset) else self.load_data(data, "data")
            values = dataset.column(modality if modality != TENSOR else None).columns[0].values
        dist = self.setup.dist
        shard = dist.enabled and len(values) >= dist.world_size
        if shard:  # each rank encodes its part; all of them get every vector
            start, stop = shard_bounds(len(values), dist.rank, dist.world_size)
            values = values[start:stop]
        vectors = encode_items(
            models.modules[name],
            with_prompt(models.preprocessors[name], models.metadata[name].get("options"), prompt),
            values,
            batch_size=batch_size,
            device=self.setup.device,
            num_workers=num_workers,
            precision=self.setup.config.precision,
        )
        return gather_array_rows(vectors) if shard else vectors

    def record_examples(self, stage: str, examples: Mapping[str, Any]) -> None:
        self.writer.record_examples(stage, examples)

    def record_query_results(
        self, stage: str, key: str, metric: str, queries: Sequence[Mapping[str, Any]]
    ) -> None:
        self.writer.record_query_results(stage, key, metric, queries)
