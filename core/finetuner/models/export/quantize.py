"""int8 ONNX: onnxruntime's dynamic quantization, and what it costs and gains.

:func:`quantize_int8` stores the weights of the matrix multiplications as int8 and quantizes
activations on the fly (``onnxruntime.quantization.quantize_dynamic``, ``QInt8`` weights).
:func:`write_report` encodes the evaluation data with the float32 and the int8 model, here and
now, and writes ``export_report.json`` beside them: the retrieval metrics of each on the same
queries, and the encode throughput of each (items per second, with the number of items and the
CPU threads onnxruntime had). Metrics need the evaluation plugin (``finetuner-evaluation``).
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..._io import atomic_write_json
from ...errors import ConfigError
from ..inference import EmbeddingModel, encode
from ..onnx import OnnxModule, require_onnx
from .evaluation_data import EvaluationData, find_evaluation_data
from .source import ExportSource

__all__ = ["REPORT_FILE", "format_report", "quantize_int8", "write_report"]

REPORT_FILE = "export_report.json"
_WARM_UP_ITEMS = 8


def quantize_int8(fp32: Path, int8: Path) -> None:
    """Write the int8 dynamic quantization of the ONNX model *fp32* to *int8*."""
    require_onnx()
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:  # onnxruntime builds without the quantization tools
        raise ConfigError(
            f"this onnxruntime cannot quantize ({exc}); install the full package with "
            "`pip install onnxruntime`."
        ) from exc
    quiet = _DropPreprocessingHint()
    logging.getLogger().addFilter(quiet)
    try:
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    finally:
        logging.getLogger().removeFilter(quiet)


class _DropPreprocessingHint(logging.Filter):
    """Drops the quantizer's advice (on the root logger) to pre-process the model first: it
    is meant for static quantization of vision models, and says nothing about this one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def write_report(source: ExportSource, folder: Path, eval_data: Any) -> dict[str, Any]:
    """Measure the float32 and int8 models of *folder* on the evaluation data and write
    ``export_report.json``; returns the report."""
    data = find_evaluation_data(source, eval_data)
    report: dict[str, Any] = {
        "quantization": "int8 (onnxruntime dynamic quantization, QInt8 weights)",
        "cpu_count": os.cpu_count(),
        "onnxruntime_threads": "onnxruntime's default (one per physical core)",
        "sizes_bytes": {
            "float32": (folder / "model.onnx").stat().st_size,
            "int8": (folder / "model_int8.onnx").stat().st_size,
        },
    }
    if isinstance(data, str):
        report.update(evaluation_data=None, reason=data)
    else:
        report.update(_measure(source, folder, data))
    atomic_write_json(folder / REPORT_FILE, report)
    return report


def _measure(source: ExportSource, folder: Path, data: EvaluationData) -> dict[str, Any]:
    models = {"float32": "model.onnx", "int8": "model_int8.onnx"}
    speeds: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    evaluate = _evaluate_embeddings()
    for precision, file in models.items():
        model = _embedding_model(source, folder / file)
        q, i, seconds = _timed_encode(model, data)
        speeds[precision] = {
            "items": data.size,
            "seconds": round(seconds, 4),
            "items_per_s": round(data.size / seconds, 2),
        }
        if evaluate is not None:
            metrics[precision] = _metrics(evaluate, q, i, data)
    return {
        "evaluation_data": data.origin,
        "num_queries": len(data.queries),
        "num_index": len(data.index) if data.index is not None else len(data.queries),
        "limit": data.limit,
        "metrics": metrics or None,
        "reason": None if metrics else "install finetuner-evaluation for the retrieval metrics",
        "encode": speeds,
        "speedup": round(speeds["int8"]["items_per_s"] / speeds["float32"]["items_per_s"], 3),
    }


def _evaluate_embeddings() -> Any:
    """The evaluation plugin's ``evaluate_embeddings``, or ``None`` when it is not installed.
    Imported by name: the core depends on no plugin."""
    try:
        return importlib.import_module("finetuner_evaluation").evaluate_embeddings
    except ImportError:
        return None


def _embedding_model(source: ExportSource, file: Path) -> Any:

    return EmbeddingModel(
        OnnxModule(file.read_bytes()),
        name=source.name,
        metadata=source.record.metadata,
        device="cpu",
        preprocessor=source.preprocessor(),
    )


def _timed_encode(model: Any, data: EvaluationData) -> tuple[Any, Any, float]:
    """The query and index vectors of *model*, and the seconds encoding both took (after a
    warm-up batch, so the session's first-run set-up is not counted)."""

    encode(model, data.queries[:_WARM_UP_ITEMS], prompt="query")
    start = time.perf_counter()
    q = encode(model, data.queries, prompt="query")
    i = None if data.index is None else encode(model, data.index, prompt="document")
    return q, i, time.perf_counter() - start


def _metrics(evaluate: Any, q: np.ndarray, i: np.ndarray | None, data: EvaluationData) -> dict:
    result = evaluate(
        q,
        data.query_labels,
        i,
        data.index_labels,
        limit=data.limit,
        search="exact",
        query_ids=data.query_ids if i is not None else None,
        index_ids=data.index_ids if i is not None else None,
    )
    return {key: float(value) for key, value in result.items()}


def format_report(report: dict[str, Any]) -> str:
    """The report as a short table: each metric and the encode speed, float32 beside int8."""
    size = report["sizes_bytes"]
    lines = [f"{'':22}{'float32':>12}{'int8':>12}"]
    lines.append(f"{'size (MB)':22}{size['float32'] / 1e6:>12.2f}{size['int8'] / 1e6:>12.2f}")
    if report.get("evaluation_data") is None:
        return "\n".join([*lines, f"no int8 check: {report['reason']}."])
    metrics = report.get("metrics") or {}
    for key in metrics.get("float32") or {}:
        lines.append(f"{key:22}{metrics['float32'][key]:>12.4f}{metrics['int8'][key]:>12.4f}")
    speed = report["encode"]
    lines.append(
        f"{'encode (items/s)':22}{speed['float32']['items_per_s']:>12.1f}"
        f"{speed['int8']['items_per_s']:>12.1f}"
    )
    lines.append(
        f"on {report['evaluation_data']}: {report['num_queries']} queries, "
        f"{speed['float32']['items']} items encoded, {report['cpu_count']} CPUs"
        + (f"; {report['reason']}" if report.get("reason") else "")
    )
    return "\n".join(lines)
