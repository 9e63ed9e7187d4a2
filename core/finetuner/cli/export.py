"""``finetuner export RUN_OR_ARTIFACT --to FORMAT DIR``: a run's model as a sentence-transformers
folder, a transformers folder or ONNX (optionally int8, with its report)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["add_export_command"]

_FORMATS = ("sentence-transformers", "transformers", "onnx")  # as finetuner.models.export has


def _artifact(args: argparse.Namespace) -> Path:
    """The artifact of ``args.source``: a folder or zip, else the name of a run."""
    path = Path(args.source)
    if path.exists():
        return path
    from ..runs import get_run

    return get_run(
        args.source, experiment_name=args.experiment, runs_dir=args.runs_dir
    ).artifact_path


def _cmd_export(args: argparse.Namespace) -> int:
    from ..models.export import export_artifact
    from ..models.export.folder import EXPORT_INFO
    from ..models.export.quantize import format_report

    target = export_artifact(
        _artifact(args),
        args.directory,
        to=args.to,
        select_model=args.select_model,
        truncate_dim=args.truncate_dim,
        quantize=args.quantize,
        eval_data=args.eval_data,
    )
    info = json.loads((target / EXPORT_INFO).read_text(encoding="utf-8"))
    size = f", {info['embedding_size']} dims" if info.get("embedding_size") else ""
    print(f"exported model '{info['model']}' as {args.to}{size}: {target}")
    if info.get("report") is not None:
        print(format_report(info["report"]))
        print(f"report: {target / 'export_report.json'}")
    return 0


_HELP = "export a run's model for sentence-transformers, transformers or ONNX Runtime"
_DESCRIPTION = (
    "Write one model of a run (or of an artifact folder or zip) into DIR in a format other "
    "libraries load: a sentence-transformers folder (SentenceTransformer(DIR)), a transformers "
    "folder (AutoModel.from_pretrained(DIR)) or ONNX (model.onnx, with --quantize int8 also "
    "model_int8.onnx and export_report.json comparing the two on the run's evaluation data). "
    "LoRA adapters are merged. DIR must be new, empty or an earlier export, which is replaced."
)
_OPTIONS: dict[tuple[str, ...], dict[str, Any]] = {
    ("--to",): {"required": True, "choices": _FORMATS, "help": "the format to write"},
    ("--select-model",): {"help": "the tower of a two-tower run (clip-text or clip-vision)"},
    ("--truncate-dim",): {
        "type": int,
        "help": "keep the first N components of each vector, renormalised (Matryoshka)",
    },
    ("--quantize",): {
        "choices": ("int8",),
        "help": "with --to onnx: also write the int8 model and its report",
    },
    ("--eval-data",): {
        "help": "data to compare float32 and int8 on (default: the run's EvaluationCallback "
        "query_data)",
    },
    ("--experiment",): {"help": "the run's experiment (default: any that has a run of that name)"},
    ("--runs-dir",): {
        "help": "run store folder (default: $FINETUNER_RUNS_DIR or ./finetuner-runs)"
    },
}


def add_export_command(sub: Any) -> None:
    export = sub.add_parser("export", help=_HELP, description=_DESCRIPTION)
    export.add_argument("source", metavar="RUN_OR_ARTIFACT", help="a run's name, or an artifact")
    export.add_argument("directory", metavar="DIR", help="the folder to write")
    for flags, options in _OPTIONS.items():
        export.add_argument(*flags, **options)
    export.set_defaults(handler=_cmd_export)
