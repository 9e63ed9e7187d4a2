"""The backbone registry: named model builders, listed by :func:`describe_models`.

A registry entry (a :class:`~finetuner.models.spec.ModelSpec`) builds a ``torch.nn.Module``
from options; the options are stored in the artifact so :func:`finetuner.get_model` can rebuild
the module and load its weights without unpickling anything. The entries are the built-in
``mlp``, the backbones of :mod:`finetuner.models.backbones`, those of other distributions (the
``finetuner.models`` entry-point group, name -> spec) and those added by :func:`register_model`.
"""

from __future__ import annotations

import importlib.metadata as importlib_metadata
import os
import re
import warnings
from typing import Any

from ..errors import ConfigError, PluginWarning, close_matches_hint
from .backbones import clip, text, vision
from .backbones.text import text_spec
from .mlp import MLP_SPEC
from .spec import ModelSpec

__all__ = ["MODELS_GROUP", "describe_models", "get_spec", "list_models", "register_model"]

MODELS_GROUP = "finetuner.models"
"""The entry-point group through which other distributions add backbones."""

_BUILTIN: dict[str, ModelSpec] = {"mlp": MLP_SPEC}
_registered: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> None:
    """Add a backbone to the registry of this process (entry points are found on their own)."""
    _registered[spec.name] = spec


def _entry_point_specs() -> dict[str, ModelSpec]:
    found: dict[str, ModelSpec] = {}
    for ep in sorted(importlib_metadata.entry_points(group=MODELS_GROUP), key=lambda e: e.name):
        try:
            spec = ep.load()
        except Exception as exc:
            warnings.warn(
                f"backbone entry point '{ep.name}' ({ep.value}) failed to load and is skipped: "
                f"{type(exc).__name__}: {exc}",
                PluginWarning,
                stacklevel=3,
            )
            continue
        if isinstance(spec, ModelSpec):
            found[spec.name] = spec
    return found


def _backbone_specs() -> dict[str, ModelSpec]:
    """The backbones of :mod:`finetuner.models.backbones` (their heavy imports wait until
    built)."""
    return {**vision.SPECS, **text.SPECS, **clip.SPECS}


def _all_specs() -> dict[str, ModelSpec]:
    return {**_entry_point_specs(), **_backbone_specs(), **_BUILTIN, **_registered}


def list_models() -> list[str]:
    """Names of every registered backbone."""
    return sorted(_all_specs())


def get_spec(name: str) -> ModelSpec:
    """The registry entry *name*; a local model folder or a ``namespace/model`` name is a text
    model (read from that folder or the Hugging Face cache, never downloaded)."""
    specs = _all_specs()
    if name in specs:
        return specs[name]
    # a folder, a Hugging Face name, or the folder an artifact's model came from (perhaps gone:
    # an artifact rebuilds from its own files)
    if os.path.isdir(name) or re.fullmatch(r"[\w.-]+/[\w.-]+", name) or os.sep in name:
        return text_spec(name, f"text model from {name}")
    raise ConfigError(
        f"unknown model '{name}'; available models: {', '.join(sorted(specs))} (or a local "
        f"model folder, or any torch.nn.Module).{close_matches_hint(name, specs)}"
    )


def describe_models(task: str | None = None, *, print_table: bool = True) -> list[dict[str, Any]]:
    """Print (and return) the backbones: name, task, output_dim, architecture, description."""
    rows = []
    for spec in sorted(_all_specs().values(), key=lambda s: (s.task, s.name)):
        if task is not None and spec.task not in (task, "any"):
            continue
        try:
            dim = spec.output_dim(spec.resolve_options({}, (1,)))
        except Exception:  # a backbone whose files are not here: its nominal size
            try:
                dim = spec.output_dim({})
            except Exception:
                dim = None
        rows.append(
            {
                "name": spec.name,
                "task": spec.task,
                "output_dim": dim,
                "architecture": spec.architecture,
                "description": spec.description,
            }
        )
    if print_table:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="Finetuner backbones" + (f": {task}" if task else ""))
        for column in ("name", "task", "output_dim", "architecture", "description"):
            table.add_column(column)
        for row in rows:
            table.add_row(*(str(row[c]) if row[c] is not None else "-" for c in row))
        Console().print(table)
    return rows
