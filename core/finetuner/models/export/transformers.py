"""Export to a transformers folder: ``AutoModel.from_pretrained(folder)`` loads the model.

* A text backbone is its transformers encoder (``BertModel``...) and tokenizer; the token
  pooling and normalisation that finetuner applies on top are not part of a transformers model
  and are described in ``finetuner_export.json`` (``pooling``, ``normalize``), as
  sentence-transformers models on the Hugging Face Hub describe theirs. A projection head
  (``output_dim``) or a ``truncate_dim`` has no place there: they are refused, naming the
  formats that hold them.
* A CLIP tower is its ``CLIPTextModelWithProjection`` (with the tokenizer) or
  ``CLIPVisionModelWithProjection`` (with a ``preprocessor_config.json`` for
  ``CLIPImageProcessor``: resize to the tower's size, rescale, CLIP's mean and std). Their
  ``text_embeds`` / ``image_embeds`` are finetuner's vectors before the L2 normalisation;
  a ``truncate_dim`` keeps the first rows of the projection.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from torch import nn

from ..._io import atomic_write_json
from ..backbones.clip import CLIPTextTower, CLIPVisionTower
from .folder import export_info, save_pretrained
from .source import ExportSource, refuse
from .tokenizer import text_input_names, write_tokenizer

__all__ = ["write_transformers"]

TARGET = "transformers"


def write_transformers(source: ExportSource, folder: Path) -> dict[str, Any]:
    """Write *source* as a transformers model into the empty *folder*; returns what
    ``finetuner_export.json`` says of it."""

    if isinstance(source.module, CLIPTextTower):
        details = _clip_tower(source, folder, "text")
        _tokenizer(source, folder, source.module.model)
    elif isinstance(source.module, CLIPVisionTower):
        details = _clip_tower(source, folder, "vision")
        atomic_write_json(folder / "preprocessor_config.json", _image_processor(source))
    else:
        details = _text_encoder(source, folder)
    return export_info(folder, source, TARGET, details)


def _tokenizer(source: ExportSource, folder: Path, model: nn.Module) -> None:
    tokenizer_json = source.tokenizer_json
    if tokenizer_json is None:
        raise refuse(TARGET, source.name, "the artifact holds no tokenizer.json", fits=("onnx",))
    max_length = int(source.options["max_length"])
    write_tokenizer(folder, tokenizer_json, max_length, text_input_names(model))


def _text_encoder(source: ExportSource, folder: Path) -> dict[str, Any]:
    parts = source.text_parts(TARGET)
    if parts.projection is not None:
        raise refuse(
            TARGET,
            source.name,
            f"its projection head (output_dim={parts.projection.out_features}) is not part of "
            "a transformers model",
        )
    if source.truncate_dim is not None:
        raise refuse(
            TARGET,
            source.name,
            "a truncate_dim cuts the pooled vectors, which a transformers model does not make",
        )
    save_pretrained(parts.transformer, folder)
    _tokenizer(source, folder, parts.transformer)
    details: dict[str, Any] = {
        "model_class": type(parts.transformer).__name__,
        "pooling": parts.pooling,
        "normalize": parts.normalize,
        "max_length": int(source.options["max_length"]),
        "prompts": source.prompts,
        "usage": (
            f"{parts.pooling}-pool last_hidden_state over the attention mask"
            + (", then L2-normalise" if parts.normalize else "")
        ),
    }
    if parts.pooling == "GeM":
        details["gem_p"] = float(source.module.body.pooling.p)  # type: ignore[union-attr,arg-type]
    return details


def _clip_tower(source: ExportSource, folder: Path, kind: str) -> dict[str, Any]:
    model: nn.Module = source.module.model  # type: ignore[assignment]
    if source.truncate_dim is not None:
        model = _cut_projection(model, kind, source.truncate_dim)
    save_pretrained(model, folder)
    normalize = bool(source.module.normalize) or source.truncate_dim is not None
    output = "text_embeds" if kind == "text" else "image_embeds"
    return {
        "model_class": type(model).__name__,
        "normalize": normalize,
        "max_length": int(source.options["max_length"]) if kind == "text" else None,
        "usage": f"{output}" + (", then L2-normalise" if normalize else ""),
    }


def _cut_projection(model: nn.Module, kind: str, dim: int) -> nn.Module:
    """A copy of the CLIP tower *model* whose projection keeps its first *dim* outputs."""
    model = copy.deepcopy(model)
    name = "text_projection" if kind == "text" else "visual_projection"
    old: nn.Linear = getattr(model, name)
    new = nn.Linear(old.in_features, dim, bias=old.bias is not None)
    new.weight.data.copy_(old.weight.data[:dim])
    if old.bias is not None:
        new.bias.data.copy_(old.bias.data[:dim])
    setattr(model, name, new)
    model.config.projection_dim = dim  # type: ignore[union-attr]
    return model


def _image_processor(source: ExportSource) -> dict[str, Any]:
    """``CLIPImageProcessor`` settings doing what finetuner's image preprocessor does."""
    pre = source.preprocessor()
    return {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"height": pre.height, "width": pre.width},
        "resample": 2,  # bilinear, as finetuner resizes
        "do_center_crop": False,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": bool(pre.normalization),
        "image_mean": list(pre.mean),
        "image_std": list(pre.std),
        "do_convert_rgb": True,
    }
