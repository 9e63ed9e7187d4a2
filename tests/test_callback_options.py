"""What a run records as a callback's options: the arguments it was created with, nothing else."""

from __future__ import annotations

import inspect
import os

import pytest

import finetuner
from finetuner.callback import Callback
from finetuner.plugins import discover, first_party_callbacks
from finetuner.testing import make_tiny_data


class _Counting(Callback):
    def __init__(self, threshold: float = 0.5, names: tuple[str, ...] = ("a", "b")) -> None:
        self.threshold = threshold
        self.names = names
        self.seen = 0  # state, not an option
        self.last_loss: float | None = None  # state, not an option

    def finetuner_on_train_batch_end(self, event):
        self.seen += 1
        self.last_loss = event.loss


def _recorded(run, class_name):
    """The config record of the one callback of *class_name* in *run*."""
    (recorded,) = [c for c in run.config["callbacks"] if c["class"] == class_name]
    return recorded


def test_only_constructor_arguments_are_options():
    assert _Counting(threshold=0.7).options() == {"threshold": 0.7, "names": ["a", "b"]}


def test_a_callback_without_its_own_init_has_no_options():
    class Bare(Callback):
        def __init__(self) -> None:
            self.total = 0

    assert Bare().options() == {}


def test_the_run_records_options_not_state(finetuner_fit):
    result = finetuner_fit(callbacks=[_Counting(threshold=0.2)], epochs=1)
    recorded = _recorded(result.run, "_Counting")
    assert recorded == {"class": "_Counting", "options": {"threshold": 0.2, "names": ["a", "b"]}}


_ARGUMENTS = {"EvaluationCallback": {"query_data": make_tiny_data()}}


@pytest.mark.parametrize("name", sorted(c.class_name for c in first_party_callbacks()))
def test_first_party_callbacks_record_their_options_only(name):
    if name not in {info.class_name for info in discover().callbacks}:
        if os.environ.get("FINETUNER_REQUIRE_PLUGINS") == "1":
            pytest.fail(f"{name} is not installed")
        pytest.skip(f"{name} is not installed here")
    cls = getattr(finetuner.callback, name)
    parameters = set(inspect.signature(cls).parameters)
    callback = cls(**_ARGUMENTS.get(name, {}))
    recorded = callback.options()
    assert set(recorded) <= parameters, (
        f"{name}.options() records {sorted(set(recorded) - parameters)}, which are not options"
    )


def test_evaluation_callback_records_no_result(finetuner_fit):
    pytest.importorskip("finetuner_evaluation")
    from finetuner.callback import EvaluationCallback

    callback = EvaluationCallback(query_data=make_tiny_data(), limit=5)
    result = finetuner_fit(callbacks=[callback], epochs=1)
    assert callback.last_result is not None  # it keeps its result, but not as an option
    recorded = _recorded(result.run, "EvaluationCallback")
    assert "last_result" not in recorded["options"]
    assert recorded["options"]["limit"] == 5
    assert set(recorded["options"]) <= set(inspect.signature(EvaluationCallback).parameters)
