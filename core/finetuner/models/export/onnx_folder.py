"""Export to an ONNX folder: ``model.onnx`` (checked against torch, see
:func:`finetuner.models.onnx.export_onnx`), what turns raw items into its inputs (the
tokenizer, or the image settings), ``finetuner_export.json``, and with ``quantize='int8'``
``model_int8.onnx`` and its ``export_report.json``.

The graph takes what finetuner's preprocessor makes (``input_ids``, ``attention_mask``,
``token_type_ids`` for text; ``input``, a ``(batch, 3, H, W)`` normalised image tensor, for
images) and returns ``embeddings``: pooled, projected and normalised as ``finetuner.encode``
returns them, and cut to ``truncate_dim`` (renormalised) when one is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..._io import atomic_write_bytes
from ...errors import ConfigError
from ..onnx import INPUT_NAME, OUTPUT_NAME, OnnxModule, export_onnx
from .folder import export_info
from .quantize import quantize_int8, write_report
from .source import ExportSource
from .tokenizer import write_tokenizer

__all__ = ["FP32_FILE", "INT8_FILE", "write_onnx"]

TARGET = "onnx"
FP32_FILE, INT8_FILE = "model.onnx", "model_int8.onnx"
_SAMPLE_TEXTS = ["a short text", "a longer sample text, to export the model with"]


class Truncated(nn.Module):
    """*module*'s vectors cut to their first *dim* components and renormalised."""

    def __init__(self, module: nn.Module, dim: int) -> None:
        super().__init__()
        self.module = module
        self.dim = dim

    def forward(self, batch: Any) -> torch.Tensor:
        return nn.functional.normalize(self.module(batch)[:, : self.dim], dim=-1)


def write_onnx(
    source: ExportSource, folder: Path, *, quantize: str | None = None, eval_data: Any = None
) -> dict[str, Any]:
    """Write *source* as ONNX into the empty *folder* (and its int8 model and report with
    *quantize*); returns what ``finetuner_export.json`` says of it."""
    model = _onnx_bytes(source)
    atomic_write_bytes(folder / FP32_FILE, model)
    details: dict[str, Any] = {"files": {"float32": FP32_FILE}, "output": OUTPUT_NAME}
    if source.modality == "text":
        tokenizer_json = source.tokenizer_json
        assert tokenizer_json is not None  # text backbones always store their tokenizer
        inputs = OnnxModule(model).input_names
        write_tokenizer(folder, tokenizer_json, int(source.options["max_length"]), inputs)
        details.update(
            inputs=inputs,
            max_length=int(source.options["max_length"]),
            prompts=source.prompts,
        )
    elif source.modality == "image":
        pre = source.preprocessor()
        details.update(
            inputs=[INPUT_NAME],
            image={
                "height": pre.height,
                "width": pre.width,
                "resize": "bilinear, antialiased",
                "scale": "1/255",
                "mean": list(pre.mean) if pre.normalization else None,
                "std": list(pre.std) if pre.normalization else None,
            },
        )
    else:
        details["inputs"] = [INPUT_NAME]
    if quantize is not None:
        quantize_int8(folder / FP32_FILE, folder / INT8_FILE)
        details["files"]["int8"] = INT8_FILE
        details["report"] = write_report(source, folder, eval_data)
    return export_info(folder, source, TARGET, details)


def _onnx_bytes(source: ExportSource) -> bytes:
    """The model's ONNX export: the one the fit stored (``to_onnx=True``) when nothing changed
    since, else a fresh export checked against torch."""
    if source.record.onnx is not None and source.truncate_dim is None:
        return source.record.onnx
    module = source.module
    if source.truncate_dim is not None:
        module = Truncated(module, source.truncate_dim)
    return export_onnx(module, _sample(source))


def _sample(source: ExportSource) -> Any:
    """A batch of what the model takes, to trace the export with."""
    if source.modality == "text":
        return source.preprocessor()(_SAMPLE_TEXTS)
    if source.modality == "image":
        pre = source.preprocessor()
        return pre(torch.rand(2, 3, pre.height, pre.width))
    size = source.options.get("input_size")
    if not size:
        raise ConfigError(
            f"cannot export model '{source.name}' to ONNX: {source.kind()} takes tensors of a "
            "shape the artifact does not record. Fit it with to_onnx=True, which exports it "
            "on the training data, then export the artifact."
        )
    return torch.randn(2, int(size))
