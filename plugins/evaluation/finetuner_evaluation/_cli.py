"""``finetuner evaluate``: retrieval metrics of a registry model or an artifact, no training.

Declared in the ``finetuner.commands`` entry-point group, so ``finetuner --help`` lists the
command without importing this module; it is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import finetuner
from finetuner.errors import ConfigError
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
        required=True,
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
    parser.add_argument("--no-exclude-self", action="store_true")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of a registry model's initial weights"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=_evaluate_command)


def _is_artifact(path: Path) -> bool:
    """An artifact folder or zip, as opposed to a registry name or a model folder."""
    return path.is_file() or (path / "models").is_dir()


def _evaluate_command(args: argparse.Namespace) -> int:
    # Here, not at the top: they import torch, which `finetuner evaluate --help` needs not.
    from finetuner_evaluation._evaluate import evaluate_embeddings

    options = kit.CSVOptions(is_labeled=args.labeled)
    queries = kit.load_dataset(args.query_data, name="query_data", csv_options=options)
    index = (
        kit.load_dataset(args.index_data, name="index_data", csv_options=options)
        if args.index_data
        else None
    )
    if _is_artifact(Path(args.model)):
        model = finetuner.get_model(
            args.model, select_model=args.select_model, batch_size=args.batch_size
        )
    else:
        try:
            options = json.loads(args.model_options)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--model-options is not valid JSON: {exc}") from None
        import torch

        torch.manual_seed(args.seed)  # the same untrained weights, and numbers, on every call
        model = finetuner.build_model(
            args.model,
            options,
            select_model=args.select_model,
            batch_size=args.batch_size,
            input_shape=queries.item_shape,
        )
    name = model.name if model.name != "model" else args.model
    modality = model.modality if model.modality != "tensor" else None
    queries = queries.column(modality)
    index = index.column(modality) if index is not None else None
    encoding = {"batch_size": args.batch_size, "precision": args.precision}
    q = finetuner.encode(model, queries, **encoding)
    i = finetuner.encode(model, index, **encoding) if index is not None else None
    metrics = evaluate_embeddings(
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
    if args.json:
        print(json.dumps({"model": name, "metrics": metrics}, indent=2))
        return 0
    width = max(len(k) for k in metrics)
    print(f"Retrieval metrics of {name} (k={args.limit}, {args.distance}):")
    for key, value in metrics.items():
        print(f"  {key.ljust(width)}  {value:.5f}")
    return 0
