"""MLflowLogger on real tiny fits, against a local sqlite tracking store read back with
MlflowClient. (MLflow 3 refuses new file stores unless MLFLOW_ALLOW_FILE_STORE is set; sqlite
is its default store.)"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

import finetuner
from finetuner.callback import Callback
from finetuner.config_file import load_fit_config
from finetuner.errors import ConfigError
from finetuner.testing import ScriptedProducer, make_tiny_data, run_recorded_fit
from finetuner_mlflow import MLflowLogger, flatten_config


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    # one database for the module: creating its tables takes a couple of seconds
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture(autouse=True)
def isolated_mlflow(tmp_path, monkeypatch):
    # MLflow keeps a new experiment's artifacts in ./mlruns of the working folder
    monkeypatch.chdir(tmp_path)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)
    yield
    assert mlflow.active_run() is None  # no test leaves a fluent run behind


def _only_run(client, experiment_name):
    experiment = client.get_experiment_by_name(experiment_name)
    assert experiment is not None, f"no MLflow experiment '{experiment_name}'"
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, runs
    return runs[0]


def _history(client, run, key):
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]


def _records(result, stage):
    return [r for r in result.run.metric_history() if r["stage"] == stage]


def _artifact_files(client, run_id, path):
    files = []
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            files.extend(_artifact_files(client, run_id, info.path))
        else:
            files.append((info.path, info.file_size))
    return files


def test_a_fit_becomes_a_finished_mlflow_run(tracking_uri):
    producer = ScriptedProducer("probe_score", [0.1, 0.5, 0.7, 0.9])
    result = run_recorded_fit(
        "runs",
        callbacks=[MLflowLogger(tracking_uri=tracking_uri), producer],
        epochs=2,
        eval_data=make_tiny_data(seed=1),
        experiment_name="full-fit",
    )
    client = MlflowClient(tracking_uri)
    run = _only_run(client, "full-fit")
    assert run.info.status == "FINISHED"
    assert run.info.run_name == result.run.name
    assert run.data.tags["finetuner.run_dir"] == str(result.run.path)

    # parameters: the resolved config, flattened, as strings
    params = run.data.params
    assert params["model"] == "mlp" and params["epochs"] == "2" and params["batch_size"] == "8"
    assert params["model_options.hidden_sizes"] == "[16, 8]"
    assert params["loss_options"] == "{}" and params["eval_data.size"] == "40"
    logger_index = next(k for k, v in params.items() if v == "MLflowLogger").split(".")[1]
    assert params[f"callbacks.{logger_index}.options.tracking_uri"] == tracking_uri
    assert params[f"callbacks.{logger_index}.options.log_artifact"] == "True"

    # metrics: one point per publish, step = optimisation steps done
    epochs = _records(result, "epoch")
    steps = [r["step"] for r in epochs]
    assert steps[0] > 0
    for key in ("train_loss", "val_loss", "probe_score"):
        assert _history(client, run, key) == [
            (r["step"], pytest.approx(r["metrics"][key])) for r in epochs
        ], key
    assert _history(client, run, "epoch") == [(s, e) for s, e in zip(steps, [1, 2])]
    assert [s for s, _ in _history(client, run, "lr/group_0")] == steps
    norms = [r["grad_norm"] for r in result.run.step_history()]
    per_epoch = [norms[: len(norms) // 2], norms[len(norms) // 2 :]]
    assert _history(client, run, "grad_norm") == [
        (s, pytest.approx(sum(n) / len(n))) for s, n in zip(steps, per_epoch)
    ]
    (before,) = _records(result, "before")
    assert _history(client, run, "before/probe_score") == [(0, pytest.approx(0.1))]
    assert _history(client, run, "before/val_loss") == [
        (0, pytest.approx(before["metrics"]["val_loss"]))
    ]
    (after,) = _records(result, "after")
    assert _history(client, run, "after/probe_score") == [(after["step"], pytest.approx(0.9))]
    assert _history(client, run, "after/val_loss") == [
        (after["step"], pytest.approx(after["metrics"]["val_loss"]))
    ]
    assert "before/train_loss" not in run.data.metrics  # nothing trained yet

    # the artifact folder, file for file
    local = result.run.artifact_path
    expected = sorted(
        (os.path.join("artifact", os.path.relpath(os.path.join(d, f), local)), None)
        for d, _, files in os.walk(local)
        for f in files
    )
    logged = sorted(_artifact_files(client, run.info.run_id, "artifact"))
    assert [p for p, _ in logged] == [p for p, _ in expected]
    weights = next(p for p, _ in logged if p.endswith("model.safetensors"))
    size = dict(logged)[weights]
    assert size == (local / Path(weights).relative_to("artifact")).stat().st_size


def test_names_options_and_long_values(tracking_uri, monkeypatch):
    # MLflow would cut long values itself, with a warning; make it refuse them instead
    monkeypatch.setenv("MLFLOW_TRUNCATE_LONG_VALUES", "false")
    result = run_recorded_fit(
        "runs",
        callbacks=[
            MLflowLogger(
                tracking_uri=tracking_uri,
                experiment_name="named-exp",
                run_name="named-run",
                log_artifact=False,
            )
        ],
        epochs=1,
        description="x" * 7000,
    )
    client = MlflowClient(tracking_uri)
    run = _only_run(client, "named-exp")
    assert run.info.run_name == "named-run"
    assert run.data.tags["finetuner.run_name"] == result.run.name
    assert run.data.params["description"] == "x" * 6000  # MLflow's limit for a value
    assert client.list_artifacts(run.info.run_id) == []
    # no eval_data: no val_loss; before/ is empty without producers
    assert not [k for k in run.data.metrics if "val_loss" in k or k.startswith("before/")]
    assert [s for s, _ in _history(client, run, "train_loss")] == [
        r["step"] for r in _records(result, "epoch")
    ]


class FailInSecondEpoch(Callback):
    def finetuner_on_train_batch_end(self, event):
        if event.epoch == 1 and event.batch_index == 1:
            raise RuntimeError("boom in epoch 2")


class CheckpointEveryEpoch(Callback):
    def finetuner_on_epoch_end(self, ctx):
        ctx.save_checkpoint()


def test_a_failed_fit_ends_the_mlflow_run_as_failed(tracking_uri):
    with pytest.raises(RuntimeError, match="boom in epoch 2"):
        run_recorded_fit(
            "runs",
            callbacks=[MLflowLogger(tracking_uri=tracking_uri), FailInSecondEpoch()],
            epochs=3,
            experiment_name="failing",
        )
    client = MlflowClient(tracking_uri)
    run = _only_run(client, "failing")
    assert run.info.status == "FAILED"
    assert run.data.tags["finetuner.failure_reason"] == "RuntimeError: boom in epoch 2"
    assert len(_history(client, run, "train_loss")) == 1  # the first epoch was logged
    assert client.list_artifacts(run.info.run_id) == []


def test_a_resumed_fit_continues_its_mlflow_run(tracking_uri):
    options = {"epochs": 3, "experiment_name": "resumed", "run_name": "resumable"}
    with pytest.raises(RuntimeError, match="boom"):
        run_recorded_fit(
            "runs",
            callbacks=[
                MLflowLogger(tracking_uri=tracking_uri),
                CheckpointEveryEpoch(),
                FailInSecondEpoch(),
            ],
            **options,
        )
    client = MlflowClient(tracking_uri)
    assert _only_run(client, "resumed").info.status == "FAILED"
    result = run_recorded_fit(
        "runs",
        callbacks=[MLflowLogger(tracking_uri=tracking_uri), CheckpointEveryEpoch()],
        resume="resumable",
        **options,
    )
    run = _only_run(client, "resumed")  # the same MLflow run, finished now
    assert run.info.status == "FINISHED"
    epochs = _records(result, "epoch")
    assert len(epochs) == 3
    assert _history(client, run, "train_loss") == [
        (r["step"], pytest.approx(r["metrics"]["train_loss"])) for r in epochs
    ]
    assert [v for _, v in _history(client, run, "epoch")] == [1, 2, 3]


def test_default_tracking_uri_and_a_users_own_run(tracking_uri, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    mlflow.set_experiment("users-own")
    with mlflow.start_run() as own:
        result = run_recorded_fit("runs", callbacks=[MLflowLogger()], epochs=1)
        assert mlflow.active_run().info.run_id == own.info.run_id
        mlflow.log_metric("mine", 1.0)
    client = MlflowClient(tracking_uri)
    ours = _only_run(client, result.run.experiment_name)  # "default", as finetuner names it
    assert ours.info.run_id != own.info.run_id and ours.info.run_name == result.run.name
    mine = client.get_run(own.info.run_id)
    assert set(mine.data.metrics) == {"mine"} and mine.data.params == {}


def test_entry_point_and_config_file_form(tmp_path):
    assert finetuner.callback.MLflowLogger is MLflowLogger
    path = tmp_path / "config.yml"
    path.write_text(
        textwrap.dedent(
            """\
            model: mlp
            train_data: digits-train
            callbacks:
              - name: mlflow
                tracking_uri: sqlite:///mlflow.db
                log_artifact: false
            """
        )
    )
    (logger,) = load_fit_config(path).callbacks
    assert isinstance(logger, MLflowLogger)
    assert logger.tracking_uri == "sqlite:///mlflow.db" and logger.log_artifact is False


def test_flatten_config():
    config = {
        "a": {"b": 1, "c": {"d": None}},
        "empty": {},
        "sizes": [16, 8],
        "callbacks": [{"class": "X", "options": {"k": True}}],
        "text": "t",
    }
    assert dict(flatten_config(config)) == {
        "a.b": "1",
        "a.c.d": "None",
        "empty": "{}",
        "sizes": "[16, 8]",
        "callbacks.0.class": "X",
        "callbacks.0.options.k": "True",
        "text": "t",
    }


# --- bad options: one clear error each -----------------------------------------------------


@pytest.mark.parametrize("option", ["tracking_uri", "experiment_name", "run_name"])
def test_names_must_be_non_empty_strings(option):
    with pytest.raises(
        ConfigError, match=rf"MLflowLogger: {option} must be a non-empty string or None"
    ):
        MLflowLogger(**{option: ""})


def test_log_artifact_must_be_a_bool():
    with pytest.raises(ConfigError, match=r"log_artifact must be True or False, not 'no'"):
        MLflowLogger(log_artifact="no")


def test_an_unusable_tracking_uri_fails_before_training(tmp_path):
    with pytest.raises(
        ConfigError, match=r"MLflowLogger: cannot open the MLflow tracking store 'nosuch://x'"
    ):
        run_recorded_fit("runs", callbacks=[MLflowLogger(tracking_uri="nosuch://x")], epochs=1)
    (run,) = finetuner.list_runs(runs_dir="runs")
    assert run.status()["status"] == "FAILED" and not run.metric_history()
