"""``finetuner export`` refusals: one clear error line each, naming what to do."""

from __future__ import annotations

import pytest

import finetuner
from robustness.cli import assert_one_clear_error

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def mlp_artifact(tmp_path_factory):
    import torch

    folder = tmp_path_factory.mktemp("mlp")
    torch.manual_seed(0)
    data = [(torch.randn(4), i % 2) for i in range(8)]
    run = finetuner.fit("mlp", data, epochs=1, batch_size=4, runs_dir=str(folder / "runs"))
    return str(run.artifact_path)


def test_a_format_that_cannot_hold_the_model(capsys, mlp_artifact, tmp_path):
    argv = ["export", mlp_artifact, str(tmp_path / "st"), "--to", "sentence-transformers"]
    assert_one_clear_error(capsys, argv, names=r"cannot represent model 'model'.*as onnx instead")


def test_quantizing_what_is_not_onnx(capsys, mlp_artifact, tmp_path):
    argv = [
        "export",
        mlp_artifact,
        str(tmp_path / "x"),
        "--to",
        "transformers",
        "--quantize",
        "int8",
    ]
    assert_one_clear_error(capsys, argv, names=r"applies to the ONNX export")


def test_a_folder_that_holds_other_files(capsys, mlp_artifact, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    argv = ["export", mlp_artifact, str(tmp_path), "--to", "onnx"]
    assert_one_clear_error(capsys, argv, names=r"not an earlier export.*new or empty folder")


def test_an_unknown_run(capsys, tmp_path):
    argv = [
        "export",
        "no-such-run",
        str(tmp_path / "x"),
        "--to",
        "onnx",
        "--runs-dir",
        str(tmp_path),
    ]
    assert_one_clear_error(capsys, argv, names=r"no-such-run")


def test_a_truncate_dim_larger_than_the_vectors(capsys, mlp_artifact, tmp_path):
    argv = ["export", mlp_artifact, str(tmp_path / "x"), "--to", "onnx", "--truncate-dim", "999"]
    assert_one_clear_error(capsys, argv, names=r"truncate_dim=999 is larger")
