"""Installed callbacks by name, and the catalog of first-party callbacks.

:func:`resolve_callback_class` finds an installed callback class by class or entry-point name
(``finetuner.callback.<Class>`` and config files use it); :func:`list_callbacks` loads them all.

The first-party callbacks ship in distributions of their own, which may not be installed. So
that a missing one gets an error naming what to install, the core distribution declares them
in its own metadata, in the entry-point group ``finetuner.first_party``, each entry a copy of
the plugin's own ``finetuner.callbacks`` entry point::

    [project.entry-points."finetuner.first_party"]
    early-stopping = "finetuner_early_stopping:EarlyStopping"

The entry-point name, the class name and, from the module name, the distribution
(``finetuner_early_stopping`` -> ``finetuner-early-stopping``) are all read from there. The
catalog's entries are never imported.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PluginError, close_matches_hint
from .discovery import (
    FIRST_PARTY_GROUP,
    PluginInfo,
    discover,
    entry_point_target,
    entry_points,
    load,
)

__all__ = [
    "FirstPartyCallback",
    "first_party_callback",
    "first_party_callbacks",
    "first_party_distribution",
    "list_callbacks",
    "resolve_callback_class",
]


@dataclass(frozen=True)
class FirstPartyCallback:
    """A first-party callback as the core's catalog declares it (installed or not)."""

    entry_point: str
    """Its ``finetuner.callbacks`` entry-point name, as config files use it: ``early-stopping``."""
    value: str
    """What the entry point names: ``finetuner_early_stopping:EarlyStopping``."""

    @property
    def class_name(self) -> str:
        return (entry_point_target(self.value)[1] or "").split(".")[-1].strip()

    @property
    def package(self) -> str:
        """The top-level import name: ``finetuner_early_stopping``."""
        return entry_point_target(self.value)[0].split(".")[0]

    @property
    def distribution(self) -> str:
        """The distribution to install: ``finetuner-early-stopping``."""
        return self.package.replace("_", "-")

    @property
    def source_folder(self) -> str:
        """Its folder in a source checkout: ``plugins/early-stopping``."""
        return f"plugins/{self.distribution.removeprefix('finetuner-')}"

    @property
    def install_hint(self) -> str:
        return (
            f"`pip install {self.distribution}` (from a source checkout: "
            f"`pip install {self.source_folder}`)"
        )


def first_party_callbacks() -> list[FirstPartyCallback]:
    """Every first-party callback the core's metadata declares, sorted by entry-point name."""
    return [FirstPartyCallback(ep.name, ep.value) for ep in entry_points(FIRST_PARTY_GROUP)]


def first_party_callback(name: str) -> FirstPartyCallback | None:
    """The first-party callback of that class or entry-point name, installed or not."""
    for callback in first_party_callbacks():
        if name in (callback.class_name, callback.entry_point):
            return callback
    return None


def first_party_distribution(name: str) -> str | None:
    """The distribution that ships a first-party callback, by class or entry-point name."""
    callback = first_party_callback(name)
    return callback.distribution if callback is not None else None


def _broken(name: str, info: PluginInfo) -> PluginError:
    return PluginError(
        f"the callback '{name}' (entry point '{info.name}' of distribution "
        f"{info.distribution}) is installed but broken: {info.error}. Reinstall "
        f"{info.distribution}.",
        plugin=info.name,
    )


def resolve_callback_class(name: str) -> type:
    """Find an installed callback class by class or entry-point name (``finetuner.callback.X``).

    :raises PluginError: when it is installed but broken, or is a first-party callback whose
        distribution is not installed (the error names it).
    :raises AttributeError: when no callback has that name (with the close matches).
    """
    candidates = discover().callbacks
    for info in candidates:
        if name in (info.class_name, info.name):
            load(info, warn=False)
            if info.broken:
                raise _broken(name, info)
            return info.obj
    first_party = first_party_callback(name)
    if first_party is not None:
        raise PluginError(
            f"{name} is provided by the distribution '{first_party.distribution}', which is "
            f"not installed. Install it with {first_party.install_hint}.",
            plugin=name,
        )
    known = [info.class_name or info.name for info in candidates]
    everything = [*known, *(callback.class_name for callback in first_party_callbacks())]
    raise AttributeError(
        f"no installed callback is named '{name}'; installed callbacks: "
        f"{', '.join(known) or '(none)'}.{close_matches_hint(name, everything)}"
    )


def list_callbacks() -> dict[str, type]:
    """Every installed, loadable callback class by class name (broken ones are skipped)."""
    found: dict[str, type] = {}
    for info in discover().callbacks:
        load(info)
        if not info.broken:
            found[info.obj.__name__] = info.obj
    return found
