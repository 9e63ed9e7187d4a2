"""The backbone registry: named model builders, listed by :func:`describe_models`.

A registry entry builds a ``torch.nn.Module`` from options; the options are stored in the
artifact so :func:`finetuner.get_model` can rebuild the module and load its weights without
unpickling anything. Third-party backbones register through the ``finetuner.models``
entry-point group (name -> :class:`ModelSpec`).
"""

from __future__ import annotations

import importlib.metadata as importlib_metadata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import ConfigError, close_matches_hint

__all__ = [
    "MLP",
    "ModelSpec",
    "Preprocessor",
    "describe_models",
    "get_spec",
    "list_models",
    "register_model",
]

MODELS_GROUP = "finetuner.models"


@dataclass(frozen=True)
class ModelSpec:
    """A named backbone.

    ``resolve_options(options, input_shape)`` fills defaults and data-dependent options;
    ``input_shape`` is the shape of one training item (without the batch dimension), or ``None``
    when unknown (at inference). ``build(resolved_options)`` returns the module; the resolved
    options are what the artifact stores to rebuild it.
    """

    name: str
    task: str
    description: str
    build: Callable[[Mapping[str, Any]], nn.Module]
    resolve_options: Callable[[Mapping[str, Any], tuple[int, ...] | None], dict[str, Any]]
    output_dim: Callable[[Mapping[str, Any]], int | None] = field(default=lambda options: None)
    architecture: str = ""
    modality: str = "tensor"
    """What a single-tower model embeds: ``'tensor'``, ``'text'`` or ``'image'``."""
    towers: Mapping[str, str] = field(default_factory=dict)
    """Two-tower models: tower name -> modality (e.g. ``{'clip-text': 'text', ...}``); ``build``
    then returns an ``nn.ModuleDict`` keyed by tower name."""
    preprocessor: Callable[..., Preprocessor] | None = None
    """``preprocessor(options, tower, files)`` returns the :class:`Preprocessor` turning raw
    items into the module's input; *tower* is ``None`` for single-tower models and *files* the
    preprocessor files stored in an artifact (``None`` while training). ``None``: tensors."""
    for_rebuild: Callable[[Mapping[str, Any]], dict[str, Any]] = field(default=dict)
    """The options to rebuild the module from an artifact: nothing pretrained is loaded, as
    the artifact's weights replace it."""

    def build_preprocessor(
        self,
        options: Mapping[str, Any],
        tower: str | None = None,
        files: Mapping[str, bytes] | None = None,
    ) -> Preprocessor:
        """The preprocessor of this backbone (or *tower*): tensors as they are when the spec
        names none; *files* come from an artifact."""
        if self.preprocessor is None:
            return Preprocessor()
        return self.preprocessor(options, tower, files)

    def modality_of(self, tower: str | None) -> str:
        if tower is None or not self.towers:
            return self.modality
        return self.towers[tower]


class Preprocessor:
    """Turns a batch of raw items (a list of texts or image references, or a tensor) into
    what a module takes. Runs in ``DataLoader`` workers: keep it picklable and cheap to copy.

    ``files()`` returns what an artifact must store to rebuild it (e.g. a tokenizer), as
    ``{file name: bytes}``.
    """

    modality = "tensor"

    def __call__(self, values: Any) -> Any:
        if isinstance(values, torch.Tensor):
            return values.to(torch.float32)
        return torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in values])

    def files(self) -> dict[str, bytes]:
        return {}

    def sizes(self, values: Any) -> Sequence[int] | None:
        """The cost of each item in a batch, or None. ``encode`` batches items of similar size
        together (largest first), so each batch pads to little more than its items; the base
        class measures texts by their characters and leaves anything else in order."""
        if self.modality == "text" and is_text_list(values):
            return [len(v) for v in values]
        return None


def is_text_list(values: Any) -> bool:
    """Whether *values* is a list of texts (what ``sizes`` can measure)."""
    return isinstance(values, list) and all(isinstance(v, str) for v in values)


class MLP(nn.Module):
    """A multi-layer perceptron embedding model for flat (or flattened) tensor inputs."""

    def __init__(
        self,
        input_size: int,
        hidden_sizes: tuple[int, ...] | list[int] = (128, 64),
        activation: str = "relu",
        bias: bool = True,
        l2: bool = False,
    ) -> None:
        super().__init__()
        acts: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
        layers: list[nn.Module] = [nn.Flatten()]
        size = input_size
        sizes = list(hidden_sizes)
        for i, out in enumerate(sizes):
            layers.append(nn.Linear(size, out, bias=bias))
            if i < len(sizes) - 1:
                layers.append(acts[activation]())
            size = out
        self.net = nn.Sequential(*layers)
        self.l2 = l2
        self.output_dim = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return nn.functional.normalize(out, dim=-1) if self.l2 else out


_MLP_OPTIONS = {"input_size", "hidden_sizes", "activation", "bias", "l2"}


def _mlp_resolve(options: Mapping[str, Any], input_shape: tuple[int, ...] | None) -> dict[str, Any]:
    unknown = set(options) - _MLP_OPTIONS
    if unknown:
        name = sorted(unknown)[0]
        raise ConfigError(
            f"model_options: 'mlp' has no option '{name}'; its options are "
            f"{', '.join(sorted(_MLP_OPTIONS))}.{close_matches_hint(name, _MLP_OPTIONS)}"
        )
    resolved: dict[str, Any] = {
        "hidden_sizes": [128, 64],
        "activation": "relu",
        "bias": True,
        "l2": False,
    }
    resolved.update(options)
    if "input_size" not in resolved:
        if input_shape is None:
            raise ConfigError("model_options: 'mlp' needs 'input_size' when there is no data.")
        size = 1
        for dim in input_shape:
            size *= int(dim)
        resolved["input_size"] = size
    if not isinstance(resolved["input_size"], int) or resolved["input_size"] < 1:
        raise ConfigError("model_options: 'input_size' must be a positive integer.")
    sizes = resolved["hidden_sizes"]
    if not isinstance(sizes, (list, tuple)) or not all(isinstance(s, int) and s > 0 for s in sizes):
        raise ConfigError("model_options: 'hidden_sizes' must be a list of positive integers.")
    resolved["hidden_sizes"] = list(sizes)
    if resolved["activation"] not in ("relu", "gelu", "tanh"):
        raise ConfigError(
            f"model_options: activation '{resolved['activation']}' is not one of relu, gelu, tanh."
        )
    if input_shape is not None:
        flat = 1
        for dim in input_shape:
            flat *= int(dim)
        if flat != resolved["input_size"]:
            raise ConfigError(
                f"model_options: input_size={resolved['input_size']} but the data's items have "
                f"shape {tuple(input_shape)} ({flat} values); drop input_size to infer it."
            )
    return resolved


_BUILTIN: dict[str, ModelSpec] = {
    "mlp": ModelSpec(
        name="mlp",
        task="any",
        description="Multi-layer perceptron for tensor inputs (flattened); options "
        "input_size (inferred), hidden_sizes, activation, bias, l2",
        build=lambda options: MLP(**options),
        resolve_options=_mlp_resolve,
        output_dim=lambda options: (options.get("hidden_sizes") or [options.get("input_size")])[-1],
        architecture="MLP",
    ),
}
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
            import warnings

            from .errors import PluginWarning

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


_BACKBONE_MODULES = ("vision", "text", "clip")


def _backbone_specs() -> dict[str, ModelSpec]:
    """The backbones of :mod:`finetuner.backbones` (their heavy imports wait until built)."""
    import importlib

    found: dict[str, ModelSpec] = {}
    for module in _BACKBONE_MODULES:
        try:
            found.update(importlib.import_module(f"finetuner.backbones.{module}").SPECS)
        except ModuleNotFoundError as exc:
            if exc.name != f"finetuner.backbones.{module}":
                raise
    return found


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
    import os
    import re

    # a folder, a Hugging Face name, or the folder an artifact's model came from (perhaps gone:
    # an artifact rebuilds from its own files)
    if os.path.isdir(name) or re.fullmatch(r"[\w.-]+/[\w.-]+", name) or os.sep in name:
        from .backbones.text import text_spec

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
