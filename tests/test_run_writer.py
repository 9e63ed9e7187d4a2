"""The trainer's writing side of a run (RunWriter), on real run folders in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from finetuner.errors import RunError
from finetuner.runs import Run, RunWriter, create_run


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return create_run({"model": "mlp"}, run_name="written", runs_dir=tmp_path / "store")


def test_a_writer_records_the_run_it_was_given(run: Run) -> None:
    writer = RunWriter(run)
    assert writer.run is run
    # Reading is Run's job, writing RunWriter's: a Run has no writing methods.
    for name in ("_set_status", "_append_metrics", "_write_examples", "set_status"):
        assert not hasattr(run, name)


def _history(run: Run) -> list[tuple[str, int, int]]:
    return [(r["stage"], r["epoch"], r["step"]) for r in run.metric_history()]


def test_keep_metrics_through_drops_the_epochs_after_it(run: Run) -> None:
    writer = RunWriter(run)
    writer.append_metrics("before", -1, 0, {"a": 0.1})
    epoch_0 = writer.append_metrics("epoch", 0, 10, {"a": 0.2}, skipped={"a": 1})
    writer.append_metrics("step", 1, 15, {"a": 0.3})
    writer.append_metrics("epoch", 1, 20, {"a": 0.4})
    writer.append_metrics("epoch", 2, 30, {"a": 0.5})
    writer.append_metrics("after", 2, 30, {"a": 0.6})
    before = run.metric_history()

    writer.keep_metrics_through(0)
    assert _history(run) == [("before", -1, 0), ("epoch", 0, 10)]
    assert run.metric_history() == before[:2]  # the kept records are untouched
    assert run.metric_history()[1] == epoch_0
    lines = run.metrics_path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == before[:2]


def test_keep_metrics_through_always_drops_an_after_record(run: Run) -> None:
    writer = RunWriter(run)
    writer.append_metrics("before", -1, 0, {"a": 0.1})
    writer.append_metrics("epoch", 0, 10, {"a": 0.2})
    writer.append_metrics("after", 0, 10, {"a": 0.3})
    writer.keep_metrics_through(5)  # the resumed fit publishes its own "after"
    assert _history(run) == [("before", -1, 0), ("epoch", 0, 10)]
    assert run.metrics() == {"before": {"a": 0.1}}


def test_keep_metrics_through_leaves_the_file_alone_when_nothing_goes(run: Run) -> None:
    writer = RunWriter(run)
    writer.keep_metrics_through(3)
    assert not run.metrics_path.exists()  # no metrics yet: nothing is created
    writer.append_metrics("before", -1, 0, {"a": 0.1})
    writer.append_metrics("step", 3, 40, {"a": 0.2})
    inode = run.metrics_path.stat().st_ino
    writer.keep_metrics_through(3)
    assert run.metrics_path.stat().st_ino == inode
    assert _history(run) == [("before", -1, 0), ("step", 3, 40)]
    writer.keep_metrics_through(2)
    assert run.metrics_path.stat().st_ino != inode  # replaced whole, not edited in place
    assert _history(run) == [("before", -1, 0)]
    assert [p.name for p in run.path.iterdir() if p.name.startswith(".")] == []


def test_write_source_keeps_the_config_file_options(run: Run) -> None:
    options = {
        "model": "mlp",
        "train_data": Path("data") / "train.csv",
        "epochs": 2,
        "callbacks": [{"name": "early-stopping", "monitor": "val_loss"}],
        "hidden_sizes": (8, 4),
    }
    RunWriter(run).write_source(options)
    text = (run.path / "source.yml").read_text(encoding="utf-8")
    assert text.startswith("model: mlp\n")  # the file's order, not sorted
    assert yaml.safe_load(text) == {
        "model": "mlp",
        "train_data": str(Path("data") / "train.csv"),
        "epochs": 2,
        "callbacks": [{"name": "early-stopping", "monitor": "val_loss"}],
        "hidden_sizes": [8, 4],
    }
    RunWriter(run).write_source({"model": "bert"})
    assert yaml.safe_load((run.path / "source.yml").read_text()) == {"model": "bert"}
    assert [p.name for p in run.path.iterdir() if p.name.startswith(".")] == []


def test_record_examples_replaces_one_stage_and_keeps_the_others(run: Run) -> None:
    writer = RunWriter(run)
    writer.record_examples("before", {"red shoe": ["blue hat", "red boot"]})
    writer.record_examples("after", {"red shoe": ["red boot"], 7: [1, 2]})
    assert run.example_results() == {
        "before": {"red shoe": ["blue hat", "red boot"]},
        "after": {"red shoe": ["red boot"], "7": ["1", "2"]},
    }
    writer.record_examples("before", {"cat": ["kitten"]})
    assert run.example_results() == {
        "before": {"cat": ["kitten"]},
        "after": {"red shoe": ["red boot"], "7": ["1", "2"]},
    }


def test_write_examples_refuses_a_stage_that_is_not_a_mapping(run: Run) -> None:
    with pytest.raises(RunError, match="examples for stage 'before' must map each query"):
        RunWriter(run).write_examples({"before": ["not", "a", "mapping"]})  # type: ignore[dict-item]
    assert run.example_results() == {}
