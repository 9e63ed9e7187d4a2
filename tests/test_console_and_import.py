"""The console reporter, the light import, and helpful errors for missing plugins."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from rich.console import Console

import finetuner
from finetuner.plugins.console import ConsoleReporter, format_duration, format_metric_line
from finetuner.testing import make_tiny_data, run_recorded_fit


def test_summary_line_formats():
    assert format_duration(3 * 60 + 48) == "0 days, 0 hours 3 minutes and 48 seconds"
    assert format_duration(90061) == "1 days, 1 hours 1 minutes and 1 seconds"
    assert (
        format_metric_line("resnet_base_precision_at_k", 0.11575, 0.53425)
        == "Metric: 'resnet_base_precision_at_k' before fine-tuning:  0.11575 after fine-tuning: 0.53425"
    )


def _fit_with_console(tmp_path, monkeypatch, terminal):
    monkeypatch.setenv("FINETUNER_DISABLE_PLUGINS", "console")  # use our own instance instead
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=terminal, width=120, color_system=None)
    run_recorded_fit(
        tmp_path, callbacks=[ConsoleReporter(console)], epochs=2, eval_data=make_tiny_data(seed=3)
    )
    return buffer.getvalue()


def test_progress_bar_on_a_terminal(tmp_path, monkeypatch):
    out = _fit_with_console(tmp_path, monkeypatch, terminal=True)
    assert "Training [2/2]" in out and "━" in out
    assert "loss: " in out and "val_loss: " in out
    assert "Done ✨" in out and "Finished 🚀" in out


def test_no_bar_but_the_summary_off_a_terminal(tmp_path, monkeypatch):
    out = _fit_with_console(tmp_path, monkeypatch, terminal=False)
    assert "━" not in out
    lines = out.splitlines()
    assert any(line.startswith("Finetuning run '") for line in lines)
    assert [line.split(" loss")[0] for line in lines if line.startswith("Training")] == [
        "Training [1/2]",
        "Training [2/2]",
    ]
    assert "Done ✨" in lines and "Finished 🚀" in lines
    assert any(line.startswith("Finetuning took 0 days") for line in lines)
    assert any(line.startswith("Metric: 'val_loss' before fine-tuning:  ") for line in lines)
    assert any(line.startswith("Artifact saved in ") for line in lines)
    assert any(line.startswith("Artifact size is ") and line.endswith(" MB") for line in lines)


def test_plugin_log_lines_reach_the_console(tmp_path, monkeypatch):
    class Talker(finetuner.callback.Callback):
        def finetuner_on_epoch_end(self, ctx, event):
            ctx.logger.info(f"Model improved from inf to {event.epoch + 1}.000!")

    monkeypatch.setenv("FINETUNER_DISABLE_PLUGINS", "console")
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=120)
    result = run_recorded_fit(tmp_path, callbacks=[ConsoleReporter(console), Talker()], epochs=1)
    assert "Model improved from inf to 1.000!" in buffer.getvalue()
    records = [json.loads(line) for line in result.run.log_path.read_text().splitlines()]
    assert any(r["event"] == "Model improved from inf to 1.000!" for r in records)


def test_console_can_be_disabled(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FINETUNER_DISABLE_PLUGINS", "console")
    result = run_recorded_fit(tmp_path, epochs=1)
    assert "Finished" not in capsys.readouterr().out
    assert all("console" not in call.plugins for call in result.recorder.calls)


def test_autoload_can_be_disabled(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FINETUNER_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = run_recorded_fit(tmp_path, epochs=1)
    assert capsys.readouterr().out == ""
    assert all(not call.plugins for call in result.recorder.calls)


def test_import_is_light():
    code = (
        "import sys, finetuner, finetuner.callback, finetuner.hookspecs, finetuner.events\n"
        "heavy = [m for m in ('torch', 'transformers', 'torchvision', 'annoy', 'docarray') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_cli_help_is_light():
    code = (
        "import sys\nfrom finetuner.cli import build_parser\nbuild_parser().format_help()\n"
        "print(','.join(m for m in ('transformers', 'torchvision', 'annoy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


FIRST_PARTY = [
    ("EvaluationCallback", "finetuner-evaluation", "evaluation"),
    ("EarlyStopping", "finetuner-early-stopping", "early-stopping"),
    ("BestModelCheckpoint", "finetuner-best-model", "best-model"),
    ("TrainingCheckpoint", "finetuner-training-checkpoint", "training-checkpoint"),
    ("WiSEFTCallback", "finetuner-wiseft", "wiseft"),
    ("WandBLogger", "finetuner-wandb", "wandb"),
    ("MLflowLogger", "finetuner-mlflow", "mlflow"),
]


def _installed(name):
    from finetuner.plugins import discover

    return any(info.class_name == name for info in discover().callbacks)


@pytest.mark.parametrize(("name", "dist", "entry_point"), FIRST_PARTY)
def test_missing_first_party_callback_names_its_distribution(name, dist, entry_point):
    if _installed(name):
        pytest.skip(f"{dist} is installed in this environment")
    with pytest.raises(
        finetuner.PluginError,
        match=rf"{name} is provided by the distribution '{dist}'.*pip install {dist}",
    ):
        getattr(finetuner.callback, name)
    with pytest.raises(finetuner.PluginError, match=dist):
        exec(f"from finetuner.callback import {name}", {})


@pytest.mark.parametrize(("name", "dist", "entry_point"), FIRST_PARTY)
def test_missing_first_party_callback_in_a_config_file(tmp_path, name, dist, entry_point):
    from finetuner.config_file import load_fit_config

    if _installed(name):
        pytest.skip(f"{dist} is installed in this environment")
    path = tmp_path / "fit.yml"
    path.write_text(f"model: mlp\ntrain_data: digits-train\ncallbacks:\n  - name: {entry_point}\n")
    with pytest.raises(
        finetuner.PluginError,
        match=rf"fit\.yml:4: callback '{entry_point}' needs the distribution '{dist}'",
    ):
        load_fit_config(path)


def test_unknown_callback_attribute():
    with pytest.raises(
        AttributeError,
        match=r"no installed callback is named 'EarlyStoping'.*Did you mean 'EarlyStopping'",
    ):
        finetuner.callback.EarlyStoping  # noqa: B018


def test_run_reopened_in_another_process_shows_the_same_state(tmp_path):
    run = finetuner.fit(
        "mlp",
        make_tiny_data(),
        eval_data=make_tiny_data(seed=2),
        epochs=2,
        seed=0,
        runs_dir=tmp_path,
        run_name="shared",
    )
    code = (
        "import json, finetuner\n"
        f"run = finetuner.get_run('shared', runs_dir={str(tmp_path)!r})\n"
        "print(json.dumps({'status': run.status()['status'], 'metrics': run.metrics(), 'config': run.config['epochs']}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)
    assert seen == {"status": "FINISHED", "metrics": run.metrics(), "config": 2}
