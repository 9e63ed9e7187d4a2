"""The test suite's reader of offline W&B logs: a log that wandb has not finished writing is
read as far as it goes, and waited for until its exit record is there."""

from __future__ import annotations

import shutil

import pytest
import wandb
from wandb_offline_log import (
    _chunks_to_records,
    offline_environment,
    offline_runs,
    read_offline_run,
)


@pytest.fixture
def finished_run(tmp_path, monkeypatch):
    offline_environment(monkeypatch, tmp_path)
    wandb.teardown()
    run = wandb.init(project="reader", reinit="create_new")
    run.log({"x": 1.0})
    run.finish()
    wandb.teardown()
    (folder,) = (tmp_path / "wandb").glob("offline-run-*")
    return folder


def test_a_log_cut_anywhere_reads_as_a_prefix_of_its_records(finished_run):
    (log_file,) = finished_run.glob("run-*.wandb")
    data = log_file.read_bytes()
    whole = _chunks_to_records(data)
    assert len(whole) > 5
    for cut in range(7, len(data), max(1, len(data) // 200)):
        part = _chunks_to_records(data[:cut])
        assert part == whole[: len(part)]


def test_an_unfinished_log_is_waited_for_then_refused(finished_run, tmp_path):
    (log_file,) = finished_run.glob("run-*.wandb")
    data = log_file.read_bytes()
    copy = tmp_path / "copy" / finished_run.name
    copy.mkdir(parents=True)
    (copy / log_file.name).write_bytes(data[:7])  # only the header, as a log not yet flushed
    with pytest.raises(AssertionError, match="no exit record"):
        read_offline_run(copy, timeout=0.3)
    # once the rest arrives, the same folder reads in full
    (copy / log_file.name).write_bytes(data)
    run = read_offline_run(copy, timeout=0.3)
    assert run.project == "reader" and run.exit_code == 0 and run.rows_with("x")
    shutil.rmtree(copy)
    assert [r.project for r in offline_runs(tmp_path)] == ["reader"]
