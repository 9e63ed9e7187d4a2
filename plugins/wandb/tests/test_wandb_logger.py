"""WandBLogger on real tiny fits, with W&B in offline mode; the run files are read back."""

from __future__ import annotations

import textwrap

import pytest
import wandb
from wandb_offline_log import offline_environment, offline_runs

import finetuner
from finetuner.callback import Callback
from finetuner.config_file import load_fit_config
from finetuner.errors import ConfigError, PluginError
from finetuner.testing import ScriptedProducer, make_tiny_data, run_recorded_fit
from finetuner_wandb import WandBLogger


@pytest.fixture(autouse=True)
def offline_wandb(tmp_path, monkeypatch):
    """W&B writes only under tmp_path and never reaches the network."""
    offline_environment(monkeypatch, tmp_path)
    # wandb reads the environment once per process, at its first init: start afresh each test
    wandb.teardown()
    yield
    wandb.teardown()


def _only_run(tmp_path):
    runs = offline_runs(tmp_path)
    assert len(runs) == 1, [r.path for r in runs]
    return runs[0]


def _stage_records(result, stage):
    return [r for r in result.run.metric_history() if r["stage"] == stage]


def test_epoch_mode_logs_losses_lrs_and_every_stage(tmp_path):
    producer = ScriptedProducer("probe_score", [0.1, 0.5, 0.7, 0.9])
    result = run_recorded_fit(
        tmp_path / "runs",
        callbacks=[WandBLogger(), producer],
        epochs=2,
        eval_data=make_tiny_data(seed=1),
        experiment_name="wandb-exp",
    )
    logged = _only_run(tmp_path)
    assert logged.exit_code == 0
    assert logged.project == "wandb-exp" and logged.name == result.run.name

    # the W&B config is the run's resolved config, this callback's options included
    config = result.run.config
    for key in ("model", "epochs", "batch_size", "learning_rate", "loss", "seed"):
        assert logged.config[key] == config[key], key
    assert {"class": "WandBLogger", "options": WandBLogger().options()} in logged.config[
        "callbacks"
    ]

    before = logged.rows_with("before/probe_score")
    assert len(before) == 1
    (record,) = _stage_records(result, "before")
    assert before[0]["before/probe_score"] == pytest.approx(0.1)
    assert before[0]["before/val_loss"] == pytest.approx(record["metrics"]["val_loss"])
    assert before[0]["global_step"] == 0 and before[0]["epoch"] == 0

    epochs = logged.rows_with("train_loss")
    records = _stage_records(result, "epoch")
    assert len(epochs) == len(records) == 2
    batch_events = [c.event for c in result.recorder.getcalls("finetuner_on_train_batch_end")]
    for row, rec in zip(epochs, records):
        for key in ("train_loss", "val_loss", "probe_score"):
            assert row[key] == pytest.approx(rec["metrics"][key]), key
        assert row["global_step"] == rec["step"] and row["epoch"] == rec["epoch"] + 1
        last_batch = next(e for e in batch_events if e.step == rec["step"])
        assert row["lr/group_0"] == pytest.approx(last_batch.learning_rates[0])
    assert [row["probe_score"] for row in epochs] == pytest.approx([0.5, 0.7])

    (after,) = logged.rows_with("after/probe_score")
    (record,) = _stage_records(result, "after")
    assert after["after/probe_score"] == pytest.approx(0.9)
    assert after["after/val_loss"] == pytest.approx(record["metrics"]["val_loss"])
    assert after["global_step"] == record["step"]

    assert not logged.rows_with("batch/train_loss")  # epoch mode: no per-batch rows
    assert logged.summary["after/probe_score"] == pytest.approx(0.9)
    assert logged.summary["before/probe_score"] == pytest.approx(0.1)
    assert wandb.run is None  # nothing is left open in the process


def test_batch_mode_logs_every_batch(tmp_path):
    result = run_recorded_fit(
        tmp_path / "runs", callbacks=[WandBLogger(metrics_logger_step="batch")], epochs=2
    )
    logged = _only_run(tmp_path)
    events = [c.event for c in result.recorder.getcalls("finetuner_on_train_batch_end")]
    rows = logged.rows_with("batch/train_loss")
    assert len(rows) == len(events) > 2
    for row, event in zip(rows, events):
        assert row["batch/train_loss"] == pytest.approx(event.loss)
        assert row["lr/group_0"] == pytest.approx(event.learning_rates[0])
        assert row["global_step"] == event.step and row["epoch"] == event.epoch + 1
        assert row["batch/grad_norm"] == pytest.approx(event.grad_norm)
    # the epoch rows still carry train_loss; the learning rate is in the batch rows only
    epoch_rows = logged.rows_with("train_loss")
    assert len(epoch_rows) == 2
    assert all("lr/group_0" not in row for row in epoch_rows)
    # no eval_data: no val_loss anywhere
    assert not any("val_loss" in key for key in logged.keys())


def test_mid_epoch_evaluations_and_no_zero_shot(tmp_path):
    class EvaluateAtThirdBatch(Callback):
        def finetuner_on_train_batch_end(self, ctx, event):
            if event.batch_index == 2:
                ctx.control.request_evaluation()

    producer = ScriptedProducer("probe_score", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    result = run_recorded_fit(
        tmp_path / "runs",
        callbacks=[WandBLogger(log_zero_shot=False), producer, EvaluateAtThirdBatch()],
        epochs=2,
    )
    logged = _only_run(tmp_path)
    assert not any(key.startswith("before/") for key in logged.keys())
    # the step and epoch evaluations draw one curve over global_step
    history = [r for r in result.run.metric_history() if r["stage"] in ("step", "epoch")]
    rows = logged.rows_with("probe_score")
    assert [row["global_step"] for row in rows] == [r["step"] for r in history]
    assert [row["probe_score"] for row in rows] == pytest.approx([0.2, 0.3, 0.4, 0.5])
    assert len(logged.rows_with("after/probe_score")) == 1


def test_wandb_args_reach_wandb_init_and_config_is_merged(tmp_path):
    logger = WandBLogger(
        wandb_args={"project": "chosen", "tags": ["tiny"], "config": {"team": "search"}}
    )
    result = run_recorded_fit(tmp_path / "runs", callbacks=[logger], epochs=1)
    logged = _only_run(tmp_path)
    assert logged.project == "chosen" and logged.tags == ["tiny"]
    assert logged.config["team"] == "search"
    assert logged.config["model"] == result.run.config["model"] == "mlp"


def test_a_users_own_wandb_run_is_left_open(tmp_path):
    own = wandb.init(project="mine", reinit="create_new")
    try:
        run_recorded_fit(tmp_path / "runs", callbacks=[WandBLogger()], epochs=1)
        own.log({"mine": 1.0})  # still open, still writable
    finally:
        own.finish()
    runs = offline_runs(tmp_path)
    assert sorted(r.project for r in runs) == ["default", "mine"]
    assert next(r for r in runs if r.project == "mine").rows_with("mine")


class FailInSecondEpoch(Callback):
    def finetuner_on_train_batch_end(self, event):
        if event.epoch == 1 and event.batch_index == 1:
            raise RuntimeError("boom in epoch 2")


class CheckpointEveryEpoch(Callback):
    def finetuner_on_epoch_end(self, ctx):
        ctx.save_checkpoint()


def test_a_failed_fit_finishes_the_wandb_run_as_failed(tmp_path):
    with pytest.raises(RuntimeError, match="boom in epoch 2"):
        run_recorded_fit(
            tmp_path / "runs", callbacks=[WandBLogger(), FailInSecondEpoch()], epochs=3
        )
    logged = _only_run(tmp_path)
    assert logged.exit_code == 1
    assert logged.summary["failure_reason"] == "RuntimeError: boom in epoch 2"
    assert len(logged.rows_with("train_loss")) == 1  # the first epoch was logged
    assert wandb.run is None


def test_a_resumed_run_continues_the_same_wandb_run(tmp_path):
    runs_dir = tmp_path / "runs"
    with pytest.raises(RuntimeError, match="boom"):
        run_recorded_fit(
            runs_dir,
            callbacks=[WandBLogger(), CheckpointEveryEpoch(), FailInSecondEpoch()],
            epochs=3,
            run_name="resumable",
        )
    run_recorded_fit(
        runs_dir,
        callbacks=[WandBLogger(), CheckpointEveryEpoch()],
        epochs=3,
        run_name="resumable",
        resume="resumable",
    )
    first, second = offline_runs(tmp_path)
    assert first.exit_code == 1 and second.exit_code == 0
    assert second.run_id == first.run_id  # W&B joins both parts when they are synced
    assert [row["epoch"] for row in first.rows_with("train_loss")] == [1]
    assert [row["epoch"] for row in second.rows_with("train_loss")] == [2, 3]


def test_entry_point_and_config_file_form(tmp_path):
    assert finetuner.callback.WandBLogger is WandBLogger
    path = tmp_path / "config.yml"
    path.write_text(
        textwrap.dedent(
            """\
            model: mlp
            train_data: digits-train
            callbacks:
              - name: wandb
                metrics_logger_step: batch
                wandb_args: {project: from-file}
            """
        )
    )
    (logger,) = load_fit_config(path).callbacks
    assert isinstance(logger, WandBLogger)
    assert logger.metrics_logger_step == "batch"
    assert logger.wandb_args == {"project": "from-file"}


# --- bad options: one clear error each -----------------------------------------------------


def test_unknown_metrics_logger_step_names_the_allowed_values():
    with pytest.raises(
        ConfigError,
        match=r"metrics_logger_step must be 'epoch' or 'batch', not 'batches'\. Did you mean 'batch'\?",
    ):
        WandBLogger(metrics_logger_step="batches")


def test_wandb_args_must_be_a_dict():
    with pytest.raises(ConfigError, match=r"wandb_args must be a dict .*got list"):
        WandBLogger(wandb_args=["project", "x"])


def test_wandb_args_config_must_be_a_dict():
    with pytest.raises(ConfigError, match=r"wandb_args\['config'\] must be a dict"):
        WandBLogger(wandb_args={"config": "params.yaml"})


def test_log_zero_shot_must_be_a_bool():
    with pytest.raises(ConfigError, match=r"log_zero_shot must be True or False, not 'yes'"):
        WandBLogger(log_zero_shot="yes")


def test_unknown_wandb_init_argument_fails_before_training(tmp_path):
    with pytest.raises(
        ConfigError, match=r"wandb_args has 'projet', which wandb\.init .*Did you mean 'project'"
    ) as info:
        run_recorded_fit(
            tmp_path / "runs", callbacks=[WandBLogger(wandb_args={"projet": "x"})], epochs=1
        )
    assert not isinstance(info.value, PluginError)
    assert offline_runs(tmp_path) == []  # no W&B run was started


def test_bad_option_in_a_config_file_points_at_the_line(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text(
        "model: mlp\ntrain_data: digits-train\ncallbacks:\n"
        "  - {name: wandb, metrics_logger_step: step}\n"
    )
    with pytest.raises(ConfigError, match=r"config\.yml:4: callback 'wandb': .*'epoch' or 'batch'"):
        load_fit_config(path)
