"""The plugin machinery: finding plugins, and the plugin manager of each run.

``discovery``
    the entry-point groups, :class:`PluginInfo`, :func:`discover` and :func:`load`, and
    switching plugins off (``FINETUNER_DISABLE_PLUGINS``).
``catalog``
    installed callbacks by name (:func:`resolve_callback_class`, :func:`list_callbacks`) and
    the first-party callbacks the core's metadata declares, installed or not.
``manager``
    :func:`build_plugin_manager`: the per-run :class:`FinetunerPluginManager`, which also says
    which plugin and hook raised an exception (``pm.culprit(exc)``).
``console``
    :class:`~finetuner.plugins.console.ConsoleReporter`, the always-on console reporter.
``monitoring``
    :class:`~finetuner.plugins.monitoring.MetricMonitor`: watching one metric.
``weights``
    :class:`~finetuner.plugins.weights.WeightSnapshot`: copies of the models' weights.
``kit``
    the plugin author's kit: what first-party plugins use from the core, for everyone.
"""

from ..errors import PluginWarning
from .catalog import (
    FirstPartyCallback,
    first_party_callback,
    first_party_callbacks,
    first_party_distribution,
    list_callbacks,
    resolve_callback_class,
)
from .discovery import (
    CALLBACKS_GROUP,
    COMMANDS_GROUP,
    DISABLE_ENV,
    FIRST_PARTY_GROUP,
    NO_AUTOLOAD_ENV,
    PLUGINS_GROUP,
    Discovery,
    PluginInfo,
    autoload_disabled,
    disabled_names,
    discover,
    hook_names,
    implemented_hooks,
    load,
)
from .manager import FinetunerPluginManager, Registered, build_plugin_manager

__all__ = [
    "CALLBACKS_GROUP",
    "COMMANDS_GROUP",
    "DISABLE_ENV",
    "FIRST_PARTY_GROUP",
    "NO_AUTOLOAD_ENV",
    "PLUGINS_GROUP",
    "Discovery",
    "FinetunerPluginManager",
    "FirstPartyCallback",
    "PluginInfo",
    "PluginWarning",
    "Registered",
    "autoload_disabled",
    "build_plugin_manager",
    "disabled_names",
    "discover",
    "first_party_callback",
    "first_party_callbacks",
    "first_party_distribution",
    "hook_names",
    "implemented_hooks",
    "list_callbacks",
    "load",
    "resolve_callback_class",
]
