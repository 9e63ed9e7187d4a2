"""fit end to end: data forms, training, artifacts and inference."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from docarray import DocList

import finetuner
from finetuner.runs import RunWriter
from finetuner.testing import make_tiny_data


def _fit(**options):
    defaults = dict(
        model="mlp",
        train_data=make_tiny_data(),
        model_options={"hidden_sizes": [16, 8]},
        epochs=2,
        batch_size=8,
        seed=0,
    )
    defaults.update(options)
    return finetuner.fit(**defaults)


def test_fit_trains_and_lowers_the_loss():
    run = _fit(epochs=6, eval_data=make_tiny_data(seed=1), loss="SupConLoss")
    history = run.metric_history()
    epochs = [r for r in history if r["stage"] == "epoch"]
    assert len(epochs) == 6
    assert epochs[-1]["metrics"]["train_loss"] < epochs[0]["metrics"]["train_loss"]
    metrics = run.metrics()
    assert metrics["after"]["val_loss"] < metrics["before"]["val_loss"]
    assert run.status()["status"] == "FINISHED"


def test_artifact_round_trip_gives_the_same_embeddings(tmp_path):
    data = make_tiny_data()
    run = _fit(train_data=data)
    inputs = torch.stack([x for x, _ in data])
    model = finetuner.get_model(run.artifact_path)
    from_artifact = finetuner.encode(model, inputs)
    zipped = run.save_artifact(tmp_path / "artifacts")
    from_zip = finetuner.encode(finetuner.get_model(zipped), inputs)
    assert from_artifact.shape == (len(data), 8)
    np.testing.assert_array_equal(from_artifact, from_zip)
    # The artifact holds only YAML, safetensors and its card: nothing that would be unpickled.
    suffixes = {p.suffix for p in run.artifact_path.rglob("*") if p.is_file()}
    assert suffixes <= {".yml", ".safetensors", ".md"}


def test_the_artifact_holds_the_trained_weights():
    model = torch.nn.Sequential(torch.nn.Linear(8, 4))
    data = make_tiny_data()
    run = finetuner.fit(model, data, epochs=2, batch_size=8, seed=0)
    inputs = torch.stack([x for x, _ in data])
    expected = model.cpu().eval()(inputs).detach().numpy()  # fit moved it to the device
    fresh = torch.nn.Sequential(torch.nn.Linear(8, 4))
    loaded = finetuner.get_model(run.artifact_path, model=fresh)
    np.testing.assert_allclose(finetuner.encode(loaded, inputs), expected, atol=1e-6)


def test_custom_module_artifact_needs_the_module():
    run = finetuner.fit(
        torch.nn.Sequential(torch.nn.Linear(8, 4)), make_tiny_data(), epochs=1, seed=0
    )
    with pytest.raises(finetuner.ConfigError, match="custom module"):
        finetuner.get_model(run.artifact_path)


def test_doclist_training_data_and_encode_fills_embeddings():
    docs = finetuner.DocumentArray(
        finetuner.Document(tensor=x.numpy(), tags={"finetuner_label": f"class-{y}"})
        for x, y in make_tiny_data()
    )
    run = _fit(train_data=docs)
    model = finetuner.get_model(run.artifact_path)
    filled = finetuner.encode(model, docs)
    assert filled is docs
    assert all(doc.embedding is not None and len(doc.embedding) == 8 for doc in docs)


def test_doclist_with_label_field_works():
    from docarray import BaseDoc
    from docarray.typing import NdArray

    class Item(BaseDoc):
        tensor: NdArray
        label: str

    docs = DocList[Item]([Item(tensor=x.numpy(), label=str(y)) for x, y in make_tiny_data()])
    run = _fit(train_data=docs, epochs=1)
    assert run.status()["status"] == "FINISHED"


def test_build_model_and_cos_sim():
    model = finetuner.build_model("mlp", {"input_size": 8, "hidden_sizes": [4]})
    out = finetuner.encode(model, np.ones((3, 8), dtype=np.float32))
    assert out.shape == (3, 4)
    sims = finetuner.cos_sim(out, out)
    np.testing.assert_allclose(np.diag(sims), 1.0, atol=1e-6)
    assert finetuner.cos_sim([1, 0], [0, 1]) == pytest.approx(0.0)
    assert finetuner.cos_sim([1, 1], [2, 2]) == pytest.approx(1.0)


def test_val_split_holds_out_data():
    run = _fit(val_split=0.25, epochs=1)
    assert "val_loss" in run.metrics()["after"]
    config = run.config
    assert config["val_split"] == 0.25


def test_schedulers_change_the_learning_rate():
    seen = []

    class LearningRates(finetuner.callback.Callback):
        def finetuner_on_train_batch_end(self, event):
            seen.append(event.learning_rates[0])

    _fit(
        epochs=2,
        learning_rate=0.01,
        scheduler="linear",
        scheduler_options={"num_warmup_steps": 2},
        callbacks=[LearningRates()],
    )
    assert seen[0] == pytest.approx(0.005)  # half-way through the warm-up
    assert seen[1] == pytest.approx(0.01)
    assert seen[-1] == pytest.approx(0.0, abs=1e-9)
    assert all(a >= b for a, b in itertools.pairwise(seen[1:]))


@pytest.mark.parametrize(
    "name",
    ["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"],
)
def test_every_scheduler_builds_and_runs(name):
    run = _fit(epochs=1, scheduler=name, scheduler_options={"scheduler_step": "epoch"})
    assert run.status()["status"] == "FINISHED"


def test_class_balanced_batches():
    from finetuner.data import ClassBalancedBatchSampler

    labels = np.repeat(np.arange(6), 10)
    sampler = ClassBalancedBatchSampler(labels, batch_size=12, num_items_per_class=4, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5
    for batch in batches:
        counts = np.bincount(labels[batch], minlength=6)
        assert sorted(c for c in counts if c) == [4, 4, 4]
    sampler.set_epoch(1)
    assert list(sampler) != batches  # a new order each epoch
    sampler.set_epoch(0)
    assert list(sampler) == batches  # ...that depends only on (seed, epoch)


def test_run_config_and_log_are_recorded():
    run = _fit(run_name="recorded", experiment_name="exp")
    assert run.name == "recorded" and run.experiment_name == "exp"
    assert run.config["loss"] == "TripletMarginLoss"
    assert run.config["model_options"]["input_size"] == 8
    records = [json.loads(line) for line in run.log_path.read_text().splitlines()]
    assert records[0]["event"] == "run started"
    assert all({"timestamp", "level", "event", "logger"} <= set(r) for r in records)
    assert records[-1]["event"] == "run finished"


def test_arcface_uses_random_batches_and_trains_its_weights():
    run = _fit(loss="ArcFaceLoss", epochs=1)
    assert run.config["sampler"] == "random"
    assert run.status()["status"] == "FINISHED"


def test_miner_is_used():
    run = _fit(
        miner="TripletMarginMiner", miner_options={"margin": 0.2, "type_of_triplets": "semihard"}
    )
    assert run.config["miner"] == "TripletMarginMiner"


def test_num_workers_batches_through_a_dataloader():
    run = _fit(num_workers=1, epochs=1)
    assert run.status()["status"] == "FINISHED"


def test_library_does_not_configure_logging_globally():
    import logging

    import structlog

    root_handlers = list(logging.getLogger().handlers)
    config_before = structlog.get_config()
    _fit(epochs=1)
    assert logging.getLogger().handlers == root_handlers
    assert structlog.get_config() == config_before


def test_list_items_are_identified_by_argument_and_position():
    from finetuner.data import load_dataset

    queries = load_dataset(make_tiny_data()[:3], name="query_data")
    index = load_dataset(make_tiny_data()[:3], name="index_data")
    assert queries.ids == ["query_data[0]", "query_data[1]", "query_data[2]"]
    assert not set(queries.ids) & set(index.ids)  # never self-excluded by position alone


def test_config_records_the_generated_run_name():
    run = _fit(epochs=1)
    assert run.config["run_name"] == run.name
    assert run.config["experiment_name"] == "default"


def test_a_restarted_run_forgets_the_old_failure():
    run = _fit(epochs=1)
    RunWriter(run).set_status("FAILED", reason="boom", plugin="x", hook="y", phase="train")
    status = RunWriter(run).set_status("STARTED")
    assert (status["reason"], status["plugin"], status["hook"], status["phase"]) == (
        None,
        None,
        None,
        None,
    )
