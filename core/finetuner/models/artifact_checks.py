"""What an artifact's metadata must be before a model is built from it, and the check that its
weights fit the model that metadata declares, made on the ``meta`` device (no memory) before
the real model is built. Every fault is an :class:`~finetuner.errors.ArtifactError` naming the
file."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import yaml

from .._yaml import load_bounded
from ..errors import ArtifactError, ConfigError

__all__ = ["check_model_metadata", "check_weights_fit", "parse_metadata"]

_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "registry_name": (str,),
    "class": (str,),
    "tower": (str,),
    "modality": (str,),
    "options": (dict,),
    "adapter": (dict,),
    "output_dim": (int,),
}


def parse_metadata(data: bytes | None, what: str) -> dict[str, Any]:
    """The mapping of the metadata file *what* (empty where there is none)."""
    if data is None:
        return {}
    try:
        value, _ = load_bounded(data)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or exc
        raise ArtifactError(
            f"{what} is not valid YAML ({problem}); it was edited or damaged."
        ) from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ArtifactError(
            f"{what} holds a {type(value).__name__}, not a mapping; it was edited or damaged."
        )
    return value


def check_model_metadata(meta: Mapping[str, Any], what: str) -> None:
    """Refuse a model's metadata whose fields have the wrong types."""
    for key, types in _FIELD_TYPES.items():
        value = meta.get(key)
        if value is None:
            continue
        if not isinstance(value, types) or isinstance(value, bool):
            raise ArtifactError(
                f"{what}: '{key}' is {value!r} ({type(value).__name__}), not a "
                f"{types[0].__name__}; the file was edited or damaged. Use the artifact the run "
                "wrote."
            )


def build_from_metadata(build: Callable[[], Any], what: str) -> Any:
    """``build()``, with what a tampered metadata makes a builder raise as an ArtifactError."""
    try:
        return build()
    except ArtifactError:
        raise
    except (ConfigError, TypeError, ValueError, KeyError, IndexError, RuntimeError) as exc:
        problem = str(exc).replace("unexpected keyword argument", "unknown option")
        raise ArtifactError(
            f"{what}: cannot build the model it describes ({type(exc).__name__}: {problem}); "
            "the file was edited or damaged."
        ) from None


def check_weights_fit(
    build: Callable[[], torch.nn.Module], tensors: Mapping[str, torch.Tensor], what: str
) -> None:
    """Build the declared model on the ``meta`` device (no memory, no time) and refuse
    *tensors* unless each of its parameters and buffers has one of the same shape."""
    try:
        with torch.device("meta"):
            expected = build().state_dict()
    except ArtifactError:
        raise
    except Exception:  # a builder that cannot run on `meta`: the real build checks instead
        return
    missing = [k for k in expected if k not in tensors]
    extra = [k for k in tensors if k not in expected]
    if missing or extra:
        names = ", ".join((missing or extra)[:3])
        raise ArtifactError(
            f"{what}: the weights do not fit the model its metadata declares "
            f"({'missing' if missing else 'unexpected'} tensors: {names}); the artifact was "
            "edited or damaged."
        )
    for key, want in expected.items():
        got = tensors[key]
        if tuple(got.shape) != tuple(want.shape) or (
            got.dtype.is_floating_point != want.dtype.is_floating_point
        ):
            raise ArtifactError(
                f"{what}: tensor '{key}' is {got.dtype} {tuple(got.shape)} but the model its "
                f"metadata declares needs {want.dtype} {tuple(want.shape)}; the artifact was "
                "edited or damaged."
            )
