"""The event types and the hook reference."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from finetuner import events, hookspecs
from finetuner.plugins import hook_names

EVENT_TYPES = [
    obj
    for name, obj in vars(events).items()
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and obj.__module__ == events.__name__
]


def test_there_are_events():
    assert {"MetricsPublished", "EpochEnded", "BatchEnded", "FitStarted"} <= {
        t.__name__ for t in EVENT_TYPES
    }


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda t: t.__name__)
def test_events_are_frozen_and_slotted(event_type):
    params = dataclasses.fields(event_type)
    values = {}
    for field in params:
        values[field.name] = 0 if field.type in ("int", "float") else None
    event = event_type(**values)
    assert hasattr(event_type, "__slots__")
    assert not hasattr(event, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(event, params[0].name, 1)


def test_metrics_in_events_are_read_only():
    published = events.MetricsPublished(
        stage="epoch", epoch=0, step=3, metrics=events.frozen_mapping({"a": 1.0})
    )
    with pytest.raises(TypeError):
        published.metrics["a"] = 2.0  # type: ignore[index]


def test_every_hook_is_documented_with_its_arguments():
    names = hook_names()
    assert names[0] == "finetuner_configure"
    for name in names:
        spec = getattr(hookspecs, name)
        doc = inspect.getdoc(spec) or ""
        assert len(doc.split()) >= 8, f"{name} needs a docstring that documents it"
        params = list(inspect.signature(spec).parameters)
        if name != "finetuner_add_commands":
            assert params == ["ctx", "event"], f"{name} must take (ctx, event)"


def test_every_hook_appears_in_the_documented_sequence():
    sequence = hookspecs.__doc__ or ""
    for name in hook_names():
        if name in ("finetuner_on_log", "finetuner_add_commands"):
            continue
        assert name in sequence, f"{name} missing from the order in hookspecs' docstring"
