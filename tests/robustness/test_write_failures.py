"""Full disks and folders that cannot be written: every failed write is a RunError naming the
path and what was being written, the trained weights survive a failed artifact, no temporary
folder is left behind, and files take the user's umask.

A full disk is injected at the operating system's boundary: ``os.replace`` (the rename that
publishes every atomic write) fails with ENOSPC for the chosen target, as the kernel would.
"""

from __future__ import annotations

import errno
import json
import os
import stat

import pytest
import torch

import finetuner
from finetuner.errors import RunError
from finetuner.runs import RunWriter, create_run
from finetuner.runs.checkpoints import write_checkpoint
from finetuner.testing import make_tiny_data
from robustness.cli import assert_one_clear_error

_real_replace = os.replace


def _full_disk_for(monkeypatch, *names: str, then: tuple[str, ...] = ()) -> list[str]:
    """Make ``os.replace`` onto a target named one of *names* fail with ENOSPC, as on a full
    disk, and once one has failed, onto the targets named in *then* too; returns the targets
    refused."""
    refused: list[str] = []

    def replace(src, dst, *args, **kwargs):
        name = os.path.basename(os.fspath(dst))
        if name in names or (refused and name in then):
            refused.append(os.fspath(dst))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(dst))
        return _real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return refused


def _fit(tmp_path, **options):
    values = {
        "model": "mlp",
        "train_data": make_tiny_data(),
        "model_options": {"hidden_sizes": [8]},
        "epochs": 1,
        "batch_size": 8,
        "seed": 1,
        "runs_dir": tmp_path,
        "run_name": "r",
    }
    values.update(options)
    return finetuner.fit(**values)


def _hidden(folder):
    return sorted(p.name for p in folder.rglob(".*"))


def test_a_checkpoint_that_does_not_fit_is_a_run_error_and_leaves_nothing(tmp_path, monkeypatch):
    _full_disk_for(monkeypatch, "epoch-0000")
    with pytest.raises(RunError) as caught:
        write_checkpoint(tmp_path / "checkpoints", 0, {"step": 1})
    message = str(caught.value)
    assert message.startswith(f"could not write the checkpoint {tmp_path / 'checkpoints'}")
    assert "No space left on device" in message
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_a_failed_artifact_keeps_the_trained_weights(tmp_path, monkeypatch):
    refused = _full_disk_for(monkeypatch, "artifact")
    with pytest.raises(RunError) as caught:
        _fit(tmp_path)
    run = finetuner.get_run("r", runs_dir=tmp_path)
    message = str(caught.value)
    assert refused == [str(run.artifact_dir)]
    assert f"could not write the artifact {run.artifact_dir}: No space left on device" in message
    kept = run.path / "weights-fallback"
    assert f"The trained weights are kept in {kept}" in message
    weights = torch.load(kept / "model.pt", weights_only=True)
    assert weights and all(isinstance(t, torch.Tensor) for t in weights.values())
    assert not run.artifact_dir.exists() and _hidden(run.path) == []  # no temporary folder
    status = run.status()
    assert status["status"] == "FAILED" and "kept in" in status["reason"]
    assert status["phase"] == "artifact"


def test_when_even_the_failed_status_cannot_be_written_stderr_says_so(
    tmp_path, monkeypatch, capsys
):
    refused = _full_disk_for(monkeypatch, "artifact", then=("status.json",))
    with pytest.raises(RunError, match="could not write the artifact"):
        _fit(tmp_path)
    err = capsys.readouterr().err
    assert "warning: run 'r' could not be marked FAILED (could not write the status file" in err
    assert any(path.endswith("status.json") for path in refused)


def test_a_run_store_under_a_file_is_one_clear_error(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(RunError, match=r"could not write the experiment file .*a-file.*Not a dir"):
        create_run({"seed": 1}, runs_dir=blocker / "runs")
    config = tmp_path / "fit.yml"
    config.write_text("model: mlp\ntrain_data: digits-train\nepochs: 1\n")
    assert_one_clear_error(
        capsys,
        ["fit", str(config), "--runs-dir", str(blocker / "runs")],
        names=r"could not write .*a-file",
    )


def test_files_respect_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        run = create_run({"seed": 1}, runs_dir=tmp_path)
        RunWriter(run).append_metrics("before", 0, 0, {"m": 1.0})
    finally:
        os.umask(previous)
    for name in ("status.json", "config.json", "metrics.jsonl"):
        assert stat.S_IMODE((run.path / name).stat().st_mode) == 0o640, name
    json.loads((run.path / "status.json").read_text())
