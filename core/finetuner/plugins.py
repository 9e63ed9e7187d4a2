"""Plugin discovery and the per-run plugin manager.

Two entry-point groups:

``finetuner.callbacks``
    name -> :class:`~finetuner.callback.Callback` subclass. Users pass instances to ``fit``
    (``finetuner.callback.<Class>`` resolves them lazily), or name them in config files.
``finetuner.plugins``
    name -> module, instance or class registered in every run (always-on). A class is
    instantiated once per run, so runs share no state.

Entry points are loaded sorted by name. ``FINETUNER_DISABLE_PLUGINS=a,b`` blocks plugins by
entry-point or class name; ``FINETUNER_DISABLE_PLUGIN_AUTOLOAD=1`` registers no always-on
plugin. An entry point that fails to load is reported as broken, with its error, and skipped
with a warning.
"""

from __future__ import annotations

import importlib.metadata as importlib_metadata
import inspect
import os
import threading
import types
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError, PluginWarning, close_matches_hint

__all__ = [
    "CALLBACKS_GROUP",
    "FIRST_PARTY_CALLBACKS",
    "PLUGINS_GROUP",
    "Discovery",
    "FinetunerPluginManager",
    "PluginInfo",
    "PluginWarning",
    "build_plugin_manager",
    "disabled_names",
    "discover",
    "hook_names",
    "implemented_hooks",
    "list_callbacks",
    "load",
    "resolve_callback_class",
]

CALLBACKS_GROUP = "finetuner.callbacks"
PLUGINS_GROUP = "finetuner.plugins"
DISABLE_ENV = "FINETUNER_DISABLE_PLUGINS"
NO_AUTOLOAD_ENV = "FINETUNER_DISABLE_PLUGIN_AUTOLOAD"

# Which distribution ships each first-party callback, so that a missing one can be named.
FIRST_PARTY_CALLBACKS: dict[str, str] = {
    "EvaluationCallback": "finetuner-evaluation",
    "EarlyStopping": "finetuner-early-stopping",
    "BestModelCheckpoint": "finetuner-best-model",
    "TrainingCheckpoint": "finetuner-training-checkpoint",
    "WiSEFTCallback": "finetuner-wiseft",
    "WandBLogger": "finetuner-wandb",
    "MLflowLogger": "finetuner-mlflow",
}


# The entry-point names of the same callbacks, as config files use them.
FIRST_PARTY_ENTRY_POINTS: dict[str, str] = {
    "evaluation": "EvaluationCallback",
    "early-stopping": "EarlyStopping",
    "best-model": "BestModelCheckpoint",
    "training-checkpoint": "TrainingCheckpoint",
    "wiseft": "WiSEFTCallback",
    "wandb": "WandBLogger",
    "mlflow": "MLflowLogger",
}


def first_party_distribution(name: str) -> str | None:
    """The distribution that ships a first-party callback, by class or entry-point name."""
    return FIRST_PARTY_CALLBACKS.get(FIRST_PARTY_ENTRY_POINTS.get(name, name))


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
    return os.environ.get(NO_AUTOLOAD_ENV, "").strip().lower() not in ("", "0", "false", "no")


@dataclass
class PluginInfo:
    """One entry point of the two groups, and what loading it gave."""

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
    def class_name(self) -> str | None:
        """The attribute the entry point names (``pkg.mod:Class`` -> ``Class``)."""
        _, _, attr = self.value.partition(":")
        return attr.split(".")[-1].strip() or None

    @property
    def broken(self) -> bool:
        return self.error is not None

    def matches(self, names: Iterable[str]) -> bool:
        lowered = {n.lower() for n in names}
        return self.name.lower() in lowered or (self.class_name or "").lower() in lowered


@dataclass
class Discovery:
    callbacks: list[PluginInfo] = field(default_factory=list)
    plugins: list[PluginInfo] = field(default_factory=list)

    def all(self) -> list[PluginInfo]:
        return [*self.callbacks, *self.plugins]


_lock = threading.Lock()
_loaded: dict[tuple[str, str, str], PluginInfo] = {}


def _entry_points(group: str) -> list[importlib_metadata.EntryPoint]:
    eps = importlib_metadata.entry_points(group=group)
    unique = {(ep.name, ep.value): ep for ep in eps}  # a dist seen twice on sys.path
    return sorted(unique.values(), key=lambda ep: (ep.name, ep.value))


def _info(ep: importlib_metadata.EntryPoint, group: str) -> PluginInfo:
    key = (group, ep.name, ep.value)
    with _lock:
        cached = _loaded.get(key)
    if cached is not None:
        return cached
    dist = getattr(ep, "dist", None)
    return PluginInfo(
        group=group,
        name=ep.name,
        value=ep.value,
        distribution=dist.metadata["Name"] if dist is not None else None,
        version=dist.version if dist is not None else None,
    )


def discover() -> Discovery:
    """List the installed entry points of both groups, sorted by name, without loading them."""
    return Discovery(
        callbacks=[_info(ep, CALLBACKS_GROUP) for ep in _entry_points(CALLBACKS_GROUP)],
        plugins=[_info(ep, PLUGINS_GROUP) for ep in _entry_points(PLUGINS_GROUP)],
    )


def load(info: PluginInfo, *, warn: bool = True) -> PluginInfo:
    """Import an entry point once per process; a failure marks it broken with its error."""
    if info.loaded:
        return info
    key = (info.group, info.name, info.value)
    with _lock:
        if key in _loaded:
            return _loaded[key]
        try:
            info.obj = importlib_metadata.EntryPoint(
                name=info.name, value=info.value, group=info.group
            ).load()
            if info.group == CALLBACKS_GROUP:
                from .callback import Callback

                if not (isinstance(info.obj, type) and issubclass(info.obj, Callback)):
                    raise TypeError(
                        f"'{info.value}' is {info.obj!r}, not a subclass of "
                        "finetuner.callback.Callback"
                    )
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


def resolve_callback_class(name: str) -> type:
    """Find an installed callback class by class or entry-point name (``finetuner.callback.X``)."""
    candidates = discover().callbacks
    for info in candidates:
        if info.class_name == name or info.name == name:
            load(info, warn=False)
            if info.broken:
                raise PluginError(
                    f"the callback '{name}' (entry point '{info.name}' of distribution "
                    f"{info.distribution}) is installed but broken: {info.error}. Reinstall "
                    f"{info.distribution}.",
                    plugin=info.name,
                )
            return info.obj
    dist = first_party_distribution(name)
    if dist is not None:
        folder = dist.removeprefix("finetuner-")
        raise PluginError(
            f"{name} is provided by the distribution '{dist}', which is not installed. Install "
            f"it with `pip install {dist}` (from a source checkout: `pip install "
            f"plugins/{folder}`).",
            plugin=name,
        )
    known = [info.class_name or info.name for info in candidates]
    raise AttributeError(
        f"no installed callback is named '{name}'; installed callbacks: "
        f"{', '.join(known) or '(none)'}.{close_matches_hint(name, [*known, *FIRST_PARTY_CALLBACKS])}"
    )


def list_callbacks() -> dict[str, type]:
    """Every installed, loadable callback class by class name (broken ones are skipped)."""
    found: dict[str, type] = {}
    for info in discover().callbacks:
        load(info)
        if not info.broken:
            found[info.obj.__name__] = info.obj
    return found


class FinetunerPluginManager(pluggy.PluginManager):
    """A pluggy manager for one run.

    Any method or function named after a hook counts as an implementation; the
    ``@finetuner.hookimpl`` marker is needed only for options such as ``tryfirst``.
    """

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self._hook_codes: dict[types.CodeType, list[tuple[str, str, Any]]] = {}

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("finetuner_"):
            method = getattr(plugin, name, None)
            if inspect.isroutine(method):
                return {}
        return opts

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        try:
            registered = super().register(plugin, name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(
                f"plugin {name or repr(plugin)!r} has an invalid hook implementation: {exc}. See "
                "the hook reference in finetuner.hookspecs.",
                plugin=name,
            ) from exc
        if registered is not None:
            for caller in self.get_hookcallers(plugin) or []:
                for impl in caller.get_hookimpls():
                    if impl.plugin is plugin:
                        func = inspect.unwrap(getattr(impl.function, "__func__", impl.function))
                        code = getattr(func, "__code__", None)
                        if code is not None:
                            owners = self._hook_codes.setdefault(code, [])
                            owners.append((registered, caller.name, plugin))
        return registered

    def check_pending(self) -> None:
        known = hook_names()
        for name in self.hook.__dict__:
            if name.startswith("_"):
                continue
            caller = getattr(self.hook, name)
            if caller.spec is None:
                for impl in caller.get_hookimpls():
                    if not impl.optionalhook:
                        raise PluginError(
                            f"plugin '{impl.plugin_name}' implements '{name}', which is not a "
                            f"finetuner hook.{close_matches_hint(name, known)}",
                            plugin=impl.plugin_name,
                            hook=name,
                        )

    def culprit(self, exc: BaseException) -> tuple[str | None, str | None]:
        """Which plugin's hook raised *exc*: ``(plugin name, hook name)`` or ``(None, None)``."""
        from pluggy._callers import _multicall

        calling: str | None = None  # the hook pluggy was running when the frame was entered
        tb = exc.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            if frame.f_code is _multicall.__code__:
                calling = frame.f_locals.get("hook_name")
            owners = self._hook_codes.get(frame.f_code)
            if owners:
                # One function may implement several hooks, or serve several instances.
                matching = [o for o in owners if o[1] == calling] or owners
                this = frame.f_locals.get("self")
                for plugin_name, hook_name, plugin in matching:
                    if len(matching) == 1 or plugin is this:
                        return plugin_name, hook_name
            tb = tb.tb_next
        return None, None


def _unique_name(base: str, taken: set[str]) -> str:
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


@dataclass
class Registered:
    """A plugin registered in one run."""

    name: str
    plugin: Any
    kind: str
    distribution: str | None = None
    version: str | None = None


def build_plugin_manager(
    callbacks: Sequence[Any], *, on_skip: Any = None
) -> tuple[FinetunerPluginManager, list[Registered]]:
    """Create the plugin manager of one run: always-on plugins, then *callbacks* in order.

    *on_skip(name, reason)* is told about every plugin left out (blocked or broken).
    """
    pm = FinetunerPluginManager()
    registered: list[Registered] = []
    taken: set[str] = set()
    blocked = disabled_names()

    def skip(name: str, reason: str) -> None:
        if on_skip is not None:
            on_skip(name, reason)

    if not autoload_disabled():
        for info in discover().plugins:
            if info.matches(blocked):
                skip(info.name, f"blocked by {DISABLE_ENV}")
                continue
            load(info)
            if info.broken:
                skip(info.name, f"broken: {info.error}")
                continue
            plugin = info.obj() if isinstance(info.obj, type) else info.obj
            name = _unique_name(info.name, taken)
            pm.register(plugin, name=name)
            taken.add(name)
            registered.append(
                Registered(name, plugin, "always-on", info.distribution, info.version)
            )

    dists: dict[str | None, PluginInfo] = {info.class_name: info for info in discover().callbacks}
    for callback in callbacks:
        cls = type(callback)
        base = getattr(callback, "plugin_name", None) or cls.__name__
        cb_info = dists.get(cls.__name__)
        if base.lower() in blocked or (cb_info is not None and cb_info.matches(blocked)):
            skip(base, f"blocked by {DISABLE_ENV}")
            continue
        name = _unique_name(base, taken)
        pm.register(callback, name=name)
        taken.add(name)
        registered.append(
            Registered(
                name,
                callback,
                "callback",
                cb_info.distribution if cb_info else None,
                cb_info.version if cb_info else None,
            )
        )
    pm.check_pending()
    return pm, registered
