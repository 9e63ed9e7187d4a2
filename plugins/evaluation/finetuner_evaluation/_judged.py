"""The qrels side of ``EvaluationCallback``: read queries, corpus and judgments at configure
time, then encode and score them at each evaluation.

Light at import: numpy and torch load only when a fit configures or evaluates.
"""

from __future__ import annotations

import math

__all__ = ["JudgedEvaluation", "check_dim_fits", "judged_evaluation"]

from collections.abc import Mapping
from typing import Any

from finetuner.errors import ConfigError
from finetuner_evaluation._constants import qrels_metric_keys
from finetuner_evaluation._qrels import (
    Items,
    Judgments,
    check_cutoffs,
    check_judgments,
    qrels_source,
    read_items,
    read_qrels,
)

DEFAULT_CUTOFFS = (1, 10, 100)
_OWNER = "EvaluationCallback"


def judged_evaluation(
    query_data: Any, index_data: Any, queries: Any, corpus: Any, qrels: Any, k: Any
) -> JudgedEvaluation | None:
    """The qrels evaluation when any of queries/corpus/qrels is given, else ``None``."""
    if queries is None and corpus is None and qrels is None:
        if k is not None:
            raise ConfigError(
                f"{_OWNER}: k (the cut-offs) applies to qrels evaluation; label-based "
                "evaluation takes limit."
            )
        return None
    if query_data is not None or index_data is not None:
        raise ConfigError(
            f"{_OWNER}: give either query_data/index_data (labels) or queries/corpus/qrels "
            "(judgments), not both."
        )
    return JudgedEvaluation(queries, corpus, qrels, k)


def check_dim_fits(dim: int, size: int) -> None:
    if dim > size:
        raise ConfigError(
            f"{_OWNER}: truncate_dims holds {dim}, larger than the model's embedding size "
            f"{size}; give sizes from 1 to {size}."
        )


class JudgedEvaluation:
    """Queries, a corpus and their relevance judgments, scored at the cut-offs ``k``."""

    def __init__(self, queries: Any, corpus: Any, qrels: Any, k: Any) -> None:
        missing = [
            n for n, v in (("queries", queries), ("corpus", corpus), ("qrels", qrels)) if v is None
        ]
        if missing:
            raise ConfigError(
                f"{_OWNER}: qrels evaluation needs queries, corpus and qrels; "
                f"{', '.join(missing)} missing."
            )
        self.sources = {"queries": queries, "corpus": corpus, "qrels": qrels}
        self.cutoffs = check_cutoffs(_OWNER, DEFAULT_CUTOFFS if k is None else k)
        self.queries: Items | None = None
        self.corpus: Items | None = None
        self.judgments: Judgments | None = None

    def load(self) -> None:
        """Read and cross-check the three sources (raises ``DataError`` on the first problem)."""
        self.queries = read_items(self.sources["queries"], "queries")
        self.corpus = read_items(self.sources["corpus"], "corpus")
        self.judgments = read_qrels(self.sources["qrels"])
        check_judgments(
            self.judgments,
            self.queries.ids,
            self.corpus.ids,
            (self.queries.source, self.corpus.source, qrels_source(self.sources["qrels"])),
        )

    def keys(self) -> list[str]:
        return qrels_metric_keys(self.cutoffs)

    def evaluate(self, ctx: Any, event: Any, callback: Any) -> tuple[dict[str, float], Any]:
        """The metrics of one evaluation (every cut-off, and each of *callback*'s
        ``truncate_dims``) and the full-size ``QrelsResult``."""
        from finetuner_evaluation._evaluate import truncate_vectors  # imports torch

        towers = (callback.model, callback.index_model or callback.model)
        q, c = self.encode(ctx, towers, callback.batch_size)
        options = {
            name: getattr(callback, name)
            for name in ("distance", "exclude_self", "search", "n_trees", "search_k")
        }
        result = self.score(q, c, options)
        prefix = callback._prefix
        if result.num_queries_skipped:
            ctx.record_skipped(prefix, result.num_queries_skipped)
        if callback.gather_examples and event.stage in ("before", "after"):
            count = min(callback.num_example_queries, len(q))
            ctx.record_examples(event.stage, self.examples(result, range(count)))
        if event.stage in ("before", "after") and hasattr(ctx, "record_query_results"):
            metric = self.report_metric()
            records = self.query_records(result, metric)
            ctx.record_query_results(event.stage, prefix, metric, records)
        metrics = {f"{prefix}_{key}": float(v) for key, v in result.metrics.items()}
        for dim in callback.truncate_dims:
            check_dim_fits(dim, q.shape[1])
            cut = self.score(truncate_vectors(q, dim), truncate_vectors(c, dim), options)
            metrics.update({f"{prefix}_{key}_dim{dim}": float(v) for key, v in cut.metrics.items()})
        return metrics, result

    def encode(self, ctx: Any, towers: tuple[str | None, str | None], batch_size: int) -> Any:
        assert self.queries is not None and self.corpus is not None
        q = ctx.encode(self.queries.values, model=towers[0], batch_size=batch_size, prompt="query")
        c = ctx.encode(
            self.corpus.values, model=towers[1], batch_size=batch_size, prompt="document"
        )
        return q, c

    def score(self, q: Any, c: Any, options: Mapping[str, Any]) -> Any:
        """A ``QrelsResult`` of query vectors *q* against corpus vectors *c*."""
        from finetuner_evaluation._graded import evaluate_qrels  # imports torch

        assert self.queries is not None and self.corpus is not None
        return evaluate_qrels(
            q,
            self.queries.ids,
            c,
            self.corpus.ids,
            self.judgments,
            k=self.cutoffs,
            return_details=True,
            **options,
        )

    def report_metric(self) -> str:
        """The per-query metric the run report compares: nDCG at 10, or at the cut-off
        nearest to 10."""
        k = min(self.cutoffs, key=lambda c: (abs(c - 10), c))
        return f"ndcg_at_{k}"

    def query_records(self, result: Any, metric: str) -> list[dict[str, Any]]:
        """What the run report shows of each query (see :mod:`._per_query`): its *metric*,
        its top results, and which of them are judged relevant."""
        from finetuner_evaluation._per_query import MAX_RESULTS, spread_rows

        assert self.queries is not None and self.corpus is not None and self.judgments
        records = []
        for row in spread_rows(len(self.queries.ids)):
            qid = self.queries.ids[int(row)]
            found = [int(j) for j in result.indices[int(row)][:MAX_RESULTS] if j >= 0]
            value = float(result.per_query[metric][int(row)])
            judged = self.judgments.get(qid, {})
            records.append(
                {
                    "id": qid,
                    "query": self.queries.describe(int(row)),
                    "score": None if math.isnan(value) else value,
                    "results": [self.corpus.describe(j) for j in found],
                    "relevant": [judged.get(self.corpus.ids[j], 0) > 0 for j in found],
                }
            )
        return records

    def examples(self, result: Any, rows: Any) -> dict[str, list[str]]:
        """The top results of the query *rows*, as display strings."""
        assert self.queries is not None and self.corpus is not None
        return {
            self.queries.describe(int(row)): [
                self.corpus.describe(int(j)) for j in result.indices[row] if j >= 0
            ]
            for row in rows
        }
