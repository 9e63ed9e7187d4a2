"""The tokenizer of an exported text model, as transformers' ``AutoTokenizer`` reads it.

The artifact keeps the fast tokenizer's ``tokenizer.json``; next to it the export writes a
``tokenizer_config.json`` naming ``PreTrainedTokenizerFast``, the special tokens the
``tokenizer.json`` holds (the padding token above all) and the maximum length, so that the
loaded tokenizer makes the same ids as finetuner's preprocessor.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..._io import atomic_write_json, atomic_write_text

__all__ = ["text_input_names", "tokenizer_settings", "write_tokenizer"]

# Special tokens of the tokenizers finetuner's backbones use, by the role transformers names.
_ROLES = {
    "cls_token": ("[CLS]", "<s>", "<|startoftext|>"),
    "sep_token": ("[SEP]", "</s>"),
    "unk_token": ("[UNK]", "<unk>"),
    "mask_token": ("[MASK]", "<mask>"),
    "bos_token": ("<s>", "<|startoftext|>"),
    "eos_token": ("</s>", "<|endoftext|>"),
}


def tokenizer_settings(
    tokenizer_json: str, max_length: int, input_names: Sequence[str]
) -> dict[str, Any]:
    """The ``tokenizer_config.json`` of *tokenizer_json*: the fast tokenizer class, its special
    tokens by role, *max_length* as ``model_max_length``, and the *input_names* the model takes
    (``token_type_ids`` only where it takes them)."""
    description = json.loads(tokenizer_json)
    special = {
        token.get("content")
        for token in description.get("added_tokens") or []
        if token.get("special")
    }
    settings: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": int(max_length),
        "padding_side": "right",
        "truncation_side": "right",
        "clean_up_tokenization_spaces": False,
        "model_input_names": list(input_names),
    }
    for role, candidates in _ROLES.items():
        token = next((c for c in candidates if c in special), None)
        if token is not None:
            settings[role] = token
    settings["pad_token"] = _pad_token(description, special)
    return settings


def _pad_token(description: dict[str, Any], special: set[str | None]) -> str:
    """The token finetuner pads with: the ``tokenizer.json``'s own padding token, else the
    token of id 0 (finetuner pads with id 0 when the tokenizer names none)."""
    padding = description.get("padding") or {}
    if padding.get("pad_token"):
        return str(padding["pad_token"])
    for candidate in ("[PAD]", "<pad>"):
        if candidate in special:
            return candidate
    vocab = (description.get("model") or {}).get("vocab")
    if isinstance(vocab, dict):
        return next((str(t) for t, i in vocab.items() if i == 0), "[PAD]")
    return "[PAD]"


def text_input_names(model: Any) -> list[str]:
    """The tokenizer outputs a transformers text *model* takes: ``input_ids``,
    ``attention_mask``, and ``token_type_ids`` where its ``forward`` has them."""
    takes = set(inspect.signature(model.forward).parameters)
    return [n for n in ("input_ids", "token_type_ids", "attention_mask") if n in takes]


def write_tokenizer(
    folder: Path, tokenizer_json: str, max_length: int, input_names: Sequence[str]
) -> None:
    """``tokenizer.json`` and ``tokenizer_config.json`` of the model, into *folder*."""
    atomic_write_text(folder / "tokenizer.json", tokenizer_json)
    settings = tokenizer_settings(tokenizer_json, max_length, input_names)
    atomic_write_json(folder / "tokenizer_config.json", settings)
