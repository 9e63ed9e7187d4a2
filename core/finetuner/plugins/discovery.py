"""Finding and loading plugins through entry points.

Four entry-point groups:

``finetuner.callbacks``
    name -> :class:`~finetuner.callback.Callback` subclass. Users pass instances to ``fit``
    (``finetuner.callback.<Class>`` resolves them lazily), or name them in config files.
``finetuner.plugins``
    name -> module, instance or class registered in every run (always-on). A class is
    instantiated once per run, so runs share no state.
``finetuner.commands``
    command name -> the module whose ``finetuner_add_commands(subparsers)`` adds that command
    to the ``finetuner`` command line; read by :mod:`finetuner.cli` without importing it.
``finetuner.first_party``
    the core's own catalog of the first-party callbacks (see :mod:`.catalog`).

Entry points are listed and loaded sorted by name, so behaviour never depends on the order of
the file system. ``FINETUNER_DISABLE_PLUGINS=a,b`` blocks plugins by entry-point or class
name; ``FINETUNER_DISABLE_PLUGIN_AUTOLOAD=1`` registers no always-on plugin. An entry point
that fails to load is reported as broken, with its error, and skipped with a warning.
"""

from __future__ import annotations

import abc
import importlib.metadata as importlib_metadata
import os
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import hookspecs
from ..errors import PluginWarning

__all__ = [
    "CALLBACKS_GROUP",
    "COMMANDS_GROUP",
    "DISABLE_ENV",
    "FIRST_PARTY_GROUP",
    "NO_AUTOLOAD_ENV",
    "PLUGINS_GROUP",
    "CallbackClass",
    "Discovery",
    "PluginInfo",
    "autoload_disabled",
    "disabled_names",
    "discover",
    "entry_point_target",
    "entry_points",
    "hook_names",
    "implemented_hooks",
    "load",
]

CALLBACKS_GROUP = "finetuner.callbacks"
PLUGINS_GROUP = "finetuner.plugins"
COMMANDS_GROUP = "finetuner.commands"
FIRST_PARTY_GROUP = "finetuner.first_party"
DISABLE_ENV = "FINETUNER_DISABLE_PLUGINS"
NO_AUTOLOAD_ENV = "FINETUNER_DISABLE_PLUGIN_AUTOLOAD"


class CallbackClass(abc.ABC):  # noqa: B024 (a marker: Callback registers with it, no methods)
    """What an entry point of ``finetuner.callbacks`` must name: a subclass of
    :class:`finetuner.callback.Callback`.

    ``finetuner.callback`` imports this module and registers its base class here
    (``CallbackClass.register(Callback)``), so entry points are checked without this module
    depending on the one above it. A class can only subclass ``Callback`` after importing
    ``finetuner.callback``, so the registration is in place whenever it matters.
    """


def hook_names() -> list[str]:
    """Every hook name declared in :mod:`finetuner.hookspecs`, in declaration order."""
    return [
        name
        for name, obj in vars(hookspecs).items()
        if name.startswith("finetuner_") and callable(obj)
    ]


def implemented_hooks(plugin: Any) -> list[str]:
    """The hooks a plugin (class, instance or module) implements, in declaration order."""
    return [name for name in hook_names() if callable(getattr(plugin, name, None))]


def disabled_names() -> frozenset[str]:
    """Lower-cased names blocked by ``FINETUNER_DISABLE_PLUGINS``."""
    raw = os.environ.get(DISABLE_ENV, "")
    return frozenset(part.strip().lower() for part in raw.split(",") if part.strip())


def autoload_disabled() -> bool:
    """Whether ``FINETUNER_DISABLE_PLUGIN_AUTOLOAD`` keeps every always-on plugin out."""
    return os.environ.get(NO_AUTOLOAD_ENV, "").strip().lower() not in ("", "0", "false", "no")


def entry_point_target(value: str) -> tuple[str, str | None]:
    """What an entry point's value names: ``"pkg.mod:Class"`` -> ``("pkg.mod", "Class")``;
    the attribute is ``None`` when the value names a module."""
    module, _, attr = value.partition(":")
    return module.strip(), attr.strip() or None


@dataclass
class PluginInfo:
    """One entry point of the callbacks or plugins group, and what loading it gave."""

    group: str
    name: str
    value: str
    distribution: str | None
    version: str | None
    loaded: bool = False
    obj: Any = None
    error: str | None = None

    @property
    def kind(self) -> str:
        return "callback" if self.group == CALLBACKS_GROUP else "always-on"

    @property
    def module(self) -> str:
        """The module the entry point names (``pkg.mod:Class`` -> ``pkg.mod``)."""
        return entry_point_target(self.value)[0]

    @property
    def class_name(self) -> str | None:
        """The attribute the entry point names (``pkg.mod:Class`` -> ``Class``)."""
        name = (entry_point_target(self.value)[1] or "").split(".")[-1].strip()
        return name or None

    @property
    def broken(self) -> bool:
        return self.error is not None

    def matches(self, names: Iterable[str]) -> bool:
        """Whether the entry-point or class name is among *names* (any case)."""
        lowered = {n.lower() for n in names}
        return self.name.lower() in lowered or (self.class_name or "").lower() in lowered


@dataclass
class Discovery:
    """The installed entry points of both groups, sorted by name, not loaded."""

    callbacks: list[PluginInfo] = field(default_factory=list)
    plugins: list[PluginInfo] = field(default_factory=list)

    def all(self) -> list[PluginInfo]:
        return [*self.callbacks, *self.plugins]


_lock = threading.Lock()
_loaded: dict[tuple[str, str, str], PluginInfo] = {}


def entry_points(group: str) -> list[importlib_metadata.EntryPoint]:
    """The entry points of *group*, sorted by name, each once (a distribution may be on
    ``sys.path`` twice)."""
    found = importlib_metadata.entry_points(group=group)
    unique = {(ep.name, ep.value): ep for ep in found}
    return sorted(unique.values(), key=lambda ep: (ep.name, ep.value))


def _info(ep: importlib_metadata.EntryPoint, group: str) -> PluginInfo:
    with _lock:
        cached = _loaded.get((group, ep.name, ep.value))
    if cached is not None:
        return cached
    dist = getattr(ep, "dist", None)
    metadata = dist.metadata if dist is not None else None  # parsed once: it reads a file
    return PluginInfo(
        group=group,
        name=ep.name,
        value=ep.value,
        distribution=metadata["Name"] if metadata is not None else None,
        version=metadata["Version"] if metadata is not None else None,
    )


def discover() -> Discovery:
    """List the installed entry points of both groups, sorted by name, without loading them."""
    return Discovery(
        callbacks=[_info(ep, CALLBACKS_GROUP) for ep in entry_points(CALLBACKS_GROUP)],
        plugins=[_info(ep, PLUGINS_GROUP) for ep in entry_points(PLUGINS_GROUP)],
    )


def _import(info: PluginInfo) -> Any:
    obj = importlib_metadata.EntryPoint(name=info.name, value=info.value, group=info.group).load()
    if info.group == CALLBACKS_GROUP and not (
        isinstance(obj, type) and issubclass(obj, CallbackClass)
    ):
        raise TypeError(f"'{info.value}' is {obj!r}, not a subclass of finetuner.callback.Callback")
    return obj


def load(info: PluginInfo, *, warn: bool = True) -> PluginInfo:
    """Import an entry point once per process; a failure marks it broken with its error.

    A ``finetuner.callbacks`` entry point must name a ``Callback`` subclass, else it is
    broken too. Returns the loaded :class:`PluginInfo` (the cached one after the first load).
    """
    if info.loaded:
        return info
    key = (info.group, info.name, info.value)
    with _lock:
        if key in _loaded:
            return _loaded[key]
        try:
            info.obj = _import(info)
        except Exception as exc:
            info.obj = None
            info.error = f"{type(exc).__name__}: {exc}"
        info.loaded = True
        _loaded[key] = info
    if info.error and warn:
        warnings.warn(
            f"finetuner skips the {info.kind} plugin '{info.name}' ({info.value}, distribution "
            f"{info.distribution}): it failed to load: {info.error}. Reinstall or uninstall that "
            "distribution; `finetuner plugins` lists broken plugins.",
            PluginWarning,
            stacklevel=3,
        )
    return info
