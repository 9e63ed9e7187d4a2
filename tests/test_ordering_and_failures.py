"""The hook sequence, the ordering guarantee, fail-fast monitors and failures inside hooks,
with callbacks defined in the test (the entry-point versions are in test_entry_points.py)."""

from __future__ import annotations

import pytest

import finetuner
from finetuner.callback import Callback
from finetuner.errors import ConfigError
from finetuner.testing import HookRecorder, run_recorded_fit


class Producer(Callback):
    def __init__(self, scores):
        self.scores = list(scores)
        self.calls = 0
        self.produced = []

    def provided_metrics(self, ctx):
        return ["probe_score"]

    def finetuner_evaluate(self, event):
        value = self.scores[min(self.calls, len(self.scores) - 1)]
        self.calls += 1
        self.produced.append((event.stage, event.epoch, value))
        return {"probe_score": value}


class Consumer(Callback):
    def __init__(self, monitor="probe_score", stop_below=None):
        self.monitor = monitor
        self.stop_below = stop_below
        self.seen = []

    def monitored_metrics(self, ctx):
        return [self.monitor]

    def finetuner_on_fit_begin(self, ctx):
        self.key = ctx.resolve_metric(self.monitor)

    def finetuner_on_metrics(self, ctx, event):
        self.seen.append((event.stage, event.epoch, dict(event.metrics)))
        value = event.metrics[self.key]  # KeyError here would break the guarantee
        if event.stage == "epoch" and self.stop_below is not None and value < self.stop_below:
            ctx.control.request_stop(f"{self.key} fell below {self.stop_below}")


@pytest.mark.parametrize("consumer_first", [True, False])
def test_consumers_always_see_same_epoch_producer_results(tmp_path, consumer_first):
    producer = Producer([0.9, 0.8, 0.7, 0.2, 0.1, 0.05])
    consumer = Consumer(stop_below=0.5)
    callbacks = [consumer, producer] if consumer_first else [producer, consumer]
    result = run_recorded_fit(tmp_path, callbacks=callbacks, epochs=5)
    produced = {(stage, epoch): value for stage, epoch, value in producer.produced}
    assert len(consumer.seen) == len(producer.produced)
    for stage, epoch, metrics in consumer.seen:
        assert metrics["probe_score"] == produced[(stage, epoch)]
    epochs_run = [r for r in result.run.metric_history() if r["stage"] == "epoch"]
    assert len(epochs_run) == 3  # 0.8, 0.7, then 0.2 < 0.5 stops after the third epoch
    end = result.recorder.getcalls("finetuner_on_train_end")[0].event
    assert end.stopped_early and "fell below" in end.stop_reason


def test_documented_hook_order(tmp_path):
    from finetuner.testing import make_tiny_data

    result = run_recorded_fit(tmp_path, epochs=2, eval_data=make_tiny_data(seed=5), batch_size=20)
    names = [n for n in result.recorder.names() if n != "finetuner_on_log"]
    steps = result.recorder.getcalls("finetuner_on_fit_begin")[0].event.steps_per_epoch
    assert steps == 3  # 40 items, 16 per class-balanced batch
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
    stages = [c.event.stage for c in result.recorder.getcalls("finetuner_on_metrics")]
    assert stages == ["before", "epoch", "epoch", "after"]


def test_step_evaluation_on_request(tmp_path):
    class EveryTwoSteps(Producer):
        def finetuner_on_train_batch_end(self, ctx, event):
            if event.step % 2 == 0:
                ctx.control.request_evaluation()

    producer = EveryTwoSteps([0.5])
    result = run_recorded_fit(tmp_path, callbacks=[producer], epochs=1, batch_size=8)  # 5 steps
    stages = [c.event.stage for c in result.recorder.getcalls("finetuner_on_metrics")]
    assert stages == ["before", "step", "step", "epoch", "after"]


def test_monitor_nothing_provides_fails_before_training(tmp_path):
    recorder = HookRecorder()
    with pytest.raises(ConfigError) as info:
        run_recorded_fit(
            tmp_path, callbacks=[Consumer(monitor="no_such_metric")], recorder=recorder
        )
    message = str(info.value)
    assert "Consumer monitors 'no_such_metric', which nothing provides" in message
    assert "Available keys: train_loss" in message
    assert "finetuner_on_train_batch_begin" not in recorder.names()
    (run,) = finetuner.list_runs(runs_dir=tmp_path)
    assert run.status()["status"] == "FAILED"


def test_val_loss_monitor_without_eval_data(tmp_path):
    with pytest.raises(ConfigError, match="val_loss needs eval_data or val_split"):
        run_recorded_fit(tmp_path, callbacks=[Consumer(monitor="val_loss")])


def test_bare_metric_name_resolves_to_the_one_producer(tmp_path):
    class Prefixed(Producer):
        def provided_metrics(self, ctx):
            return ["mlp_precision_at_k"]

        def finetuner_evaluate(self, event):
            return {"mlp_precision_at_k": 0.5}

    consumer = Consumer(monitor="precision_at_k")
    run_recorded_fit(tmp_path, callbacks=[consumer, Prefixed([0.5])], epochs=1)
    assert consumer.key == "mlp_precision_at_k"


def test_undeclared_metric_is_an_error(tmp_path):
    class Sneaky(Producer):
        def finetuner_evaluate(self, event):
            return {"probe_score": 1.0, "surprise": 2.0}

    with pytest.raises(finetuner.PluginError, match="'surprise', which no plugin declared"):
        run_recorded_fit(tmp_path, callbacks=[Sneaky([1.0])])


@pytest.mark.parametrize(
    "hook", ["finetuner_on_epoch_end", "finetuner_evaluate", "finetuner_on_fit_begin"]
)
def test_exception_in_a_hook_marks_the_run_failed_with_the_plugin(tmp_path, hook):
    class Exploder(Callback):
        plugin_name = "exploder"

    def boom(self, ctx, event):
        raise RuntimeError("kaboom")

    setattr(Exploder, hook, boom)
    with pytest.raises(RuntimeError, match="kaboom") as info:
        run_recorded_fit(tmp_path, callbacks=[Exploder()])
    (run,) = finetuner.list_runs(runs_dir=tmp_path)
    status = run.status()
    assert status["status"] == "FAILED"
    assert status["reason"] == "RuntimeError: kaboom"
    assert status["plugin"] == "exploder" and status["hook"] == hook
    assert "raised by plugin 'exploder'" in "".join(getattr(info.value, "__notes__", []))


def test_two_instances_of_one_class_are_told_apart(tmp_path):
    class Picky(Callback):
        def __init__(self, fail):
            self.fail = fail

        def finetuner_on_epoch_end(self, event):
            if self.fail:
                raise ValueError("this one")

    with pytest.raises(ValueError):
        run_recorded_fit(tmp_path, callbacks=[Picky(False), Picky(True)])
    (run,) = finetuner.list_runs(runs_dir=tmp_path)
    assert run.status()["plugin"] == "Picky-2"


def test_on_exception_hook_sees_the_failure(tmp_path):
    seen = []

    class Watcher(Callback):
        def finetuner_on_exception(self, event):
            seen.append((type(event.exception).__name__, event.plugin, event.phase))

    class Breaker(Callback):
        def finetuner_on_train_epoch_end(self, event):
            raise KeyError("x")

    with pytest.raises(KeyError):
        run_recorded_fit(tmp_path, callbacks=[Watcher(), Breaker()])
    assert seen == [("KeyError", "Breaker", "train")]


def test_a_misspelt_hook_is_reported(tmp_path):
    class Typo(Callback):
        def finetuner_on_epoch_ends(self, event):
            pass

    with pytest.raises(
        finetuner.PluginError,
        match=r"'finetuner_on_epoch_ends', which is not a finetuner hook\. Did you mean 'finetuner_on_epoch_end'",
    ):
        run_recorded_fit(tmp_path, callbacks=[Typo()])


def test_plugins_do_not_share_state_between_runs(tmp_path):
    first = run_recorded_fit(tmp_path / "a", epochs=1)
    second = run_recorded_fit(tmp_path / "b", epochs=1)
    one = first.recorder.getcalls("finetuner_on_fit_begin")[0].plugins
    two = second.recorder.getcalls("finetuner_on_fit_begin")[0].plugins
    assert "console" in one and "console" in two
    assert first.run.path != second.run.path


def test_one_function_serving_two_hooks_names_the_right_one(tmp_path):
    class Shared(Callback):
        def _both(self, ctx, event):
            if type(event).__name__ == "EpochEnded":
                raise RuntimeError("only at the end")

        finetuner_on_epoch_begin = _both
        finetuner_on_epoch_end = _both

    with pytest.raises(RuntimeError):
        run_recorded_fit(tmp_path, callbacks=[Shared()])
    (run,) = finetuner.list_runs(runs_dir=tmp_path)
    assert (run.status()["plugin"], run.status()["hook"]) == ("Shared", "finetuner_on_epoch_end")
