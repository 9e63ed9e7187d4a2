"""The data an int8 export is checked on: the run's own evaluation data, or a file given.

The run's evaluation data is the ``query_data`` (and ``index_data``) of the first
``EvaluationCallback`` its config records; a path there is read from the current folder, as
the fit read it. Judged evaluation (``queries``/``corpus``/``qrels``) is not used here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ...data import CSVOptions, load_dataset
from .source import ExportSource

__all__ = ["EvaluationData", "find_evaluation_data"]


@dataclass(frozen=True)
class EvaluationData:
    """Labeled queries, and the index they search (``None``: the queries themselves)."""

    origin: str
    queries: list[Any]
    query_labels: list[Any]
    query_ids: list[str]
    index: list[Any] | None
    index_labels: list[Any] | None
    index_ids: list[str] | None
    limit: int

    @property
    def size(self) -> int:
        """How many items one encoding pass embeds: the queries and the index."""
        return len(self.queries) + len(self.index or [])


def _recorded(config: dict[str, Any]) -> dict[str, Any] | None:
    """The options of the run's first label-based ``EvaluationCallback``."""
    for callback in config.get("callbacks") or []:
        options = callback.get("options") or {}
        if callback.get("class") == "EvaluationCallback" and options.get("query_data"):
            return options
    return None


def find_evaluation_data(source: ExportSource, eval_data: Any) -> EvaluationData | str:
    """The evaluation data of the int8 check (*eval_data* when given, else the run's), or the
    reason there is none, in words."""
    options: dict[str, Any] = {}
    if eval_data is not None:
        query_data, index_data, origin = eval_data, None, f"eval_data {eval_data}"
    else:
        recorded = _recorded(source.config)
        if recorded is None:
            return (
                "the run records no EvaluationCallback with query_data; give evaluation "
                "data with --eval-data FILE (eval_data=) to compare the int8 model's metrics"
            )
        options = recorded
        query_data, index_data = recorded["query_data"], recorded.get("index_data")
        origin = f"the run's EvaluationCallback query_data {query_data}" + (
            f", index_data {index_data}" if index_data else ""
        )
        for data in (query_data, index_data):
            if isinstance(data, str) and data.endswith(".csv") and not os.path.exists(data):
                return (
                    f"the run's evaluation data '{data}' is not found from {os.getcwd()}; run "
                    "the export from the folder the fit ran in, or give --eval-data FILE"
                )
    csv_options = CSVOptions(**(source.config.get("csv_options") or {}))
    queries = _view(load_dataset(query_data, name="query_data", csv_options=csv_options), source)
    index = (
        _view(load_dataset(index_data, name="index_data", csv_options=csv_options), source)
        if index_data
        else None
    )
    return EvaluationData(
        origin=origin,
        queries=list(queries.columns[0].values),
        query_labels=[queries.classes[c] for c in queries.labels],
        query_ids=list(queries.ids),
        index=None if index is None else list(index.columns[0].values),
        index_labels=None if index is None else [index.classes[c] for c in index.labels],
        index_ids=None if index is None else list(index.ids),
        limit=int(options.get("limit") or 20),
    )


def _view(data: Any, source: ExportSource) -> Any:
    """The labeled single column of *data* that the model embeds."""
    if data.kind == "retrieval":
        data = data.as_labeled()
    return data.column(source.modality if source.modality != "tensor" else None)
