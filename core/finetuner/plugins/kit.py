"""The plugin author's kit: what the first-party plugins use from the core, for every plugin.

Everything a first-party plugin takes from the core, beyond :class:`~finetuner.callback.Callback`,
the hooks, events and errors, comes from this one module, so a third-party plugin can do exactly
what they do:

:class:`MetricMonitor`, :func:`resolve_mode`
    watch one metric: its best value, whether a new value improves on it (``min``/``max``/
    ``auto``, ``min_delta``, ``baseline``), kept across a resume. Early stopping and the
    best-model checkpoint use it.
:class:`WeightSnapshot`
    copy every model's weights to the CPU, put them back, keep them in checkpoints. The
    best-model checkpoint and WiSE-FT use it.
:func:`prune_checkpoints`
    delete all but the newest training checkpoints of a run (the training-checkpoint plugin).
:func:`load_dataset`, :class:`CSVOptions`
    turn anything ``fit`` accepts as data into a :class:`~finetuner.data.Dataset` (the
    evaluation plugin's ``finetuner evaluate`` command).
:data:`SEED_MAX`
    the largest seed ``fit`` takes (2**32 - 1), for commands that seed a model themselves.

Importing the kit is cheap: the names whose modules import torch resolve on first use, so a
plugin may import this module at its top and still list, and add commands, without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..runs.checkpoints import prune as prune_checkpoints
from .monitoring import MODES, MetricMonitor, resolve_mode
from .weights import WeightSnapshot

if TYPE_CHECKING:
    from ..config.options import SEED_MAX
    from ..data import CSVOptions, load_dataset

__all__ = [
    "MODES",
    "SEED_MAX",
    "CSVOptions",
    "MetricMonitor",
    "WeightSnapshot",
    "load_dataset",
    "prune_checkpoints",
    "resolve_mode",
]

# Public name -> (module, attribute): names whose modules import torch, loaded on first use.
_LAZY: dict[str, tuple[str, str]] = {
    "CSVOptions": ("finetuner.data", "CSVOptions"),
    "load_dataset": ("finetuner.data", "load_dataset"),
    "SEED_MAX": ("finetuner.config.options", "SEED_MAX"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'finetuner.plugins.kit' has no attribute '{name}'")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
