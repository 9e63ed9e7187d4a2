"""``EvaluationCallback``: retrieval metrics before, during and after fine-tuning."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from finetuner.callback import Callback
from finetuner.errors import ConfigError
from finetuner_evaluation._constants import (
    ANNOY_RECALL_NAME,
    AUTO_ANNOY_MIN_INDEX_ROWS,
    DEFAULT_N_TREES,
    DISTANCES,
    METRIC_NAMES,
    SEARCHES,
)
from finetuner_evaluation._judged import check_dim_fits, judged_evaluation

if TYPE_CHECKING:
    import numpy as np

__all__ = ["EvaluationCallback", "caption_for"]


def caption_for(name: str) -> str:
    """The key prefix of a model name: ``resnet-base`` -> ``resnet_base``; a Hugging Face
    name or a folder gives its last part: ``sentence-transformers/all-MiniLM-L6-v2`` ->
    ``all_minilm_l6_v2``."""
    if "/" in name or os.sep in name:
        last = name.rstrip("/" + os.sep).replace(os.sep, "/").rsplit("/", 1)[-1]
        return re.sub(r"[^0-9a-z]+", "_", last.lower()).strip("_") or "model"
    return name.replace("-", "_").replace(" ", "_")


def _positive_int(owner: str, name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"{owner}: {name} must be a positive integer{' or None' if allow_none else ''}, not {value!r}."
        )


_STORED = (
    "query_data",
    "index_data",
    "model",
    "index_model",
    "batch_size",
    "limit",
    "distance",
    "num_workers",
    "steps_per_interval",
    "num_example_queries",
    "caption",
    "query_sample_size",
    "search",
    "n_trees",
    "search_k",
    "seed",
    "queries",
    "corpus",
    "qrels",
)


def _check_values(owner: str, **values: Any) -> None:
    """The numbers and names of ``EvaluationCallback``'s options are within their limits."""
    for name in ("batch_size", "limit", "num_example_queries", "n_trees"):
        _positive_int(owner, name, values[name])
    for name in ("steps_per_interval", "query_sample_size", "search_k"):
        _positive_int(owner, name, values[name], allow_none=True)
    workers = values["num_workers"]
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"{owner}: num_workers must be a non-negative integer, not {workers!r}.")
    if values["distance"] not in DISTANCES:
        raise ConfigError(
            f"{owner}: unknown distance {values['distance']!r}; use one of {', '.join(DISTANCES)}."
        )
    if values["search"] not in SEARCHES:
        raise ConfigError(
            f"{owner}: unknown search {values['search']!r}; use one of {', '.join(SEARCHES)}."
        )
    caption = values["caption"]
    if caption is not None and (not isinstance(caption, str) or not caption):
        raise ConfigError(f"{owner}: caption must be a non-empty string, not {caption!r}.")


class EvaluationCallback(Callback):
    """Evaluate retrieval quality with the model being fine-tuned.

    Queries are searched in the index (or among themselves when ``index_data`` is not given);
    a result is relevant when it has the query's label. The eight metrics of the evaluation
    documentation are published as ``{caption}_{metric}`` before training, after every epoch
    (and every ``steps_per_interval`` steps), and after training on the final weights.

    :param query_data: the queries: any form ``fit`` accepts for ``train_data``.
    :param index_data: the documents to search; ``None`` searches the queries among themselves.
    :param model: the model (tower) that encodes the queries; ``None`` is the model being trained.
    :param index_model: the tower that encodes the index (two-tower models); defaults to ``model``.
    :param batch_size: encoding batch size.
    :param exclude_self: never return the query itself (its own position without an index, an
        index document with the query's id with one).
    :param limit: ``k``, the number of results per query.
    :param distance: ``cosine``, ``euclidean`` or ``sqeuclidean``.
    :param num_workers: data-loading workers for encoding (kept for the classic signature).
    :param steps_per_interval: also evaluate every this many training steps.
    :param gather_examples: store the top matches of sampled queries before and after training
        in the run (``run.example_results()``, ``run.display_examples()``).
    :param num_example_queries: how many queries to show examples for.
    :param caption: the metric key prefix; defaults to the model's name (``mlp``,
        ``resnet_base``, ``clip_text_to_clip_vision``).
    :param query_sample_size: evaluate on a fixed random sample of this many queries.
    :param search: ``exact``, ``annoy`` (approximate) or ``auto``.
    :param n_trees: annoy's number of trees; ``search_k``: annoy's search budget.
    :param seed: seed of the query and example sampling.
    :param truncate_dims: also compute every metric on the vectors cut to each of these
        sizes (their first components, renormalised: Matryoshka truncation), published as
        ``{caption}_{metric}_dim{d}`` beside the full-size keys.

    Queries are encoded with the model's ``query_prompt`` and index documents with its
    ``document_prompt`` (text models with those options); searching the queries among
    themselves uses the query prompt.

    With relevance judgments, give ``queries``, ``corpus`` and ``qrels`` instead of
    ``query_data`` and ``index_data``: queries and corpus as ``id,text`` CSV files, BEIR JSONL
    files, ``{id: item}`` mappings or DocLists, the judgments as a TREC qrels file, a BEIR TSV
    or ``{query id: {document id: grade}}``. Graded metrics are then published at each cut-off
    of ``k`` (default ``[1, 10, 100]``) as ``{caption}_{name}_at_{k}``, ``name`` one of
    ``QRELS_METRIC_NAMES``; ``limit`` does not apply.
    """

    def __init__(
        self,
        query_data: Any = None,
        index_data: Any = None,
        model: str | None = None,
        index_model: str | None = None,
        batch_size: int = 32,
        exclude_self: bool = True,
        limit: int = 20,
        distance: str = "cosine",
        num_workers: int = 0,
        steps_per_interval: int | None = None,
        gather_examples: bool = False,
        num_example_queries: int = 5,
        caption: str | None = None,
        query_sample_size: int | None = None,
        search: str = "auto",
        n_trees: int = DEFAULT_N_TREES,
        search_k: int | None = None,
        seed: int = 0,
        truncate_dims: Sequence[int] | None = None,
        queries: Any = None,
        corpus: Any = None,
        qrels: Any = None,
        k: Sequence[int] | int | None = None,
    ) -> None:
        given = dict(locals())
        owner = "EvaluationCallback"
        self._judged = judged_evaluation(query_data, index_data, queries, corpus, qrels, k)
        if query_data is None and self._judged is None:
            raise ConfigError(
                f"{owner}: query_data is required (or queries, corpus and qrels for judged "
                "evaluation)."
            )
        _check_values(
            owner,
            batch_size=batch_size,
            limit=limit,
            steps_per_interval=steps_per_interval,
            num_example_queries=num_example_queries,
            query_sample_size=query_sample_size,
            n_trees=n_trees,
            search_k=search_k,
            num_workers=num_workers,
            distance=distance,
            search=search,
            caption=caption,
        )
        for name in _STORED:  # the options as given (and so as options() records them)
            setattr(self, name, given[name])
        self.exclude_self, self.gather_examples = bool(exclude_self), bool(gather_examples)
        self.truncate_dims = _check_dims(owner, truncate_dims)
        self.k = None if self._judged is None else list(self._judged.cutoffs)
        self._prefix: str | None = None
        self._queries: Any = None
        self._index: Any = None
        self._example_rows: np.ndarray | None = None
        self.last_result: Any = None

    def options(self) -> dict[str, Any]:
        options = super().options()
        options["truncate_dims"] = list(self.truncate_dims) or None
        for name in ("query_data", "index_data", "queries", "corpus", "qrels"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
            options[name] = (
                value
                if isinstance(value, str) or value is None
                else f"<{type(value).__name__} of {len(value)}>"
            )
        return options

    # --- set-up ------------------------------------------------------------------------------

    def finetuner_configure(self, ctx: Any) -> None:
        import numpy as np  # here, not at the top: listing plugins imports this module

        towers = list(ctx.models)
        for option in ("model", "index_model"):
            name = getattr(self, option)
            if name is not None and name not in ctx.models:
                raise ConfigError(
                    f"EvaluationCallback: {option}={name!r} is not a model of this fit; models: {', '.join(towers)}."
                )
        if self._judged is not None:
            self._judged.load()
            self._set_prefix(
                ctx, self.model or towers[0], self.index_model or self.model or towers[0]
            )
            return
        queries = ctx.load_data(self.query_data, name="query_data")
        index = (
            ctx.load_data(self.index_data, name="index_data")
            if self.index_data is not None
            else None
        )
        query_tower = self.model or towers[0]
        index_tower = self.index_model or query_tower
        queries, index = _views(queries, index, ctx, query_tower, index_tower)
        if self.query_sample_size is not None and self.query_sample_size < len(queries):
            rng = np.random.default_rng(self.seed)
            rows = np.sort(rng.choice(len(queries), size=self.query_sample_size, replace=False))
            queries = queries.subset(rows)
        self._queries, self._index = queries, index
        if self.gather_examples:
            rng = np.random.default_rng(self.seed + 1)
            count = min(self.num_example_queries, len(queries))
            self._example_rows = np.sort(rng.choice(len(queries), size=count, replace=False))
        self._set_prefix(ctx, query_tower, index_tower)

    def _set_prefix(self, ctx: Any, query_tower: str, index_tower: str) -> None:
        if self.caption is not None:
            self._prefix = self.caption
        elif index_tower != query_tower:
            self._prefix = caption_for(
                f"{ctx.model_names.get(query_tower, query_tower)}-to-{ctx.model_names.get(index_tower, index_tower)}"
            )
        else:
            self._prefix = caption_for(ctx.model_names.get(query_tower, query_tower))

    def provided_metrics(self, ctx: Any) -> list[str]:
        assert self._prefix is not None
        names = METRIC_NAMES if self._judged is None else self._judged.keys()
        keys = [
            f"{self._prefix}_{name}{suffix}"
            for suffix in ["", *(f"_dim{d}" for d in self.truncate_dims)]
            for name in names
        ]
        if self._judged is None and self._uses_annoy():  # qrels runs search on their own
            keys.append(f"{self._prefix}_{ANNOY_RECALL_NAME}")
        return keys

    def _uses_annoy(self) -> bool:
        """Whether ``evaluate_embeddings`` will pick annoy: it decides by the index's rows."""
        source = self._index if self._index is not None else self._queries
        return self.search == "annoy" or (
            self.search == "auto" and len(source) >= AUTO_ANNOY_MIN_INDEX_ROWS
        )

    # --- producing ---------------------------------------------------------------------------

    def finetuner_on_train_batch_end(self, ctx: Any, event: Any) -> None:
        if self.steps_per_interval and event.step % self.steps_per_interval == 0:
            ctx.control.request_evaluation()

    def finetuner_evaluate(self, ctx: Any, event: Any) -> dict[str, float]:
        # Here, not at the top: it imports torch, and listing plugins imports this module.
        from finetuner_evaluation._evaluate import truncate_vectors

        if self._judged is not None:
            metrics, self.last_result = self._judged.evaluate(ctx, event, self)
            return metrics
        queries, index = self._queries, self._index
        q, i, source = self._encode(ctx)
        result = self._score(q, i, source)
        self.last_result = result
        if result.num_queries_skipped:
            ctx.record_skipped(self._prefix, result.num_queries_skipped)
        if result.num_queries_skipped or result.approximate:
            ctx.logger.debug(
                "evaluation details",
                stage=event.stage,
                queries_scored=result.num_queries_scored,
                queries_left_out=result.num_queries_skipped,
                approximate=result.approximate,
            )
        if self.gather_examples and event.stage in ("before", "after"):
            ctx.record_examples(event.stage, self._examples(result, queries, index))
        if event.stage in ("before", "after") and hasattr(ctx, "record_query_results"):
            from finetuner_evaluation._per_query import query_records

            records = query_records(result, queries, index)
            if records:
                ctx.record_query_results(event.stage, self._prefix, "ndcg_at_k", records)
        metrics = {f"{self._prefix}_{name}": float(value) for name, value in result.metrics.items()}
        if result.annoy_recall is not None:
            metrics[f"{self._prefix}_{ANNOY_RECALL_NAME}"] = float(result.annoy_recall)
        for dim in self.truncate_dims:
            check_dim_fits(dim, q.shape[1])
            cut = self._score(
                truncate_vectors(q, dim), None if i is None else truncate_vectors(i, dim), source
            )
            metrics.update(
                {f"{self._prefix}_{name}_dim{dim}": float(v) for name, v in cut.metrics.items()}
            )
        return metrics

    def _encode(self, ctx: Any) -> tuple[np.ndarray, np.ndarray | None, Any]:
        """The query vectors, the index vectors (``None``: the queries are the index) and the
        data set the index vectors encode."""
        queries, index = self._queries, self._index
        query_tower = self.model
        index_tower = self.index_model or self.model
        q = ctx.encode(queries, model=query_tower, batch_size=self.batch_size, prompt="query")
        if index is None and index_tower == query_tower:
            return q, None, None
        source = index if index is not None else queries
        i = ctx.encode(source, model=index_tower, batch_size=self.batch_size, prompt="document")
        return q, i, source

    def _score(self, q: np.ndarray, i: np.ndarray | None, source: Any) -> Any:
        # Here, not at the top: it imports torch, and listing plugins imports this module.
        from finetuner_evaluation._evaluate import evaluate_embeddings

        queries = self._queries
        return evaluate_embeddings(
            q,
            _raw_labels(queries),
            i,
            _raw_labels(source) if i is not None else None,
            limit=self.limit,
            distance=self.distance,
            exclude_self=self.exclude_self,
            search=self.search,
            query_ids=queries.ids if i is not None else None,
            index_ids=source.ids if i is not None else None,
            n_trees=self.n_trees,
            search_k=self.search_k,
            return_details=True,
        )

    def _examples(self, result: Any, queries: Any, index: Any) -> Mapping[str, list[str]]:
        assert self._example_rows is not None
        source = index if index is not None else queries
        examples: dict[str, list[str]] = {}
        for row in self._example_rows:
            matches = [source.describe(int(j)) for j in result.indices[row] if j >= 0]
            examples[queries.describe(int(row))] = matches
        return examples


def _check_dims(owner: str, dims: Any) -> list[int]:
    """``truncate_dims`` as a list of distinct positive integers (``None``: none)."""
    if dims is None:
        return []
    if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence):
        raise ConfigError(f"{owner}: truncate_dims must be a list of sizes, not {dims!r}.")
    for dim in dims:
        _positive_int(owner, "each of truncate_dims", dim)
    if len(set(dims)) != len(dims):
        raise ConfigError(f"{owner}: truncate_dims {list(dims)} repeats a size.")
    return [int(d) for d in dims]


def _modality(ctx: Any, tower: str) -> str | None:
    return getattr(ctx, "model_modalities", {}).get(tower)


def _views(queries: Any, index: Any, ctx: Any, query_tower: str, index_tower: str) -> Any:
    """Labeled single-column views of the evaluation data. Retrieval data gives its queries and
    positives, each query's positives labeled like it (negatives are left out). Text-image
    pairs give the
    query tower's column as queries and, without index data, the index tower's column as the
    index: a text and the image of its row are relevant to each other."""
    import dataclasses

    from finetuner.errors import DataError

    for data in (queries, index):
        if data is not None and data.kind in ("scored", "triplets"):
            raise DataError(
                f"EvaluationCallback: {data.source} holds scored pairs or triplets; retrieval "
                "metrics need labeled items, text-image pairs or retrieval data (query,positive) "
                "as query_data and index_data."
            )
    if queries.kind == "retrieval":  # a query and its positives share a label
        queries = queries.as_labeled()
    if index is not None and index.kind == "retrieval":
        index = index.as_labeled()
    if queries.kind == "pairs":
        pairs = queries
        queries = pairs.column(_modality(ctx, query_tower))
        if index is None and index_tower != query_tower:
            index = pairs.column(_modality(ctx, index_tower))
            # distinct ids: a text and its own image are not "the same item" for exclude_self
            index = dataclasses.replace(index, ids=[f"{i}#index" for i in index.ids])
    if index is not None and index.kind == "pairs":
        index = index.column(_modality(ctx, index_tower))
    return queries, index


def _raw_labels(dataset: Any) -> list[Any]:
    classes = dataset.classes
    return [classes[int(code)] for code in dataset.labels]
