"""FitConfig is the one source of the fit options: the fit signature, the resume rule, the
recorded config and the documentation table all agree with it."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import finetuner
from finetuner.config import (
    FIT_OPTIONS,
    FitConfig,
    option_rows,
    recorded_options,
    resume_checked_options,
    validate_fit_options,
)
from finetuner.errors import ConfigError

DOCS = Path(__file__).parent.parent / "docs"


def _fit_parameters() -> dict[str, inspect.Parameter]:
    parameters = dict(inspect.signature(finetuner.fit).parameters)
    parameters.pop("resume")  # how to start, not an option of the fit
    return parameters


def test_the_fit_signature_has_exactly_the_options_in_their_order():
    assert tuple(_fit_parameters()) == FIT_OPTIONS


def test_the_fit_signature_has_the_options_defaults():
    for name, parameter in _fit_parameters().items():
        field = FitConfig.model_fields[name]
        if field.is_required():
            assert parameter.default is inspect.Parameter.empty, name
            continue
        default = field.get_default(call_default_factory=True)
        if parameter.default is None and default in ({}, []):
            continue  # None stands for an empty mapping or list
        assert parameter.default == default, name


def test_none_means_empty_for_mappings_and_lists():
    config = validate_fit_options(
        {"model": "mlp", "train_data": "digits-train", "model_options": None, "callbacks": None}
    )
    assert config.model_options == {} and config.callbacks == []


def test_an_unknown_option_gets_close_matches():
    with pytest.raises(ConfigError, match=r"option 'batch_sise': unknown option\. Did you mean"):
        validate_fit_options({"model": "mlp", "train_data": "digits-train", "batch_sise": 4})


def test_what_a_resumed_run_must_keep():
    kept = resume_checked_options()
    # every recorded option that shapes training, not only the few once listed
    for name in ("model", "loss", "loss_options", "optimizer_options", "batch_size", "seed"):
        assert name in kept
    for name in ("epochs", "callbacks", "device", "num_workers", "run_name", "description"):
        assert name not in kept  # they may change on resume
    assert "train_data" not in kept and "eval_data" not in kept  # compared by fingerprint
    assert "runs_dir" not in kept  # not recorded


def test_the_record_takes_resolved_values_and_leaves_out_the_store():
    config = validate_fit_options(
        {"model": "mlp", "train_data": "digits-train", "runs_dir": "/tmp/x", "eval_data": [1, 2]}
    )
    record = recorded_options(config, {"batch_size": 16})
    assert list(record) == [name for name in FIT_OPTIONS if name != "runs_dir"]
    assert record["batch_size"] == 16 and record["train_data"] == "digits-train"
    assert record["eval_data"] == {"type": "list", "size": 2}
    with pytest.raises(ValueError, match="unknown options: bogus"):
        recorded_options(config, {"bogus": 1})


def test_every_option_has_a_row_with_its_meaning_and_limits():
    rows = {row["option"]: row for row in option_rows()}
    assert tuple(rows) == FIT_OPTIONS
    assert all(row["meaning"] for row in rows.values())
    assert rows["learning_rate"]["limits"] == "> 0.0, <= 10.0, finite"
    # one rule for both: the 'lr' of the optimizer options has the limits of learning_rate
    assert rows["optimizer_options"]["limits"] == "`lr` > 0.0, <= 10.0, finite"
    assert rows["num_workers"]["limits"] == ">= 0, <= os.cpu_count()"
    assert rows["epochs"]["default"] == "`5`" and rows["model"]["default"] == "required"
    assert rows["batch_size"]["on resume"] == "must match"


def test_the_documentation_shows_the_generated_table():
    page = (DOCS / "api.md").read_text(encoding="utf-8")
    assert "```{fit-options}" in page
