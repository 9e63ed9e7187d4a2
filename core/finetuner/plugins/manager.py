"""The plugin manager of one run: always-on plugins and the run's callbacks.

:func:`build_plugin_manager` creates it; the trainer calls hooks through ``pm.hook``. When a hook
raises, :func:`culprit` says which plugin and hook it was, for the run's ``status.json``, with
pluggy's public API only, and at no cost to hook calls that do not fail: it reads the exception's
traceback, where the hook call is a frame of a ``pluggy.HookCaller`` (whose ``name`` is the hook)
and the implementation that raised is a frame running one of that hook's implementations.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pluggy

from .. import hookspecs
from ..errors import PluginError, close_matches_hint
from .discovery import (
    DISABLE_ENV,
    PluginInfo,
    autoload_disabled,
    disabled_names,
    discover,
    hook_names,
    load,
)

__all__ = ["FinetunerPluginManager", "Registered", "build_plugin_manager", "culprit"]


class FinetunerPluginManager(pluggy.PluginManager):
    """A pluggy manager for one run.

    Any method or function named after a hook counts as an implementation; the
    ``@finetuner.hookimpl`` marker is needed only for options such as ``tryfirst``.
    """

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("finetuner_"):
            method = getattr(plugin, name, None)
            if inspect.isroutine(method):
                return {}
        return opts

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        try:
            return super().register(plugin, name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(
                f"plugin {name or repr(plugin)!r} has an invalid hook implementation: {exc}. See "
                "the hook reference in finetuner.hookspecs.",
                plugin=name,
            ) from exc

    def check_pending(self) -> None:
        """Fail on a ``finetuner_*`` implementation that names no hook (a typo)."""
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
        return culprit(exc)


def _code_of(function: Callable[..., Any]) -> types.CodeType | None:
    func = inspect.unwrap(getattr(function, "__func__", function))
    return getattr(func, "__code__", None)


def _by_code(impls: Sequence[pluggy.HookImpl]) -> dict[types.CodeType, list[pluggy.HookImpl]]:
    by_code: dict[types.CodeType, list[pluggy.HookImpl]] = {}
    for impl in impls:
        code = _code_of(impl.function)
        if code is not None:
            by_code.setdefault(code, []).append(impl)
    return by_code


def culprit(exc: BaseException) -> tuple[str | None, str | None]:
    """The plugin and hook that raised *exc*: ``(plugin name, hook name)``, else ``(None, None)``.

    The traceback runs from the caller down to the ``raise``. A frame whose ``self`` is a
    ``pluggy.HookCaller`` is a hook call; the first frame after it that runs one of that hook's
    implementations is the plugin's. So a hook called from inside another hook's implementation
    is blamed on the outer one, the hook the trainer called. One function may implement several
    hooks (the hook call tells which) or serve several instances (the frame's ``self`` tells
    which).
    """
    caller: pluggy.HookCaller | None = None
    impls: dict[types.CodeType, list[pluggy.HookImpl]] = {}
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        this = frame.f_locals.get("self")
        if isinstance(this, pluggy.HookCaller):
            caller, impls = this, _by_code(this.get_hookimpls())
        elif caller is not None and frame.f_code in impls:
            owners = impls[frame.f_code]
            for impl in owners:
                if len(owners) == 1 or impl.plugin is this:
                    return impl.plugin_name, caller.name
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


def _register_always_on(
    pm: FinetunerPluginManager,
    registered: list[Registered],
    blocked: frozenset[str],
    skip: Callable[[str, str], None],
) -> None:
    for info in discover().plugins:
        if info.matches(blocked):
            skip(info.name, f"blocked by {DISABLE_ENV}")
            continue
        load(info)
        if info.broken:
            skip(info.name, f"broken: {info.error}")
            continue
        plugin = info.obj() if isinstance(info.obj, type) else info.obj
        name = _unique_name(info.name, {r.name for r in registered})
        pm.register(plugin, name=name)
        registered.append(Registered(name, plugin, "always-on", info.distribution, info.version))


def build_plugin_manager(
    callbacks: Sequence[Any], *, on_skip: Callable[[str, str], None] | None = None
) -> tuple[FinetunerPluginManager, list[Registered]]:
    """Create the plugin manager of one run: always-on plugins, then *callbacks* in order.

    *on_skip(name, reason)* is told about every plugin left out (blocked or broken).
    """
    pm = FinetunerPluginManager()
    registered: list[Registered] = []
    blocked = disabled_names()

    def skip(name: str, reason: str) -> None:
        if on_skip is not None:
            on_skip(name, reason)

    if not autoload_disabled():
        _register_always_on(pm, registered, blocked, skip)

    infos: dict[str | None, PluginInfo] = {info.class_name: info for info in discover().callbacks}
    for callback in callbacks:
        cls = type(callback)
        base = getattr(callback, "plugin_name", None) or cls.__name__
        info = infos.get(cls.__name__)
        if base.lower() in blocked or (info is not None and info.matches(blocked)):
            skip(base, f"blocked by {DISABLE_ENV}")
            continue
        name = _unique_name(base, {r.name for r in registered})
        pm.register(callback, name=name)
        registered.append(
            Registered(
                name,
                callback,
                "callback",
                info.distribution if info else None,
                info.version if info else None,
            )
        )
    pm.check_pending()
    return pm, registered
