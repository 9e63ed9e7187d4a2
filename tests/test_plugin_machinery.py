"""The plugin machinery's parts on their own: discovery, the catalog, the manager's culprit.

Real entry points (the core's own, and those of whatever is installed), real pluggy; the
end-to-end behaviours are in test_entry_points.py and test_ordering_and_failures.py.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import finetuner
import finetuner.plugins.discovery as discovery
from finetuner.callback import Callback
from finetuner.errors import PluginError
from finetuner.plugins import (
    CALLBACKS_GROUP,
    PLUGINS_GROUP,
    FinetunerPluginManager,
    PluginInfo,
    first_party_callback,
    first_party_callbacks,
    first_party_distribution,
    load,
    resolve_callback_class,
)
from finetuner.plugins.manager import culprit

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "core" / "finetuner"
FIRST_PARTY = {
    "evaluation": ("EvaluationCallback", "finetuner-evaluation"),
    "early-stopping": ("EarlyStopping", "finetuner-early-stopping"),
    "best-model": ("BestModelCheckpoint", "finetuner-best-model"),
    "training-checkpoint": ("TrainingCheckpoint", "finetuner-training-checkpoint"),
    "wiseft": ("WiSEFTCallback", "finetuner-wiseft"),
    "wandb": ("WandBLogger", "finetuner-wandb"),
    "mlflow": ("MLflowLogger", "finetuner-mlflow"),
}


def _python(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout.strip()


# --- discovery --------------------------------------------------------------------------------


def test_discovery_lists_the_core_console_sorted_and_unloaded():
    found = finetuner.plugins.discover()
    console = [info for info in found.plugins if info.name == "console"]
    assert len(console) == 1
    info = console[0]
    assert info.value == "finetuner.plugins.console:ConsoleReporter"
    assert (info.module, info.class_name, info.kind) == (
        "finetuner.plugins.console",
        "ConsoleReporter",
        "always-on",
    )
    assert info.distribution == "finetuner" and info.version == importlib.metadata.version(
        "finetuner"
    )
    for group in (found.callbacks, found.plugins):
        assert [i.name for i in group] == sorted(i.name for i in group)
    assert all(i.kind == "callback" for i in found.callbacks)


def test_plugin_info_matches_by_entry_point_or_class_name_in_any_case():
    info = PluginInfo(CALLBACKS_GROUP, "stop-below", "pkg.mod:StopBelow", "dist", "1")
    assert info.matches({"STOP-BELOW"}) and info.matches(["stopbelow"])
    assert not info.matches({"stop"}) and not info.broken
    module_plugin = PluginInfo(PLUGINS_GROUP, "gradnorm", "pkg.always", None, None)
    assert module_plugin.class_name is None and module_plugin.module == "pkg.always"


def test_disabling_reads_the_environment(monkeypatch):
    monkeypatch.setenv("FINETUNER_DISABLE_PLUGINS", " Console , wandb,,")
    assert discovery.disabled_names() == {"console", "wandb"}
    for value, disabled in (("", False), ("0", False), ("no", False), ("1", True), ("yes", True)):
        monkeypatch.setenv("FINETUNER_DISABLE_PLUGIN_AUTOLOAD", value)
        assert discovery.autoload_disabled() is disabled


def test_a_callback_entry_point_must_name_a_callback_class(monkeypatch):
    monkeypatch.setattr(discovery, "_loaded", {})
    good = load(PluginInfo(CALLBACKS_GROUP, "x", "finetuner.testing:ScriptedProducer", None, None))
    assert not good.broken and issubclass(good.obj, Callback)

    not_a_callback = PluginInfo(
        CALLBACKS_GROUP, "y", "finetuner.plugins.console:ConsoleReporter", "d", "1"
    )
    with pytest.warns(finetuner.plugins.PluginWarning, match="'y'.*not a subclass"):
        load(not_a_callback)
    assert not_a_callback.broken and not_a_callback.obj is None
    assert not_a_callback.error.startswith("TypeError: 'finetuner.plugins.console:Console")
    # The same object is fine as an always-on plugin, and every load after the first is cached.
    plugin = PluginInfo(PLUGINS_GROUP, "y", "finetuner.plugins.console:ConsoleReporter", "d", "1")
    assert not load(plugin).broken
    again = PluginInfo(CALLBACKS_GROUP, "y", "finetuner.plugins.console:ConsoleReporter", "d", "1")
    assert load(again, warn=False) is not_a_callback


def test_no_import_cycle_between_callback_and_plugins():
    # Either may be imported first; discovery and the package never import finetuner.callback.
    out = _python(
        "import sys, finetuner.plugins.discovery\n"
        "print('finetuner.callback' in sys.modules)\n"
        "import finetuner.callback\n"
        "print(finetuner.callback.Callback.__name__)"
    )
    assert out.split() == ["False", "Callback"]
    assert _python("import finetuner.callback; print(finetuner.callback.Callback.__module__)") == (
        "finetuner.callback"
    )
    source = (CORE / "plugins" / "discovery.py").read_text(encoding="utf-8")
    assert not re.search(r"^\s*(from|import)\s+\S*callback\b", source, flags=re.M)


def test_no_private_pluggy_api():
    for path in [*CORE.rglob("*.py"), *(ROOT / "plugins").glob("*/finetuner_*/**/*.py")]:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"pluggy\._", text), f"{path} uses pluggy's private API"


def test_old_module_paths_are_aliases_of_the_new_ones():
    import finetuner.console
    import finetuner.monitoring
    import finetuner.plugins.console
    import finetuner.plugins.kit
    import finetuner.plugins.monitoring

    assert finetuner.console is finetuner.plugins.console
    assert finetuner.monitoring is finetuner.plugins.monitoring
    from finetuner.monitoring import MetricMonitor

    assert MetricMonitor is finetuner.plugins.kit.MetricMonitor


# --- the catalog of first-party callbacks ------------------------------------------------------


def test_the_catalog_comes_from_the_core_metadata():
    catalog = {c.entry_point: c for c in first_party_callbacks()}
    assert {name: (c.class_name, c.distribution) for name, c in catalog.items()} == FIRST_PARTY
    ours = importlib.metadata.distribution("finetuner").entry_points
    assert {ep.name for ep in ours if ep.group == "finetuner.first_party"} == set(FIRST_PARTY)
    stopping = first_party_callback("EarlyStopping")
    assert stopping == first_party_callback("early-stopping") == catalog["early-stopping"]
    assert stopping is not None and stopping.source_folder == "plugins/early-stopping"
    assert "pip install finetuner-early-stopping" in stopping.install_hint
    assert first_party_callback("NoSuchThing") is None
    assert first_party_distribution("wiseft") == first_party_distribution("WiSEFTCallback")
    assert first_party_distribution("WiSEFTCallback") == "finetuner-wiseft"
    assert first_party_distribution("NoSuchThing") is None


def _declared_callbacks(folder: Path) -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((folder / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return dict(project.get("entry-points", {}).get("finetuner.callbacks", {}))


def test_the_catalog_mirrors_every_first_party_pyproject():
    mirrored = {c.entry_point: c.value for c in first_party_callbacks()}
    declared = {}
    for folder in sorted((ROOT / "plugins").iterdir()):
        if (folder / "pyproject.toml").is_file():
            declared.update(_declared_callbacks(folder))
    assert mirrored == declared


def test_the_catalog_agrees_with_the_installed_plugins():
    installed = {ep.name: ep for ep in importlib.metadata.entry_points(group=CALLBACKS_GROUP)}
    missing = [c.distribution for c in first_party_callbacks() if c.entry_point not in installed]
    if missing:
        if os.environ.get("FINETUNER_REQUIRE_PLUGINS") == "1":
            pytest.fail(f"first-party plugins missing: {missing}")
        pytest.skip(f"not every first-party plugin is installed here: {missing}")
    for callback in first_party_callbacks():
        ep = installed[callback.entry_point]
        assert ep.value == callback.value
        assert ep.dist is not None and ep.dist.metadata["Name"] == callback.distribution
        assert resolve_callback_class(callback.class_name).__name__ == callback.class_name


# --- the manager: which plugin and hook raised -------------------------------------------------


class _Boom(Callback):
    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def finetuner_on_epoch_end(self, event):
        if self.fail:
            raise ValueError("boom")

    def _both(self, event):
        if event == "end":
            raise RuntimeError("both")

    finetuner_on_epoch_begin = _both
    finetuner_on_train_epoch_end = _both


def _manager(*plugins: tuple[str, object]) -> FinetunerPluginManager:
    pm = FinetunerPluginManager()
    for name, plugin in plugins:
        pm.register(plugin, name=name)
    return pm


def _raised(call) -> BaseException:
    with pytest.raises(Exception) as info:
        call()
    return info.value


def test_culprit_tells_two_instances_of_one_class_apart():
    pm = _manager(("quiet", _Boom(False)), ("loud", _Boom(True)), ("quiet-2", _Boom(False)))
    exc = _raised(lambda: pm.hook.finetuner_on_epoch_end(ctx=None, event=None))
    assert pm.culprit(exc) == ("loud", "finetuner_on_epoch_end")


def test_culprit_names_the_hook_of_a_function_serving_two():
    pm = _manager(("both", _Boom(False)))
    pm.hook.finetuner_on_epoch_begin(ctx=None, event="begin")
    exc = _raised(lambda: pm.hook.finetuner_on_train_epoch_end(ctx=None, event="end"))
    assert pm.culprit(exc) == ("both", "finetuner_on_train_epoch_end")


def test_culprit_of_a_module_plugin_and_of_a_nested_hook_call():
    import types

    module = types.ModuleType("fake_always")

    def finetuner_on_fit_begin(event):
        pm.hook.finetuner_on_epoch_end(ctx=None, event=event)  # a hook inside a hook

    module.finetuner_on_fit_begin = finetuner_on_fit_begin  # type: ignore[attr-defined]
    pm = _manager(("always", module), ("loud", _Boom(True)))
    exc = _raised(lambda: pm.hook.finetuner_on_fit_begin(ctx=None, event=None))
    # As before: the implementation of the hook the trainer called, which is on the traceback.
    assert pm.culprit(exc) == ("always", "finetuner_on_fit_begin")


def test_culprit_is_none_for_an_error_outside_hooks():
    pm = _manager(("loud", _Boom(True)))
    hook_error = _raised(lambda: pm.hook.finetuner_on_epoch_end(ctx=None, event=None))
    other = _raised(lambda: 1 / 0)
    assert pm.culprit(other) == (None, None)
    assert pm.culprit(hook_error) == ("loud", "finetuner_on_epoch_end")
    assert culprit(other) == (None, None)
    assert culprit(hook_error) == ("loud", "finetuner_on_epoch_end")


def test_an_invalid_implementation_is_a_plugin_error():
    class Bad(Callback):
        def finetuner_on_epoch_end(self, nonsense):
            pass

    with pytest.raises(PluginError, match="'bad' has an invalid hook implementation"):
        _manager(("bad", Bad()))
