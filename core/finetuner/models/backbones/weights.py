"""Torchvision weight files for the image backbones: where they are looked for, and loading one
into a network, refusing a file of another architecture.

Weights are never downloaded: ``$FINETUNER_WEIGHTS_DIR`` comes first, then torch's hub cache
(``torch.hub.get_dir()/checkpoints``, where torchvision keeps what it downloads).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError

__all__ = ["WEIGHTS_DIR_ENV", "find_pretrained_weights", "load_weights", "weight_dirs"]

WEIGHTS_DIR_ENV = "FINETUNER_WEIGHTS_DIR"


def _read_state_dict(path: Path, model: str) -> Mapping[str, Any]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(
            f"cannot read the weights of {model} from {path}: {type(exc).__name__}: {exc}. "
            "Give a torchvision state dict saved with torch.save (.pth) or a .safetensors file."
        ) from exc
    if isinstance(loaded, Mapping):
        for key in ("state_dict", "model"):  # checkpoints that wrap the state dict
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise ConfigError(
            f"{path} holds no state dict of tensors (it holds a {type(loaded).__name__}); "
            f"{model} needs a state dict of that architecture."
        )
    return loaded


def _listed(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(f"'{k}'" for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_weights(network: nn.Module, path: str | os.PathLike[str], model: str) -> None:
    """Load a torchvision weight file into *network*, refusing one whose keys or shapes differ
    (naming a few of them); *model* names the network in messages."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"model_options: the weights file of {model} does not exist: {path}. Give the "
            "path of a torchvision weight file (.pth or .safetensors)."
        )
    state = _read_state_dict(path, model)
    expected = network.state_dict()
    # Old torchvision files lack the batch-norm counters; load_state_dict fills them in.
    missing = [k for k in expected if k not in state and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"'{k}' {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong_shape:
        problems = []
        if missing:
            problems.append(f"missing keys {_listed(missing)}")
        if unexpected:
            problems.append(f"unexpected keys {_listed(unexpected)}")
        if wrong_shape:
            problems.append(
                "wrong shapes "
                + ", ".join(wrong_shape[:3])
                + (f" and {len(wrong_shape) - 3} more" if len(wrong_shape) > 3 else "")
            )
        raise ConfigError(
            f"the weights in {path} do not fit {model} ({'; '.join(problems)}). Give the "
            f"torchvision weight file of the same architecture, or pretrained=False."
        )
    network.load_state_dict(state, strict=True)


def weight_dirs() -> list[Path]:
    """Where pretrained weight files are looked for, in order."""
    dirs = []
    if os.environ.get(WEIGHTS_DIR_ENV):
        dirs.append(Path(os.environ[WEIGHTS_DIR_ENV]).expanduser())
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return dirs


def find_pretrained_weights(model: str, file_name: str) -> Path:
    """The path of torchvision's weight file *file_name*, or a ConfigError saying where it was
    looked for and how to go on."""
    dirs = weight_dirs()
    for directory in dirs:
        candidate = directory / file_name
        if candidate.is_file():
            return candidate
    looked = " and ".join(str(d) for d in dirs)
    raise ConfigError(
        f"the pretrained weights of '{model}' are not on this machine: looked for {file_name} "
        f"in {looked}; weights are never downloaded. Put torchvision's file {file_name} in "
        f"${WEIGHTS_DIR_ENV} or the torch hub cache (or pass model_options={{'weights': "
        f"'/path/{file_name}'}}), or train from random initial weights with "
        "model_options={'pretrained': False}."
    )
