"""Old import paths that keep working.

The core was once 36 flat modules; it is now a few subpackages with one job each. Code written
against the flat layout (``from finetuner.monitoring import MetricMonitor``) still imports: an
old module name is an alias of the module that holds those names now, the very same module
object, so patching or ``isinstance`` checks see one thing.

This module only maps names; it imports nothing until an old name is imported.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Sequence

__all__ = ["MOVED", "MOVED_PACKAGES", "install", "new_name"]

MOVED: dict[str, str] = {
    # the fit options
    "finetuner.config_file": "finetuner.config.file",
    # the training loop
    "finetuner.trainer": "finetuner.training.trainer",
    "finetuner.losses": "finetuner.training.losses",
    "finetuner.optim": "finetuner.training.optim",
    # models, their files and their use
    "finetuner.artifacts": "finetuner.models.artifact",
    "finetuner.images": "finetuner.models.images",
    "finetuner.inference": "finetuner.models.inference",
    "finetuner.onnx_export": "finetuner.models.onnx",
    # data
    "finetuner.csv_data": "finetuner.data.csv_reader",
    "finetuner.datasets": "finetuner.data.builtin",
    "finetuner.datastore": "finetuner.data.pushed",
    "finetuner.document": "finetuner.data.documents",
    # the run store
    "finetuner._runlog": "finetuner.runs.log",
    "finetuner.checkpoint": "finetuner.runs.checkpoints",
    # the plugin machinery
    "finetuner.console": "finetuner.plugins.console",
    "finetuner.monitoring": "finetuner.plugins.monitoring",
}
"""Old module name -> the module that holds its names now."""

MOVED_PACKAGES: dict[str, str] = {
    "finetuner.backbones": "finetuner.models.backbones",
}
"""Old package name -> new package name; every submodule moves with it."""


def new_name(fullname: str) -> str | None:
    """Where the module *fullname* lives now, or ``None`` if it did not move."""
    if fullname in MOVED:
        return MOVED[fullname]
    for old, new in MOVED_PACKAGES.items():
        if fullname == old or fullname.startswith(old + "."):
            return new + fullname[len(old) :]
    return None


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers imports of old module names with the module that replaced them.

    It sits first on ``sys.meta_path``, so an old name inside a moved package is never found
    as a file a second time under another name.
    """

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if new_name(fullname) is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        target = new_name(spec.name)
        assert target is not None
        module = importlib.import_module(target)
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        # The module ran when its new name was imported. The import system has just given it
        # the alias's spec; give it back its own, so it still names where it lives.
        alias = module.__spec__.name if module.__spec__ is not None else None
        own = self._specs.pop(alias, None) if alias is not None else None
        if own is not None:
            module.__spec__ = own


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once per process)."""
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MovedModules())
