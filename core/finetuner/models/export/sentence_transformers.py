"""Export to a sentence-transformers folder: ``SentenceTransformer(folder)`` computes the vectors
``finetuner.encode`` computes.

The folder has the classic layout that sentence-transformers has read since its early versions,
written without sentence-transformers installed:

* ``modules.json``: the module stack, ``Transformer -> Pooling [-> Dense] [-> Normalize]``;
* the transformer at the top (``config.json``, ``model.safetensors``, the tokenizer,
  ``sentence_bert_config.json`` with ``max_seq_length``);
* ``1_Pooling/config.json``: mean, max or CLS pooling over the tokens, prompt included;
* ``2_Dense/``: the projection head (``output_dim``), with the identity activation;
* ``N_Normalize/``: L2 normalisation, when the model normalises;
* ``config_sentence_transformers.json``: the ``query`` and ``document`` prompts, so
  ``encode(texts, prompt_name="query")`` (or ``encode_query``) puts the query prompt first.

A ``truncate_dim`` (Matryoshka) is written into the stack, not left to sentence-transformers'
own ``truncate_dim`` (which cuts without renormalising): a ``Dense`` layer keeps the leading
components (the first rows of the projection head, or an identity selection without one) and
``Normalize`` rescales them to unit length, as ``finetuner.encode(..., truncate_dim=N)`` does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..._io import atomic_write_json, atomic_write_text
from ..._version import __version__
from .folder import export_info, save_pretrained
from .source import ExportSource, TextParts, refuse
from .tokenizer import text_input_names, write_tokenizer

__all__ = ["write_sentence_transformers"]

TARGET = "sentence-transformers"
_POOLING_MODES = {"mean": "mean_tokens", "max": "max_tokens", "cls": "cls_token"}
_TYPES = {
    "transformer": "sentence_transformers.models.Transformer",
    "pooling": "sentence_transformers.models.Pooling",
    "dense": "sentence_transformers.models.Dense",
    "normalize": "sentence_transformers.models.Normalize",
}


def write_sentence_transformers(source: ExportSource, folder: Path) -> dict[str, Any]:
    """Write *source* as a sentence-transformers model into the empty *folder*; returns what
    ``finetuner_export.json`` says of it."""
    if source.tower is not None:
        raise refuse(
            TARGET,
            source.name,
            f"{source.kind()} is one tower of a two-tower model; this export writes "
            "single-tower text encoders",
            fits=("transformers", "onnx"),
        )
    parts = source.text_parts(TARGET)
    if parts.pooling not in _POOLING_MODES:
        raise refuse(TARGET, source.name, f"its pooling '{parts.pooling}' has no Pooling mode")
    tokenizer_json = source.tokenizer_json
    if tokenizer_json is None:
        raise refuse(TARGET, source.name, "the artifact holds no tokenizer.json", fits=("onnx",))
    max_length = int(source.options["max_length"])
    save_pretrained(parts.transformer, folder)
    write_tokenizer(folder, tokenizer_json, max_length, text_input_names(parts.transformer))
    atomic_write_json(
        folder / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False}
    )
    modules = [_module("transformer", 0, ""), _module("pooling", 1, "1_Pooling")]
    _write_pooling(folder / "1_Pooling", parts)
    dense = _dense_weights(parts, source.truncate_dim)
    if dense is not None:
        modules.append(_module("dense", len(modules), f"{len(modules)}_Dense"))
        _write_dense(folder / modules[-1]["path"], *dense)
    normalize = parts.normalize or source.truncate_dim is not None
    if normalize:
        modules.append(_module("normalize", len(modules), f"{len(modules)}_Normalize"))
        (folder / modules[-1]["path"]).mkdir()
    atomic_write_json(folder / "modules.json", modules)
    atomic_write_json(folder / "config_sentence_transformers.json", _st_config(source))
    details = {
        "pooling": parts.pooling,
        "projection": parts.projection is not None,
        "normalize": normalize,
        "max_length": max_length,
        "prompts": source.prompts,
        "modules": [m["type"].rpartition(".")[2] for m in modules],
    }
    atomic_write_text(folder / "README.md", _card(source, details))
    return export_info(folder, source, TARGET, details)


def _module(kind: str, index: int, path: str) -> dict[str, Any]:
    return {"idx": index, "name": str(index), "path": path, "type": _TYPES[kind]}


def _write_pooling(folder: Path, parts: TextParts) -> None:
    folder.mkdir()
    config: dict[str, Any] = {"word_embedding_dimension": parts.hidden_size}
    for mode in ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens"):
        config[f"pooling_mode_{mode}"] = _POOLING_MODES[parts.pooling] == mode
    config.update({"pooling_mode_weightedmean_tokens": False, "pooling_mode_lasttoken": False})
    config["include_prompt"] = True  # finetuner pools the prompt's tokens with the text's
    atomic_write_json(folder / "config.json", config)


def _dense_weights(
    parts: TextParts, truncate_dim: int | None
) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The weight and bias of the ``Dense`` module: the projection head cut to *truncate_dim*
    rows, or an identity selection of the leading components; ``None`` when neither is there."""
    weight: torch.Tensor
    bias: torch.Tensor | None = None
    if parts.projection is not None:
        weight = parts.projection.weight.detach()
        if parts.projection.bias is not None:
            bias = parts.projection.bias.detach()
    elif truncate_dim is not None:
        weight = torch.eye(parts.hidden_size)
    else:
        return None
    if truncate_dim is not None:
        weight = weight[:truncate_dim]
        bias = None if bias is None else bias[:truncate_dim]
    return weight, bias


def _write_dense(folder: Path, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    from safetensors.torch import save_file

    folder.mkdir()
    config = {
        "in_features": int(weight.shape[1]),
        "out_features": int(weight.shape[0]),
        "bias": bias is not None,
        "activation_function": "torch.nn.modules.linear.Identity",
    }
    atomic_write_json(folder / "config.json", config)
    tensors = {"linear.weight": weight.cpu().contiguous().clone()}
    if bias is not None:
        tensors["linear.bias"] = bias.cpu().contiguous().clone()
    save_file(tensors, str(folder / "model.safetensors"))


def _st_config(source: ExportSource) -> dict[str, Any]:
    import transformers

    return {
        "__version__": {
            "finetuner": __version__,
            "transformers": transformers.__version__,
            "pytorch": torch.__version__,
        },
        "prompts": source.prompts,
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    }


def _card(source: ExportSource, details: dict[str, Any]) -> str:
    """The folder's README: what it holds and how to load it."""
    prompts = details["prompts"]
    usage = [
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        'model = SentenceTransformer("path/to/this/folder")',
    ]
    if "query" in prompts:
        usage.append('queries = model.encode(["..."], prompt_name="query")')
    if "document" in prompts:
        usage.append('documents = model.encode(["..."], prompt_name="document")')
    if not prompts:
        usage.append('vectors = model.encode(["..."])')
    usage.append("```")
    return "\n".join(
        [
            "---",
            "library_name: sentence-transformers",
            "tags: [sentence-transformers, feature-extraction, finetuner]",
            "---",
            f"# {source.name}",
            "",
            f"Exported by finetuner from the artifact `{source.artifact.name}` ({source.kind()}).",
            "",
            f"- modules: {' -> '.join(details['modules'])} ({details['pooling']} pooling)",
            f"- embedding size: {source.truncate_dim or source.output_dim}"
            + (
                f" (cut to its first {source.truncate_dim} components)"
                if source.truncate_dim
                else ""
            ),
            f"- prompts: {json.dumps(prompts) if prompts else 'none'}",
            f"- maximum length: {details['max_length']} tokens",
            "",
            *usage,
            "",
        ]
    )
