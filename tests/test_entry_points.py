"""Plugin discovery, ordering and failures through REAL entry points.

The callbacks and always-on plugins here come from two test distributions installed into the
environment, found through their ``finetuner.callbacks`` / ``finetuner.plugins`` entry points
exactly as a third-party plugin would be:

    pip install -e tests/fixtures/finetuner-fixture-plugin -e tests/fixtures/finetuner-fixture-broken

Without them this module is skipped, unless ``FINETUNER_REQUIRE_FIXTURE=1`` (set by
``tox -e core``), where their absence is an error. The same behaviours with callbacks
defined in the test itself are in test_ordering_and_failures.py.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_FIXTURE_PACKAGES = ("finetuner_fixture_plugin", "finetuner_fixture_broken")

if os.environ.get("FINETUNER_REQUIRE_FIXTURE") == "1":
    for _package in _FIXTURE_PACKAGES:
        try:
            importlib.import_module(_package)
        except ImportError as exc:  # fail loudly: this environment promised the fixtures
            raise ImportError(
                f"FINETUNER_REQUIRE_FIXTURE=1 but the test distribution '{_package}' is not "
                "importable; install it with `pip install -e tests/fixtures/finetuner-fixture-plugin "
                "-e tests/fixtures/finetuner-fixture-broken`."
            ) from exc
else:
    for _package in _FIXTURE_PACKAGES:
        pytest.importorskip(
            _package,
            reason=f"{_package} is not installed (pip install -e tests/fixtures/...)",
        )

import finetuner  # noqa: E402
import finetuner.callback  # noqa: E402
import finetuner.plugins.discovery  # noqa: E402
from finetuner import hookspecs  # noqa: E402
from finetuner.cli import main  # noqa: E402
from finetuner.errors import ConfigError, PluginError  # noqa: E402
from finetuner.plugins import PluginWarning, hook_names, resolve_callback_class  # noqa: E402
from finetuner.testing import HookRecorder, make_tiny_data, run_recorded_fit  # noqa: E402
from finetuner_fixture_plugin import (  # noqa: E402
    FIXTURE_KEY,
    FixtureConsumer,
    FixtureProducer,
    FixtureRaiser,
    always,
)

pytestmark = [
    pytest.mark.fixture_plugin,
    # The broken fixture warns on its first load in a process; tests that expect it check it.
    pytest.mark.filterwarnings("ignore::finetuner.plugins.PluginWarning"),
]

PLUGIN_DIST = "finetuner-fixture-plugin"
BROKEN_DIST = "finetuner-fixture-broken"
ALWAYS_HOOKS = {
    "finetuner_on_fit_begin",
    "finetuner_on_epoch_begin",
    "finetuner_on_metrics",
    "finetuner_on_epoch_end",
    "finetuner_on_train_end",
    "finetuner_on_fit_end",
}


@pytest.fixture(autouse=True)
def _fresh_always_calls():
    """``always.CALLS`` lives for the whole process: every test starts from an empty list."""
    always.CALLS.clear()
    yield
    always.CALLS.clear()


def _plugin_rows(capsys) -> dict[str, dict]:
    capsys.readouterr()  # drop what a fit printed before
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    return {row["name"]: row for row in rows}


def _hooks(recorder: HookRecorder) -> list[str]:
    return [name for name in recorder.names() if name != "finetuner_on_log"]


def _only_run(runs_dir: Path):
    (run,) = finetuner.list_runs(runs_dir=runs_dir)
    return run


# --- discovery and listing --------------------------------------------------------------------


def test_plugins_json_lists_the_fixture_entry_points(capsys):
    rows = _plugin_rows(capsys)
    version = importlib.metadata.version(PLUGIN_DIST)

    producer, consumer = rows["fixture-producer"], rows["fixture-consumer"]
    for row, obj in (
        (producer, "finetuner_fixture_plugin:FixtureProducer"),
        (consumer, "finetuner_fixture_plugin:FixtureConsumer"),
    ):
        assert row["kind"] == "callback"
        assert row["object"] == obj
        assert row["distribution"] == PLUGIN_DIST
        assert row["version"] == version
        assert row["status"] == "ok" and row["error"] is None
    assert producer["hooks"] == ["finetuner_evaluate"]
    assert consumer["hooks"] == ["finetuner_on_fit_begin", "finetuner_on_metrics"]

    always_row = rows["fixture-always"]
    assert always_row["kind"] == "always-on"
    assert always_row["distribution"] == PLUGIN_DIST and always_row["status"] == "ok"
    assert ALWAYS_HOOKS | {"finetuner_add_commands"} == set(always_row["hooks"])
    assert rows["console"]["kind"] == "always-on" and rows["console"]["status"] == "ok"

    broken_plugin, broken_callback = rows["fixture-broken"], rows["fixture-broken-callback"]
    assert broken_plugin["kind"] == "always-on" and broken_plugin["distribution"] == BROKEN_DIST
    assert broken_plugin["status"] == "broken" and broken_plugin["hooks"] == []
    assert broken_plugin["error"] == "ImportError: fixture: deliberately broken"
    assert broken_callback["kind"] == "callback" and broken_callback["status"] == "broken"
    assert "DoesNotExist" in broken_callback["error"]

    # Entry points are listed (and loaded) sorted by name, callbacks first.
    names = list(rows)
    callbacks = [n for n in names if rows[n]["kind"] == "callback"]
    plugins = [n for n in names if rows[n]["kind"] == "always-on"]
    assert names == callbacks + plugins
    assert callbacks == sorted(callbacks) and plugins == sorted(plugins)


def test_callback_classes_resolve_lazily_by_attribute():
    # A fresh interpreter: importing finetuner.callback must not import any plugin; the
    # attribute lookup goes through the entry point and imports only then.
    script = textwrap.dedent(
        """
        import sys
        import finetuner.callback
        before = "finetuner_fixture_plugin" in sys.modules
        cls = finetuner.callback.FixtureProducer
        print(before, cls.__module__, cls.__name__, "finetuner_fixture_plugin" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert out == ["False", "finetuner_fixture_plugin", "FixtureProducer", "True"]

    assert finetuner.callback.FixtureProducer is FixtureProducer
    assert finetuner.callback.FixtureConsumer is FixtureConsumer
    assert resolve_callback_class("fixture-raiser") is FixtureRaiser  # by entry-point name
    assert {"FixtureProducer", "FixtureConsumer", "FixtureRaiser"} <= set(dir(finetuner.callback))


def test_list_callbacks_has_the_fixtures_and_not_the_broken_one():
    found = finetuner.list_callbacks()
    assert found["FixtureProducer"] is FixtureProducer
    assert found["FixtureConsumer"] is FixtureConsumer
    assert found["FixtureRaiser"] is FixtureRaiser
    assert "DoesNotExist" not in found
    assert all(isinstance(cls, type) for cls in found.values())


# --- the documented hook order ------------------------------------------------------------------


def _documented_first_appearance() -> list[str]:
    """Hook names in the order the ``Order.`` block of hookspecs' docstring first names them."""
    doc = hookspecs.__doc__ or ""
    block = doc[doc.index("Order.") : doc.index("Within one hook")]
    return list(dict.fromkeys(re.findall(r"finetuner_\w+", block)))


def test_hook_order_is_the_documented_one(tmp_path):
    producer, consumer = FixtureProducer([0.3, 0.4, 0.5, 0.6]), FixtureConsumer()
    result = run_recorded_fit(
        tmp_path,
        callbacks=[consumer, producer],
        epochs=2,
        eval_data=make_tiny_data(seed=5),
    )
    recorder = result.recorder
    names = _hooks(recorder)
    steps = recorder.getcalls("finetuner_on_fit_begin")[0].event.steps_per_epoch
    assert steps >= 2
    per_epoch = [
        "finetuner_on_epoch_begin",
        *["finetuner_on_train_batch_begin", "finetuner_on_train_batch_end"] * steps,
        "finetuner_on_train_epoch_end",
        "finetuner_on_validation_end",
        "finetuner_evaluate",
        "finetuner_on_metrics",
        "finetuner_on_epoch_end",
    ]
    expected = [
        "finetuner_configure",
        "finetuner_on_fit_begin",
        "finetuner_evaluate",
        "finetuner_on_metrics",
        *per_epoch,
        *per_epoch,
        "finetuner_on_train_end",
        "finetuner_evaluate",
        "finetuner_on_metrics",
        "finetuner_on_fit_end",
    ]
    assert names == expected

    # The sequence is the one hookspecs.py documents, and every hook it runs is declared there.
    documented = _documented_first_appearance()
    assert set(names) <= set(hook_names())
    assert list(dict.fromkeys(names)) == [n for n in documented if n in set(names)]

    stages = [(c.event.stage, c.event.epoch) for c in recorder.getcalls("finetuner_on_metrics")]
    assert stages == [("before", -1), ("epoch", 0), ("epoch", 1), ("after", 1)]
    evaluated = [(c.event.stage, c.event.epoch) for c in recorder.getcalls("finetuner_evaluate")]
    assert evaluated == stages

    # The always-on module plugin took part in that order through its own entry point.
    assert always.CALLS == [n for n in expected if n in ALWAYS_HOOKS]
    assert recorder.calls_to("fixture-always") == always.CALLS
    assert recorder.calls_to("FixtureProducer") == ["finetuner_evaluate"] * 4
    assert _only_run(tmp_path).status()["status"] == "FINISHED"


# --- the ordering guarantee -----------------------------------------------------------------------


@pytest.mark.parametrize("consumer_first", [True, False], ids=["consumer-first", "reversed"])
def test_consumer_always_sees_same_epoch_results_and_stops_at_the_same_epoch(
    tmp_path, consumer_first
):
    producer = FixtureProducer(scores=[0.9, 0.8, 0.2, 0.1])
    consumer = FixtureConsumer(monitor=FIXTURE_KEY, stop_when_below=0.5)
    callbacks = [consumer, producer] if consumer_first else [producer, consumer]
    result = run_recorded_fit(tmp_path, callbacks=callbacks, epochs=4)
    run = result.run

    # Every publish the consumer saw held the producer's result of that very evaluation.
    assert consumer.present == [True] * len(consumer.seen)
    assert [(stage, epoch) for stage, epoch, _ in consumer.seen] == [
        (stage, epoch) for stage, epoch, _ in producer.produced
    ]
    for (stage, epoch, metrics), (_, _, value) in zip(consumer.seen, producer.produced):
        assert metrics[FIXTURE_KEY] == value, (stage, epoch)
    recorded = {(r["stage"], r["epoch"]): r["metrics"] for r in run.metric_history()}
    for stage, epoch, metrics in consumer.seen:
        assert recorded[(stage, epoch)] == metrics

    # before=0.9, epoch 0=0.8, epoch 1=0.2 < 0.5: the stop lands after epoch 1 in both orders.
    assert consumer.stopped_at == 1
    epochs_run = [r for r in run.metric_history() if r["stage"] == "epoch"]
    assert [r["epoch"] for r in epochs_run] == [0, 1]
    assert [r["metrics"][FIXTURE_KEY] for r in epochs_run] == [0.8, 0.2]
    assert result.recorder.names().count("finetuner_on_epoch_begin") == 2
    end = result.recorder.getcalls("finetuner_on_train_end")[0].event
    assert end.stopped_early and end.epochs_completed == 2
    assert "fell below 0.5 at epoch 1" in end.stop_reason
    assert run.status()["status"] == "FINISHED" and run.status()["epochs_completed"] == 2
    assert run.metrics()["after"][FIXTURE_KEY] == 0.1


# --- fail-fast monitors ---------------------------------------------------------------------------


def test_monitor_without_producer_fails_before_any_step(tmp_path):
    recorder = HookRecorder()
    with pytest.raises(ConfigError) as info:
        run_recorded_fit(
            tmp_path,
            callbacks=[FixtureProducer(), FixtureConsumer(monitor="no_such_metric")],
            recorder=recorder,
        )
    message = str(info.value)
    assert "FixtureConsumer" in message
    assert "'no_such_metric'" in message
    assert re.search(r"Available keys: .*fixture_score", message)
    assert "train_loss" in message
    names = _hooks(recorder)
    assert names[0] == "finetuner_configure" and names[-1] == "finetuner_on_exception"
    assert "finetuner_on_train_batch_begin" not in names
    assert "finetuner_on_fit_begin" not in names and "finetuner_evaluate" not in names
    assert always.CALLS == []
    status = _only_run(tmp_path).status()
    assert status["status"] == "FAILED"
    assert "no_such_metric" in status["reason"]


# --- switching plugins off -------------------------------------------------------------------------


def test_disable_plugins_keeps_one_always_on_plugin_out(tmp_path, monkeypatch, capsys):
    # Control: installed and not blocked, the always-on plugin runs in every fit.
    first = run_recorded_fit(tmp_path / "on", epochs=1)
    assert always.CALLS and first.recorder.calls_to("fixture-always") == always.CALLS
    always.CALLS.clear()

    monkeypatch.setenv("FINETUNER_DISABLE_PLUGINS", "fixture-always")
    second = run_recorded_fit(tmp_path / "off", epochs=1)
    assert always.CALLS == []
    assert second.recorder.calls_to("fixture-always") == []
    assert "finetuner_on_fit_end" in second.recorder.calls_to("console")
    assert second.run.status()["status"] == "FINISHED"
    assert "plugin 'fixture-always' skipped: blocked" in second.run.logs()

    rows = _plugin_rows(capsys)
    assert rows["fixture-always"]["status"] == "disabled"
    assert rows["console"]["status"] == "ok"


def test_disable_autoload_keeps_every_always_on_plugin_out(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNER_DISABLE_PLUGIN_AUTOLOAD", "1")
    consumer = FixtureConsumer()
    result = run_recorded_fit(tmp_path, callbacks=[FixtureProducer(), consumer], epochs=1)
    everyone = {plugin for call in result.recorder.calls for plugin in call.plugins}
    assert {"console", "fixture-always", "fixture-broken"}.isdisjoint(everyone)
    assert {"FixtureProducer", "FixtureConsumer"} <= everyone  # callbacks still run
    assert always.CALLS == []
    assert len(consumer.seen) == 3  # before, epoch 0, after


@pytest.mark.parametrize("blocked", ["fixture-consumer", "FixtureConsumer"])
def test_disable_plugins_skips_a_callback_by_name(tmp_path, monkeypatch, blocked):
    monkeypatch.setenv("FINETUNER_DISABLE_PLUGINS", f"something-else, {blocked}")
    # Its monitor has no producer: had it been registered, the fit would fail before training.
    consumer = FixtureConsumer(monitor="no_such_metric")
    result = run_recorded_fit(tmp_path, callbacks=[FixtureProducer(), consumer], epochs=1)
    assert consumer.seen == []
    assert all("FixtureConsumer" not in call.plugins for call in result.recorder.calls)
    assert result.recorder.calls_to("FixtureProducer") == ["finetuner_evaluate"] * 3
    assert result.run.status()["status"] == "FINISHED"
    assert "plugin 'FixtureConsumer' skipped: blocked" in result.run.logs()


# --- broken entry points ----------------------------------------------------------------------------


def test_broken_always_on_plugin_warns_and_the_fit_finishes(tmp_path, monkeypatch, capsys):
    # Entry points load once per process and the warning comes with that first load; start
    # from an empty load cache, as a fresh process would.
    monkeypatch.setattr(finetuner.plugins.discovery, "_loaded", {})
    with pytest.warns(PluginWarning) as record:
        result = run_recorded_fit(tmp_path, callbacks=[FixtureProducer()], epochs=1)
    messages = [str(w.message) for w in record if issubclass(w.category, PluginWarning)]
    assert any(
        "'fixture-broken'" in m and "fixture: deliberately broken" in m and BROKEN_DIST in m
        for m in messages
    ), messages
    assert result.run.status()["status"] == "FINISHED"
    assert "plugin 'fixture-broken' skipped: broken" in result.run.logs()
    assert all("fixture-broken" not in call.plugins for call in result.recorder.calls)
    assert always.CALLS  # the healthy always-on plugin of the other distribution still ran

    rows = _plugin_rows(capsys)
    assert rows["fixture-broken"]["status"] == "broken"
    assert "fixture: deliberately broken" in rows["fixture-broken"]["error"]


def test_using_a_broken_callback_is_a_clear_error():
    with pytest.raises(PluginError, match="installed but broken") as info:
        finetuner.callback.DoesNotExist  # noqa: B018
    assert "fixture-broken-callback" in str(info.value) and PLUGIN_DIST in str(info.value)
    assert info.value.plugin == "fixture-broken-callback"
    with pytest.raises(PluginError, match="broken: AttributeError"):
        resolve_callback_class("fixture-broken-callback")


# --- an exception inside a hook ---------------------------------------------------------------------


@pytest.mark.parametrize("hook", ["finetuner_on_epoch_end", "finetuner_evaluate"])
def test_exception_in_a_hook_fails_the_run_naming_plugin_and_hook(tmp_path, hook):
    recorder = HookRecorder()
    with pytest.raises(RuntimeError, match="fixture failure") as info:
        run_recorded_fit(
            tmp_path, callbacks=[FixtureRaiser(hook=hook)], recorder=recorder, epochs=2
        )
    assert "raised by plugin 'FixtureRaiser' in " + hook in "".join(
        getattr(info.value, "__notes__", [])
    )
    status = _only_run(tmp_path).status()
    assert status["status"] == "FAILED"
    assert "fixture failure" in status["reason"]
    assert status["plugin"] == "FixtureRaiser"
    assert status["hook"] == hook
    # The raiser was registered under that name and ran in that hook, which was the last one
    # before the failure was reported.
    names = _hooks(recorder)
    assert names[-2:] == [hook, "finetuner_on_exception"]
    assert "FixtureRaiser" in recorder.getcalls(hook)[-1].plugins
    failure = recorder.getcalls("finetuner_on_exception")[0].event
    assert (failure.plugin, failure.hook) == ("FixtureRaiser", hook)
    assert "finetuner_on_fit_end" not in names and "finetuner_on_fit_end" not in always.CALLS


# --- a run reopened from another process -------------------------------------------------------------


def test_run_reopened_in_another_process_matches(tmp_path):
    runs_dir = tmp_path / "runs"
    done = run_recorded_fit(
        runs_dir,
        callbacks=[FixtureProducer([0.2, 0.6, 0.4]), FixtureConsumer()],
        epochs=2,
        run_name="done",
    ).run
    with pytest.raises(RuntimeError, match="fixture failure"):
        run_recorded_fit(runs_dir, callbacks=[FixtureRaiser()], epochs=2, run_name="failed")
    failed = finetuner.get_run("failed", runs_dir=runs_dir)

    script = textwrap.dedent(
        """
        import json, sys
        import finetuner
        out = {}
        for name in sys.argv[2:]:
            run = finetuner.get_run(name, runs_dir=sys.argv[1])
            out[name] = {
                "status": run.status(),
                "metrics": run.metrics(),
                "history": run.metric_history(),
            }
        print(json.dumps(out))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(runs_dir), "done", "failed"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    other = json.loads(proc.stdout)

    for run in (done, failed):
        assert other[run.name]["status"] == run.status()
        assert other[run.name]["metrics"] == run.metrics()
        assert other[run.name]["history"] == run.metric_history()
    assert other["done"]["status"]["status"] == "FINISHED"
    assert other["done"]["metrics"]["before"][FIXTURE_KEY] == 0.2
    assert other["done"]["metrics"]["after"][FIXTURE_KEY] == 0.4
    assert other["failed"]["status"]["status"] == "FAILED"
    assert other["failed"]["status"]["plugin"] == "FixtureRaiser"
    assert other["failed"]["status"]["hook"] == "finetuner_on_epoch_end"


# --- a plugin's command-line command ---------------------------------------------------------------


def test_plugin_cli_command_runs(monkeypatch):
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("FINETUNER_DISABLE_PLUGINS", "FINETUNER_DISABLE_PLUGIN_AUTOLOAD")
    }
    proc = subprocess.run(
        [sys.executable, "-m", "finetuner", "fixture-hello"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == always.HELLO

    # The command comes from the plugin: blocked, the plugin adds nothing.
    monkeypatch.setenv("FINETUNER_DISABLE_PLUGINS", "fixture-always")
    with pytest.raises(SystemExit) as info:
        main(["fixture-hello"])
    assert info.value.code == 2


def test_a_third_party_backbone_trains_and_round_trips(tmp_path):
    names = [row["name"] for row in finetuner.describe_models(print_table=False)]
    assert "fixture-trigrams" in names
    texts = ["red apple", "green apple", "red car", "blue car", "apple pie", "fast car"]
    data = [(t, "apple" if "apple" in t else "car") for t in texts]
    run = finetuner.fit(
        "fixture-trigrams",
        data,
        model_options={"dim": 8, "salt": "xyz"},
        epochs=1,
        batch_size=4,
        seed=0,
        runs_dir=tmp_path,
    )
    files = run.artifact_path / "models" / "model" / "preprocessor" / "salt.txt"
    assert files.read_text() == "xyz"
    model = finetuner.get_model(run.artifact_path)
    assert model.modality == "text"
    vectors = finetuner.encode(model, texts)
    assert vectors.shape == (6, 8)
