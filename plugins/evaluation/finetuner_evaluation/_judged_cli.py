"""``finetuner evaluate MODEL --queries Q --corpus C --qrels R --k 1 10 100``: graded metrics
from relevance judgments, the corpus encoded in chunks behind a progress bar (on a terminal)."""

from __future__ import annotations

__all__ = ["judged_metrics"]

import argparse
from typing import Any

import numpy as np

from finetuner.errors import ConfigError
from finetuner_evaluation._judged import JudgedEvaluation

_CHUNK_BATCHES = 16


def judged_metrics(args: argparse.Namespace, model: Any) -> tuple[str, dict[str, float], tuple]:
    """The model's display name, its metrics at every cut-off (and truncated size), and the
    cut-offs."""
    # Here, not at the top: they import torch, which `finetuner evaluate --help` needs not.
    from finetuner.mining.model import progress_bar
    from finetuner_evaluation._evaluate import truncate_vectors

    judged = JudgedEvaluation(args.queries, args.corpus, args.qrels, args.k)
    judged.load()
    assert judged.queries is not None and judged.corpus is not None
    name = model.name if model.name != "model" else args.model
    encoding = {"batch_size": args.batch_size, "precision": args.precision}
    with progress_bar(enabled=not args.json) as task:
        queries, corpus = judged.queries.values, judged.corpus.values
        q = encode_in_chunks(
            model, queries, "query", task("Encoding queries", len(queries)), encoding
        )
        c = encode_in_chunks(
            model, corpus, "document", task("Encoding corpus", len(corpus)), encoding
        )
    options = {
        "distance": args.distance,
        "search": args.search,
        "exclude_self": not args.no_exclude_self,
    }
    metrics = dict(judged.score(q, c, options).metrics)
    for dim in args.truncate_dims:
        if dim > q.shape[1]:
            raise ConfigError(
                f"--truncate-dims holds {dim}, larger than the model's embedding size "
                f"{q.shape[1]}; give sizes from 1 to {q.shape[1]}."
            )
        cut = judged.score(truncate_vectors(q, dim), truncate_vectors(c, dim), options)
        metrics.update({f"{key}_dim{dim}": value for key, value in cut.metrics.items()})
    return name, metrics, judged.cutoffs


def encode_in_chunks(
    model: Any, values: Any, prompt: str, advance: Any, encoding: dict
) -> np.ndarray:
    """*values* encoded a few batches at a time, calling ``advance(rows)`` after each."""
    import finetuner

    chunk = encoding["batch_size"] * _CHUNK_BATCHES
    parts = []
    for start in range(0, len(values), chunk):
        part = values[start : start + chunk]
        parts.append(finetuner.encode(model, part, prompt=prompt, **encoding))
        advance(len(part))
    return np.concatenate(parts).astype(np.float32, copy=False)
