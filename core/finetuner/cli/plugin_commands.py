"""Commands that plugins add to ``finetuner``, imported only when they run.

A plugin declares its commands in the entry-point group ``finetuner.commands``: the command's
name -> the module whose ``finetuner_add_commands(subparsers)`` adds it::

    [project.entry-points."finetuner.commands"]
    evaluate = "finetuner_evaluation._cli"

``finetuner --help`` lists a declared command from metadata alone, with its distribution's
summary as the one-line help, and only the command being run has its module imported. A plugin
that implements ``finetuner_add_commands`` without declaring its commands still works: a
command nobody declared makes every plugin load, as all did before commands were declared.

``FINETUNER_DISABLE_PLUGINS`` blocks a command by its own name, or with the entry point (callback
or always-on plugin) whose module is the command's module or a package holding it.
"""

from __future__ import annotations

import importlib
import importlib.metadata as importlib_metadata
import sys
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from ..errors import PluginError
from ..plugins.discovery import (
    COMMANDS_GROUP,
    PluginInfo,
    disabled_names,
    discover,
    entry_point_target,
    entry_points,
    load,
)
from ..plugins.manager import FinetunerPluginManager

__all__ = ["DeclaredCommand", "add_plugin_commands", "declared_commands"]


@dataclass(frozen=True)
class DeclaredCommand:
    """A command of the ``finetuner.commands`` group, read from metadata, not imported."""

    name: str
    module: str
    distribution: str | None
    summary: str | None

    @property
    def help(self) -> str:
        source = f"({self.distribution})" if self.distribution else "(a plugin)"
        return f"{self.summary.rstrip('.')} {source}" if self.summary else f"a command {source}"

    def blocked_by(self, blocked: Collection[str], infos: list[PluginInfo]) -> bool:
        if self.name.lower() in blocked:
            return True
        return any(
            info.matches(blocked)
            and (self.module == info.module or self.module.startswith(info.module + "."))
            for info in infos
        )


def _declared(ep: importlib_metadata.EntryPoint) -> DeclaredCommand:
    dist = getattr(ep, "dist", None)
    metadata = dist.metadata if dist is not None else None  # parsed once: it reads a file
    return DeclaredCommand(
        name=ep.name,
        module=entry_point_target(ep.value)[0],
        distribution=metadata["Name"] if metadata is not None else None,
        summary=metadata["Summary"] if metadata is not None else None,
    )


def declared_commands() -> list[DeclaredCommand]:
    """The commands plugins declare, sorted by name, less those ``FINETUNER_DISABLE_PLUGINS``
    blocks."""
    commands = [_declared(ep) for ep in entry_points(COMMANDS_GROUP)]
    blocked = disabled_names()
    if not blocked:  # the common case: skip reading the other groups
        return commands
    infos = discover().all()
    return [command for command in commands if not command.blocked_by(blocked, infos)]


def _add_declared(sub: Any, command: DeclaredCommand) -> None:
    """Import *command*'s module and let it add its parser."""
    where = f"the command '{command.name}' of {command.distribution or 'a plugin'}"
    try:
        module = importlib.import_module(command.module)
    except Exception as exc:
        raise PluginError(
            f"{where} failed to load: {type(exc).__name__}: {exc}. Reinstall "
            f"{command.distribution or 'the plugin'}; `finetuner plugins` lists broken plugins.",
            plugin=command.distribution,
        ) from exc
    add = getattr(module, "finetuner_add_commands", None)
    if not callable(add):
        raise PluginError(
            f"{where} names the module '{command.module}' (entry point of {COMMANDS_GROUP}), "
            "which has no finetuner_add_commands(subparsers) function.",
            plugin=command.distribution,
        )
    add(subparsers=sub)
    if command.name not in sub.choices:
        raise PluginError(
            f"{where}: finetuner_add_commands of '{command.module}' did not add it; the "
            f"{COMMANDS_GROUP} entry point and the parser it adds must have the same name.",
            plugin=command.distribution,
        )


def _command_holders(obj: Any) -> list[Any]:
    """Where a plugin's module-level ``finetuner_add_commands`` may live: the entry point's
    module itself, or, for a class, its module and then its top-level package."""
    if not isinstance(obj, type):
        return [obj]
    module = getattr(obj, "__module__", "") or ""
    names = [module, module.split(".")[0]]
    return [sys.modules[name] for name in dict.fromkeys(names) if name in sys.modules]


def _add_every_plugin_command(sub: Any, commands: list[DeclaredCommand]) -> None:
    """Load every plugin and every declared command's module, and let each add its commands
    (``finetuner_add_commands``), as all did before commands were declared."""
    pm = FinetunerPluginManager()
    for command in commands:
        try:
            module = importlib.import_module(command.module)
        except Exception:  # not the command being run: its error shows when it is
            sub.add_parser(command.name, help=command.help, add_help=False)
            continue
        if not pm.is_registered(module):
            pm.register(module, name=command.module)
    blocked = disabled_names()
    for info in discover().all():
        if info.matches(blocked):
            continue
        load(info, warn=False)
        if info.broken:
            continue
        for holder in _command_holders(info.obj):
            if callable(getattr(holder, "finetuner_add_commands", None)):
                if pm.get_plugin(info.name) is None and not pm.is_registered(holder):
                    pm.register(holder, name=info.name)
                break
    pm.hook.finetuner_add_commands(subparsers=sub)


def add_plugin_commands(sub: Any, invoked: str | None, builtin: Collection[str]) -> None:
    """Add the plugins' commands to *sub*, importing only what running *invoked* needs.

    A declared command that is not run gets a placeholder parser with its one-line help. When
    *invoked* is neither built in nor declared, every plugin loads, for the commands of
    plugins that do not declare them.
    """
    commands = declared_commands()
    if invoked is not None and invoked not in builtin and invoked not in {c.name for c in commands}:
        _add_every_plugin_command(sub, commands)
        return
    for command in commands:
        if command.name == invoked:
            _add_declared(sub, command)
        else:
            sub.add_parser(command.name, help=command.help, add_help=False)
