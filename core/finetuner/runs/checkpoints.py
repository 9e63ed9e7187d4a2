"""Training checkpoints: the whole state of a fit at an epoch's end or after an optimizer step,
for resuming.

A checkpoint is a folder ``<run>/checkpoints/epoch-NNNN/`` (the end of epoch NNNN) or
``<run>/checkpoints/epoch-NNNN-step-SSSSSSSS/`` (within epoch NNNN, after optimizer step SSSSSSSS
of the fit) with ``state.pt`` (tensors and plain
values, loaded with ``torch.load(weights_only=True)``, so nothing arbitrary is unpickled) and
``meta.json``. It is written into a hidden temporary folder and renamed into place, so a kill at
any moment leaves either the complete checkpoint or none: readers skip hidden folders.

Plugins decide *when* to checkpoint (``ctx.save_checkpoint()``) and how many to keep
(:func:`prune`); the trainer decides *what* a checkpoint holds and restores it on resume.

torch and numpy are imported by the functions that write, read or capture state, so listing and
pruning checkpoints (and ``finetuner runs``) stay light.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import fsync_dir, replace_dir, reported_write
from ..errors import ConfigError, RunError
from .processes import pid_alive

__all__ = [
    "Checkpoint",
    "checkpoint_name",
    "list_checkpoints",
    "load_checkpoint",
    "prune",
    "write_checkpoint",
]

FORMAT_VERSION = 1
_NAME = re.compile(r"^epoch-(\d{4,})(?:-step-(\d{8,}))?$")
_TMP_OWNER = re.compile(r"^\.epoch-.*\.(?:tmp|old)-(\d+)$")  # the pid of the writer


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    epoch: int
    """The last completed epoch (0-based), or for a checkpoint within an epoch, that epoch."""
    step: int | None = None
    """Within an epoch: the optimizer steps of the fit done when it was written; None at an
    epoch's end."""

    @property
    def order(self) -> tuple[int, int, int]:
        """Sorts checkpoints by when they were written: within an epoch before its end."""
        return (self.epoch, 1, 0) if self.step is None else (self.epoch, 0, self.step)


def checkpoint_name(epoch: int, step: int | None = None) -> str:
    """The folder name of the checkpoint of *epoch*'s end, or of *step* within *epoch*."""
    return f"epoch-{epoch:04d}" if step is None else f"epoch-{epoch:04d}-step-{step:08d}"


def list_checkpoints(directory: str | os.PathLike[str]) -> list[Checkpoint]:
    """Complete checkpoints in *directory*, oldest first (half-written ones are never listed)."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        match = _NAME.match(child.name)
        if match and (child / "meta.json").is_file() and (child / "state.pt").is_file():
            step = int(match.group(2)) if match.group(2) is not None else None
            found.append(Checkpoint(child, int(match.group(1)), step))
    return sorted(found, key=lambda c: c.order)


def write_checkpoint(
    directory: str | os.PathLike[str],
    epoch: int,
    state: Mapping[str, Any],
    *,
    step: int | None = None,
) -> Checkpoint:
    """Write *state* as the checkpoint of *epoch*'s end, or of optimizer *step* within
    *epoch*, atomically. A write that fails (a full disk) leaves no temporary folder behind
    and raises a RunError naming the path."""
    folder = Path(directory)
    final = folder / checkpoint_name(epoch, step)
    tmp = folder / f".{final.name}.tmp-{os.getpid()}"
    with reported_write("write the checkpoint", tmp):
        try:
            _write_folder(tmp, state, epoch, step)
            replace_dir(tmp, final)  # re-running an epoch after a resume replaces its old one
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a full disk keeps no half checkpoint
            raise
    return Checkpoint(final, epoch, step)


def _write_folder(tmp: Path, state: Mapping[str, Any], epoch: int, step: int | None) -> None:
    import torch

    tmp.parent.mkdir(parents=True, exist_ok=True)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    with open(tmp / "state.pt", "wb") as handle:
        torch.save({"format_version": FORMAT_VERSION, **state}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    meta = {
        "format_version": FORMAT_VERSION,
        "epoch": epoch,
        "step": state.get("step"),
        "within_epoch": step is not None,
    }
    with open(tmp / "meta.json", "w", encoding="utf-8") as handle:
        json.dump(meta, handle)
        handle.flush()
        os.fsync(handle.fileno())
    fsync_dir(tmp)


def load_checkpoint(checkpoint: Checkpoint | str | os.PathLike[str]) -> dict[str, Any]:
    import torch

    path = checkpoint.path if isinstance(checkpoint, Checkpoint) else Path(checkpoint)
    try:
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RunError(
            f"the checkpoint '{path}' cannot be read: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise RunError(
            f"the checkpoint '{path}' has an unknown format; it was written by another version."
        )
    return state


def prune(directory: str | os.PathLike[str], keep: int) -> list[Path]:
    """Delete all but the newest *keep* complete checkpoints, and the temporary folders of
    processes that are gone (a checkpoint another live process is writing is left alone)."""
    if keep < 1:
        raise ConfigError(f"keep must be at least 1, not {keep}.")
    removed = []
    for old in list_checkpoints(directory)[:-keep]:
        shutil.rmtree(old.path, ignore_errors=True)
        removed.append(old.path)
    folder = Path(directory)
    if folder.is_dir():
        for child in folder.iterdir():
            owner = _TMP_OWNER.match(child.name)
            if owner and not pid_alive(int(owner.group(1))):
                shutil.rmtree(child, ignore_errors=True)
    return removed
