"""The set-up builder: a config becomes a FitSetup, with no side effects, and fails early."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from training_parts import tiny_config, tiny_setup

from finetuner.callback import Callback
from finetuner.data import ClassBalancedBatchSampler, RandomBatchSampler
from finetuner.errors import ConfigError, DataError
from finetuner.training import build_setup
from finetuner.training.model_setup import plan_models
from finetuner.training.setup import check_callbacks


def test_builds_every_part_of_a_fit():
    setup = tiny_setup(scheduler="linear", val_split=0.25)
    assert setup.seed == 0 and setup.device == torch.device("cpu")
    assert len(setup.train_data) == 32 and len(setup.eval_data) == 8  # 2 of 10 per class
    assert list(setup.models.modules) == ["model"] and setup.routes == ["model"]
    assert setup.models.metadata["model"]["output_dim"] == 8
    assert setup.models.metadata["model"]["options"]["input_size"] == 8
    assert isinstance(setup.sampler, ClassBalancedBatchSampler) and setup.sampler_kind == "class"
    assert setup.batch_size == 8 and setup.steps_per_epoch == len(setup.sampler)
    assert setup.scheduler is not None and setup.scheduler_step == "batch"
    assert type(setup.loss).__name__ == "TripletMarginLoss" and setup.miner is None
    assert setup.loss_optimizer is None


def test_building_leaves_no_trace():
    """No run folder, and the global random generators are as the builder found them."""
    random.seed(11)
    np.random.seed(11)
    torch.manual_seed(11)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(11)
    np.random.seed(11)
    torch.manual_seed(11)
    tiny_setup()
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_initial_weights_depend_on_the_seed_only():
    config = tiny_config()
    first = build_setup(config, seed=5).models.first.state_dict()
    torch.manual_seed(999)  # the caller's stream does not matter
    second = build_setup(config, seed=5).models.first.state_dict()
    other = build_setup(config, seed=6).models.first.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_random_sampler_for_classification_losses_and_the_default_batch_size():
    setup = tiny_setup(loss="ArcFaceLoss", batch_size=None)
    assert isinstance(setup.sampler, RandomBatchSampler) and setup.sampler_kind == "random"
    assert setup.batch_size == 32  # the default, below the 40 items
    assert dict(tiny_config(loss="ArcFaceLoss").loss_options) == {}


def test_the_recorded_config_holds_resolved_values_and_no_runs_dir(tmp_path):
    setup = tiny_setup(runs_dir=str(tmp_path), description="a note")
    record = setup.recorded_config()
    assert "runs_dir" not in record
    assert record["sampler"] == "class" and record["batch_size"] == 8 and record["seed"] == 0
    assert record["device"] == "cpu" and record["experiment_name"] == "default"
    assert record["train_data"] == {"type": "list", "size": 40}
    assert record["model_options"]["input_size"] == 8  # filled in from the data
    assert record["description"] == "a note" and record["callbacks"] == []


def test_mistakes_fail_before_anything_runs():
    with pytest.raises(ConfigError, match="unknown loss 'TripletMarginLos'"):
        tiny_setup(loss="TripletMarginLos")
    with pytest.raises(DataError, match="single class"):
        tiny_setup(train_data=[(torch.ones(4), 0), (torch.zeros(4), 0)])
    with pytest.raises(ConfigError, match="loss_optimizer_options are set but loss_optimizer"):
        tiny_setup(loss_optimizer_options={"lr": 0.1})


def test_the_model_plan_names_models_before_building_them():
    plan = plan_models(tiny_config())
    assert plan.modalities == {"model": "tensor"} and plan.display_names == {"model": "mlp"}
    own = plan_models(tiny_config(model=torch.nn.Linear(8, 4), model_options={}))
    assert own.display_names == {"model": "linear"} and own.spec is None


def test_callbacks_must_be_instances():
    class Good(Callback):
        pass

    assert len(check_callbacks([Good()])) == 1
    with pytest.raises(ConfigError, match=r"callbacks\[0\] is the class Good; pass an instance"):
        check_callbacks([Good])
    with pytest.raises(ConfigError, match=r"callbacks\[1\] is the string 'EarlyStopping'"):
        check_callbacks([Good(), "EarlyStopping"])
    with pytest.raises(ConfigError, match="is not a finetuner callback"):
        check_callbacks([object()])
