from __future__ import annotations

import pytest

import finetuner
from finetuner.errors import ConfigError, TrainingDivergedError
from finetuner.testing import ScriptedProducer, make_tiny_data, run_recorded_fit
from finetuner_early_stopping import EarlyStopping


def _epochs_run(result):
    return len([r for r in result.run.metric_history() if r["stage"] == "epoch"])


@pytest.mark.parametrize("stopper_first", [True, False])
def test_stops_at_the_right_epoch_in_either_order(tmp_path, stopper_first):
    # before, then epochs 1..: best at epoch 2 (0.6), then two epochs without improvement
    producer = ScriptedProducer("probe_score", [0.1, 0.5, 0.6, 0.55, 0.58, 0.9, 0.95])
    stopper = EarlyStopping(monitor="probe_score", patience=2)
    callbacks = [stopper, producer] if stopper_first else [producer, stopper]
    result = run_recorded_fit(tmp_path, callbacks=callbacks, epochs=6)
    assert _epochs_run(result) == 4
    end = result.recorder.getcalls("finetuner_on_train_end")[0].event
    assert end.stopped_early and end.epochs_completed == 4
    assert (
        "'probe_score' did not improve on the best value 0.60000 for 2 epoch(s)" in end.stop_reason
    )
    log = result.run.log_path.read_text()
    assert "EarlyStopping: 'probe_score' did not improve" in log


def test_min_mode_for_losses_and_min_delta(tmp_path):
    producer = ScriptedProducer("probe_loss", [9.0, 1.0, 0.95, 0.94, 0.5])
    stopper = EarlyStopping(monitor="probe_loss", patience=1, min_delta=0.1)
    result = run_recorded_fit(tmp_path, callbacks=[stopper, producer], epochs=4)
    # 1.0 sets the best; 0.95 is not 0.1 better: stop after epoch 2
    assert _epochs_run(result) == 2


def test_baseline_must_be_beaten(tmp_path):
    producer = ScriptedProducer("probe_score", [0.0, 0.3, 0.4, 0.45, 0.9])
    stopper = EarlyStopping(monitor="probe_score", patience=3, baseline=0.5)
    result = run_recorded_fit(tmp_path, callbacks=[stopper, producer], epochs=6)
    assert _epochs_run(result) == 3
    end = result.recorder.getcalls("finetuner_on_train_end")[0].event
    assert "did not improve on the baseline 0.50000" in end.stop_reason


def test_baseline_is_not_reset_after_it_was_beaten(tmp_path):
    # the classic callback reset the best to the baseline at every check; here a value that
    # beats the baseline becomes the best to beat
    producer = ScriptedProducer("probe_score", [0.0, 0.8, 0.6, 0.7, 0.9])
    stopper = EarlyStopping(monitor="probe_score", patience=2, baseline=0.5)
    result = run_recorded_fit(tmp_path, callbacks=[stopper, producer], epochs=6)
    assert _epochs_run(result) == 3


def test_runs_to_the_end_while_improving(tmp_path):
    producer = ScriptedProducer("probe_score", [0.1, 0.2, 0.3, 0.4])
    result = run_recorded_fit(
        tmp_path, callbacks=[EarlyStopping(monitor="probe_score", patience=0), producer], epochs=3
    )
    assert _epochs_run(result) == 3
    assert not result.recorder.getcalls("finetuner_on_train_end")[0].event.stopped_early


def test_val_loss_with_eval_data(tmp_path):
    result = run_recorded_fit(
        tmp_path,
        callbacks=[EarlyStopping(patience=0)],
        epochs=8,
        eval_data=make_tiny_data(seed=4),
        loss="SupConLoss",
    )
    assert 1 <= _epochs_run(result) <= 8


def test_a_monitor_nothing_provides_fails_before_training(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"EarlyStopping monitors 'precision_at_k', which nothing provides\. Available keys: train_loss",
    ):
        run_recorded_fit(tmp_path, callbacks=[EarlyStopping(monitor="precision_at_k")])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "maximum"}, r"unknown mode 'maximum'; use one of auto, min, max"),
        ({"patience": -1}, r"patience must be a non-negative integer, not -1"),
        ({"patience": 1.5}, r"patience must be a non-negative integer"),
        ({"min_delta": -0.1}, r"min_delta must be a non-negative number"),
        ({"monitor": ""}, r"monitor must be a metric key"),
        ({"baseline": "high"}, r"baseline must be a number or None"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ConfigError, match=message):
        EarlyStopping(**options)


def test_found_through_its_entry_point():
    assert finetuner.callback.EarlyStopping is EarlyStopping


def test_state_round_trip():
    stopper = EarlyStopping()
    stopper.load_state_dict({"best": 0.25, "wait": 1, "stopped_epoch": None})
    assert stopper.state_dict() == {"best": 0.25, "wait": 1, "stopped_epoch": None}


def test_a_nan_value_fails_the_fit_before_early_stopping_sees_it(tmp_path):
    # A metric that becomes NaN is a fit that diverged: the run fails, naming the metric.
    producer = ScriptedProducer("probe_score", [0.0, float("nan"), float("nan")])
    with pytest.raises(TrainingDivergedError, match=r"probe_score=nan at epoch 1"):
        run_recorded_fit(
            tmp_path,
            callbacks=[EarlyStopping(monitor="probe_score", patience=1), producer],
            epochs=3,
        )
