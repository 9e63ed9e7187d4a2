"""What every export folder shares: it is written beside its target and renamed into place,
and it says where it came from in ``finetuner_export.json``."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from ..._io import atomic_write_json, replace_dir
from ..._version import __version__
from ...errors import ConfigError
from ..backbones.model_folders import quiet_transformers
from .source import ExportSource

__all__ = ["EXPORT_INFO", "export_info", "save_pretrained", "staged_folder"]

EXPORT_INFO = "finetuner_export.json"
"""The file of an export folder saying what it holds and how it was made."""


@contextlib.contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """A fresh temporary folder beside *target*, renamed to *target* when the block succeeds
    (replacing an older export whole) and removed when it fails. A *target* holding anything
    but an earlier export is refused, never replaced."""
    if target.exists() and not target.is_dir():
        raise ConfigError(f"cannot export into '{target}': it is a file; give a folder path.")
    if target.is_dir() and any(target.iterdir()) and not (target / EXPORT_INFO).is_file():
        raise ConfigError(
            f"cannot export into '{target}': the folder holds files that are not an earlier "
            "export (it has no finetuner_export.json), and an export replaces its folder "
            "whole. Give a new or empty folder."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, target)


def export_info(
    folder: Path, source: ExportSource, target: str, details: Mapping[str, Any]
) -> dict[str, Any]:
    """Write ``finetuner_export.json``: the format, the artifact and model it came from, and
    the *details* a user of the folder needs (pooling, normalisation, prompts...)."""
    info = {
        "format": target,
        "finetuner_version": __version__,
        "artifact": str(source.artifact.resolve()),
        "model": source.name,
        "registry_name": source.record.metadata.get("registry_name"),
        "tower": source.tower,
        "modality": source.modality,
        "embedding_size": source.truncate_dim or source.output_dim,
        "truncate_dim": source.truncate_dim,
        "matryoshka_dims": source.matryoshka_dims,
        "lora_merged": bool(source.record.lora),
        **details,
    }
    atomic_write_json(folder / EXPORT_INFO, info)
    return info


def save_pretrained(model: nn.Module, folder: Path) -> None:
    """A transformers model's ``config.json`` and ``model.safetensors``, into *folder*."""

    folder.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        model.save_pretrained(str(folder), safe_serialization=True)  # type: ignore[operator]
