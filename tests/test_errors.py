"""Bad input gets one clear error each, raised before anything trains."""

from __future__ import annotations

import pytest
import torch

import finetuner
from finetuner.errors import ConfigError, DataError
from finetuner.testing import make_tiny_data


def _fit(**options):
    defaults = dict(model="mlp", train_data=make_tiny_data(), epochs=1, batch_size=8, seed=0)
    defaults.update(options)
    return finetuner.fit(**defaults)


def _no_runs_created(tmp_path):
    root = tmp_path / "finetuner-runs"
    return not root.exists() or not any(root.rglob("status.json"))


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"model": "mpl"}, r"unknown model 'mpl'.*Did you mean 'mlp'\?"),
        (
            {"loss": "TripletMarginLos"},
            r"unknown loss 'TripletMarginLos'.*Did you mean 'TripletMarginLoss'",
        ),
        ({"loss": "tripletmarginloss"}, r"Did you mean 'TripletMarginLoss'"),
        ({"optimizer": "Adamw"}, r"unknown optimizer 'Adamw'.*Did you mean 'AdamW'"),
        ({"scheduler": "cosin"}, r"unknown scheduler 'cosin'.*Did you mean 'cosine'"),
        ({"miner": "TripletMiner"}, r"unknown miner 'TripletMiner'.*Did you mean"),
    ],
)
def test_unknown_names_suggest_close_matches(options, expected, tmp_path):
    with pytest.raises(ConfigError, match=expected):
        _fit(**options)
    assert _no_runs_created(tmp_path)


def test_empty_training_data(tmp_path):
    with pytest.raises(DataError, match="train_data is empty"):
        _fit(train_data=[])
    assert _no_runs_created(tmp_path)


def test_empty_doclist():
    with pytest.raises(DataError, match="train_data is empty"):
        _fit(train_data=finetuner.DocumentArray([]))


def test_single_class_needs_two(tmp_path):
    data = [(torch.randn(8), "only") for _ in range(10)]
    with pytest.raises(DataError, match=r"single class \('only'\).*at least two"):
        _fit(train_data=data)
    assert _no_runs_created(tmp_path)


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5])
def test_val_split_out_of_range(value):
    with pytest.raises(ConfigError, match=r"option 'val_split'.*got " + str(value)):
        _fit(val_split=value)


def test_wrong_types_are_named():
    with pytest.raises(
        ConfigError, match=r"option 'epochs': Input should be a valid integer.*got 'five'"
    ):
        _fit(epochs="five")
    with pytest.raises(ConfigError, match=r"option 'batch_size'"):
        _fit(batch_size=1)


def test_missing_labels_say_where():
    data = [(torch.randn(8), 0), (torch.randn(8), None), (torch.randn(8), 1)]
    with pytest.raises(DataError, match=r"1 item\(s\) have no label \(positions 1\)"):
        _fit(train_data=data)


def test_items_of_different_shapes():
    data = [(torch.randn(8), 0), (torch.randn(4), 1)]
    with pytest.raises(DataError, match=r"different shapes.*position 1"):
        _fit(train_data=data)


def test_not_pairs():
    with pytest.raises(DataError, match=r"train_data\[0\]: expected an \(item, label\) pair"):
        _fit(train_data=[torch.randn(8)])


def test_unknown_string_data():
    with pytest.raises(DataError, match="neither a CSV file nor a known data set"):
        _fit(train_data="no-such-data")


def test_model_class_instead_of_instance():
    with pytest.raises(ConfigError, match="pass an instance"):
        _fit(model=torch.nn.Linear)


def test_model_that_does_not_fit_the_data():
    with pytest.raises(ConfigError, match=r"the model failed on a batch of train_data"):
        _fit(model=torch.nn.Linear(3, 2))


def test_bad_loss_option_lists_accepted_options():
    with pytest.raises(
        ConfigError,
        match=r"loss_options: TripletMarginLoss has no option 'margn'.*Did you mean 'margin'",
    ):
        _fit(loss_options={"margn": 0.1})


def test_bad_model_option():
    with pytest.raises(
        ConfigError, match=r"'mlp' has no option 'hiden_sizes'.*Did you mean 'hidden_sizes'"
    ):
        _fit(model_options={"hiden_sizes": [4]})


def test_callback_class_instead_of_instance():
    with pytest.raises(
        ConfigError, match=r"callbacks\[0\] is the class Callback; pass an instance"
    ):
        _fit(callbacks=[finetuner.callback.Callback])


def test_request_stop_needs_a_reason():
    from finetuner.context import Control

    with pytest.raises(ConfigError, match="needs a reason"):
        Control().request_stop("")


def test_unknown_run_lists_close_matches():
    _fit(run_name="brave-heron")
    with pytest.raises(finetuner.RunNotFoundError, match="brave-heron"):
        finetuner.get_run("brave-heron-2")


def test_duplicate_run_name():
    _fit(run_name="twice")
    with pytest.raises(ConfigError, match="already exists"):
        _fit(run_name="twice")


def test_nan_loss_fails_the_run_with_a_clear_reason():
    class GoesNaN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(8, 4)

        def forward(self, x):
            out = self.linear(x)
            return out * float("nan") if self.training else out

    with pytest.raises(
        finetuner.FinetunerError, match=r"training loss became nan at epoch 1, batch 1"
    ):
        _fit(model=GoesNaN())
    (run,) = finetuner.list_runs()
    assert run.status()["status"] == "FAILED"
    assert "loss became nan" in run.status()["reason"]
