"""``finetuner evaluate``: retrieval metrics of a registry model or an artifact, no training.

Declared in the ``finetuner.commands`` entry-point group, so ``finetuner --help`` lists the
command without importing this module; it is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import finetuner
from finetuner.errors import ConfigError, DataError
from finetuner.plugins import kit

__all__ = ["finetuner_add_commands"]


def finetuner_add_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="retrieval metrics of a model or artifact on query/index data (no training)",
        description=(
            "Encode query (and index) data with a registry model or a fine-tuned artifact and "
            "print the retrieval metrics."
        ),
    )
    parser.add_argument("model", help="a registry model name (e.g. mlp) or an artifact folder/zip")
    parser.add_argument(
        "--query-data",
        help="queries: a CSV file or the name of a pushed or built-in data set",
    )
    parser.add_argument(
        "--labeled",
        action="store_true",
        help="CSV rows are item,label (otherwise query,document pairs share a label)",
    )
    parser.add_argument("--index-data", help="index documents; default: the queries themselves")
    parser.add_argument("--model-options", default="{}", help="registry model options as JSON")
    parser.add_argument("--select-model", help="the tower of a multi-model artifact")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--distance", default="cosine")
    parser.add_argument("--search", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--precision",
        choices=("32", "bf16", "16-mixed"),
        default="32",
        help="encode in float32 (default), bfloat16 (CPU or GPU) or float16 (CUDA)",
    )
    parser.add_argument(
        "--truncate-dims",
        type=_dims,
        default=[],
        help="also print the metrics at these sizes, comma-separated (e.g. 256,64): each "
        "vector cut to its first components and renormalised",
    )
    parser.add_argument("--no-exclude-self", action="store_true")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of a registry model's initial weights"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    judged = parser.add_argument_group(
        "judged evaluation", "instead of --query-data: queries, a corpus and relevance judgments"
    )
    judged.add_argument("--queries", help="queries: an id,text CSV file or a BEIR .jsonl file")
    judged.add_argument("--corpus", help="documents: an id,text CSV file or a BEIR .jsonl file")
    judged.add_argument("--qrels", help="judgments: a TREC qrels file or a BEIR .tsv file")
    judged.add_argument(
        "--k", type=int, nargs="+", help="cut-offs of the judged metrics (default: 1 10 100)"
    )
    parser.set_defaults(handler=_evaluate_command)


def _dims(text: str) -> list[int]:
    try:
        dims = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--truncate-dims takes comma-separated positive integers, not {text!r}"
        ) from None
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(
            f"--truncate-dims takes comma-separated positive integers, not {text!r}"
        )
    return dims


def _is_artifact(path: Path) -> bool:
    """An artifact folder or zip, as opposed to a registry name or a model folder."""
    return path.is_file() or (path / "models").is_dir()


def _evaluate_command(args: argparse.Namespace) -> int:
    judged = [args.queries, args.corpus, args.qrels]
    if any(v is not None for v in judged) or args.k is not None:
        from finetuner_evaluation._judged_cli import judged_metrics

        if args.query_data or args.index_data:
            raise ConfigError(
                "give either --query-data/--index-data (labels) or --queries/--corpus/--qrels "
                "(judgments), not both."
            )
        name, metrics, cutoffs = judged_metrics(args, _model(args, None))
        return _show(args, name, metrics, f"k={', '.join(map(str, cutoffs))}")
    if args.query_data is None:
        raise ConfigError(
            "--query-data is required (or --queries, --corpus and --qrels for judged evaluation)."
        )
    options = kit.CSVOptions(is_labeled=args.labeled)
    queries = kit.load_dataset(args.query_data, name="query_data", csv_options=options)
    index = (
        kit.load_dataset(args.index_data, name="index_data", csv_options=options)
        if args.index_data
        else None
    )
    model = _model(args, queries.item_shape)
    name = model.name if model.name != "model" else args.model
    modality = model.modality if model.modality != "tensor" else None
    queries = queries.column(modality)
    index = index.column(modality) if index is not None else None
    encoding = {"batch_size": args.batch_size, "precision": args.precision}
    from finetuner.mining.model import progress_bar
    from finetuner_evaluation._judged_cli import encode_in_chunks

    with progress_bar(enabled=not args.json) as task:
        rows = queries.columns[0].values
        q = encode_in_chunks(model, rows, "query", task("Encoding queries", len(rows)), encoding)
        i = None
        if index is not None:
            rows = index.columns[0].values
            i = encode_in_chunks(
                model, rows, "document", task("Encoding the index", len(rows)), encoding
            )
    metrics = _metrics(args, q, queries, i, index)
    for dim in args.truncate_dims:
        metrics.update(_truncated_metrics(args, dim, q, queries, i, index))
    return _show(args, name, metrics, f"k={args.limit}")


def _show(args: argparse.Namespace, name: str, metrics: dict, cutoffs: str) -> int:
    if metrics and all(math.isnan(value) for value in metrics.values()):
        raise DataError(
            "no query could be scored: no query has a relevant document in the index (with "
            "--query-data, another item of its label; with --qrels, a judged document of the "
            "corpus). Check the labels or judgments, or give --index-data."
        )
    if args.json:
        print(json.dumps({"model": name, "metrics": metrics}, indent=2))
        return 0
    width = max(len(k) for k in metrics)
    print(f"Retrieval metrics of {name} ({cutoffs}, {args.distance}):")
    for key, value in metrics.items():
        print(f"  {key.ljust(width)}  {value:.5f}")
    return 0


def _model(args: argparse.Namespace, input_shape: Any) -> Any:
    """The artifact's model, or the registry model built with --model-options and --seed."""
    if _is_artifact(Path(args.model)):
        return finetuner.get_model(
            args.model, select_model=args.select_model, batch_size=args.batch_size
        )
    try:
        options = json.loads(args.model_options)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--model-options is not valid JSON: {exc}") from None
    if not isinstance(options, dict):
        raise ConfigError(
            f"--model-options must be a JSON object such as '{{\"hidden_sizes\": [64]}}', "
            f"not {args.model_options!r}."
        )
    if not 0 <= args.seed <= kit.SEED_MAX:
        raise ConfigError(f"--seed must be from 0 to {kit.SEED_MAX}, not {args.seed}.")
    import torch

    torch.manual_seed(args.seed)  # the same untrained weights, and numbers, on every call
    return finetuner.build_model(
        args.model,
        options,
        select_model=args.select_model,
        batch_size=args.batch_size,
        input_shape=input_shape,
    )


def _metrics(args: argparse.Namespace, q: Any, queries: Any, i: Any, index: Any) -> dict:
    # Here, not at the top: it imports torch, which `finetuner evaluate --help` needs not.
    from finetuner_evaluation._evaluate import evaluate_embeddings

    return dict(
        evaluate_embeddings(
            q,
            [queries.classes[c] for c in queries.labels],
            i,
            [index.classes[c] for c in index.labels] if index is not None else None,
            limit=args.limit,
            distance=args.distance,
            search=args.search,
            exclude_self=not args.no_exclude_self,
            query_ids=queries.ids if index is not None else None,
            index_ids=index.ids if index is not None else None,
        )
    )


def _truncated_metrics(
    args: argparse.Namespace, dim: int, q: Any, queries: Any, i: Any, index: Any
) -> dict:
    """The metrics of the vectors cut to their first *dim* components, keys ending ``_dim{dim}``."""
    from finetuner_evaluation._evaluate import truncate_vectors

    if dim > q.shape[1]:
        raise ConfigError(
            f"--truncate-dims holds {dim}, larger than the model's embedding size "
            f"{q.shape[1]}; give sizes from 1 to {q.shape[1]}."
        )
    cut = _metrics(
        args,
        truncate_vectors(q, dim),
        queries,
        None if i is None else truncate_vectors(i, dim),
        index,
    )
    return {f"{key}_dim{dim}": value for key, value in cut.items()}
