"""Export a fine-tuned model to the formats search stacks serve: a sentence-transformers folder,
a transformers folder, or ONNX (optionally quantized to int8).

:func:`export_artifact` writes one model of an artifact into a folder, written beside it and
renamed into place; LoRA adapters are merged first. Each folder holds ``finetuner_export.json``
(what was exported, and what a user of the folder must know: pooling, normalisation, prompts).
A model part that a format cannot represent (an ``mlp`` in sentence-transformers, a projection
head in transformers, GeM pooling) is refused with a :class:`~finetuner.errors.ConfigError`
naming the formats that can.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...errors import ConfigError, close_matches_hint
from .folder import staged_folder
from .onnx_folder import write_onnx
from .sentence_transformers import write_sentence_transformers
from .source import FORMATS, load_source
from .transformers import write_transformers

__all__ = ["FORMATS", "QUANTIZATIONS", "export_artifact"]

QUANTIZATIONS = ("int8",)
"""What ``quantize=`` takes: ``'int8'``, onnxruntime's dynamic quantization."""


def check_format(to: Any, quantize: Any = None) -> str:
    """*to* checked against :data:`FORMATS` (and *quantize*, which only ONNX takes)."""
    if to not in FORMATS:
        raise ConfigError(
            f"unknown export format {to!r}; the formats are {', '.join(FORMATS)}."
            + close_matches_hint(str(to), FORMATS)
        )
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ConfigError(
            f"unknown quantization {quantize!r}; the only one is 'int8' (onnxruntime's "
            "dynamic quantization)."
        )
    if quantize is not None and to != "onnx":
        raise ConfigError(
            f"quantize='{quantize}' applies to the ONNX export; export with to='onnx' (--to "
            f"onnx), or leave quantization out for {to}."
        )
    return str(to)


def export_artifact(
    artifact: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    to: str,
    select_model: str | None = None,
    truncate_dim: int | None = None,
    quantize: str | None = None,
    eval_data: Any = None,
) -> Path:
    """Export one model of *artifact* (a folder or zip) to the folder *target* as *to*:
    ``'sentence-transformers'``, ``'transformers'`` or ``'onnx'``; returns *target*.

    *select_model* picks the tower of a two-tower artifact (``'clip-text'``,
    ``'clip-vision'``). *truncate_dim* keeps the first that many components of each vector,
    renormalised (Matryoshka), written into the exported model. *quantize* ``'int8'`` (ONNX
    only) adds ``model_int8.onnx`` and ``export_report.json``: the retrieval metrics and encode
    speed of the float32 and int8 models on the run's evaluation data, or on *eval_data*.
    """
    target_format = check_format(to, quantize)

    source = load_source(artifact, select_model=select_model, truncate_dim=truncate_dim)
    target = Path(target).expanduser()
    with staged_folder(target) as folder:
        if target_format == "sentence-transformers":
            write_sentence_transformers(source, folder)
        elif target_format == "transformers":
            write_transformers(source, folder)
        else:
            write_onnx(source, folder, quantize=quantize, eval_data=eval_data)
    return target
