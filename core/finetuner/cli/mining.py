"""``finetuner mine``: mine hard negatives for (query, positive) pairs into a JSONL file."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import ConfigError

__all__ = ["add_mine_command"]


def _model_options(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"--model-options is not valid JSON ({exc}); pass a JSON object."
        ) from None
    if not isinstance(options, dict):
        raise ConfigError(f"--model-options must be a JSON object, got {type(options).__name__}.")
    return options


def _write_rows(output: str, rows: list[dict[str, Any]]) -> None:
    from .._io import atomic_open

    try:
        with atomic_open(output) as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
    except OSError as exc:
        raise ConfigError(
            f"-o/--output: cannot write {output} ({exc.strerror or exc}); give a file path in "
            "a folder you can write to."
        ) from None


def _cmd_mine(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..mining import mine_hard_negatives

    if Path(args.output).is_dir():  # found before the mining, not after it
        raise ConfigError(
            f"-o/--output: {args.output} is a folder; give the path of a .jsonl file."
        )
    rows, summary = mine_hard_negatives(
        args.model,
        args.pairs,
        args.corpus,
        num_negatives=args.num_negatives,
        range_min=args.range_min,
        range_max=args.range_max,
        margin=args.margin,
        max_score=args.max_score,
        sampling=args.sampling,
        batch_size=args.batch_size,
        seed=args.seed,
        search=args.search,
        model_options=_model_options(args.model_options),
        return_summary=True,
    )
    _write_rows(args.output, rows)
    print(summary)
    print(f"wrote {len(rows)} rows to {args.output}")
    return 0


def add_mine_command(sub: Any) -> None:
    """Add ``mine`` to *sub*."""
    mine = sub.add_parser(
        "mine",
        help="mine hard negatives for (query, positive) pairs into a JSONL training file",
        description="Embed the queries and the corpus with MODEL, search each query's nearest "
        "documents and keep the best that are not its positives, as JSONL rows "
        '{"query": ..., "pos": [...], "neg": [...]} that fit takes as training data.',
    )
    mine.add_argument("model", help="a model name, a local model folder or an artifact path")
    mine.add_argument("pairs", help="CSV file of query,document rows")
    mine.add_argument("-o", "--output", required=True, help="the JSONL file to write")
    mine.add_argument(
        "--corpus",
        help="documents to mine from: a text file, one a line, or a CSV file "
        "(default: every positive of PAIRS)",
    )
    mine.add_argument("--num-negatives", type=int, default=5, help="negatives per query (5)")
    mine.add_argument("--range-min", type=int, default=0, help="skip the best N candidates (0)")
    mine.add_argument("--range-max", type=int, default=100, help="consider the best N (100)")
    mine.add_argument(
        "--margin", type=float, help="drop candidates scoring >= the positive's score - MARGIN"
    )
    mine.add_argument("--max-score", type=float, help="drop candidates scoring above this")
    mine.add_argument("--sampling", default="top", help="'top' (default) or 'random'")
    mine.add_argument("--seed", type=int, default=0, help="seed of --sampling random (0)")
    mine.add_argument("--search", default="auto", help="'auto' (default), 'exact' or 'annoy'")
    mine.add_argument("--batch-size", type=int, default=32, help="encoding batch size (32)")
    mine.add_argument("--model-options", help="model options as a JSON object")
    mine.set_defaults(handler=_cmd_mine)
