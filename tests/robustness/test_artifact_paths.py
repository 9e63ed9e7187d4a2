"""Paths given where an artifact is read or written: one clear error each, found before any
folder is walked or any file is written."""

from __future__ import annotations

import os

import pytest

import finetuner
from finetuner.errors import ArtifactError, ConfigError, RunError
from finetuner.testing import make_tiny_data


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("runs")
    return finetuner.fit(
        "mlp", make_tiny_data(), epochs=1, batch_size=8, seed=0, runs_dir=str(runs_dir)
    )


def test_a_folder_without_metadata_is_no_artifact_and_is_not_walked(tmp_path):
    # a link deep inside would be refused if the folder were walked; it must not be reached
    (tmp_path / "deep" / "er").mkdir(parents=True)
    os.symlink("/etc/hostname", tmp_path / "deep" / "er" / "link")
    with pytest.raises(ArtifactError, match=rf"'{tmp_path}' holds no artifact"):
        finetuner.get_model(tmp_path)


@pytest.mark.parametrize("directory", [5, None, 1.5, ["artifacts"]])
def test_save_artifact_takes_a_path(run, directory):
    with pytest.raises(ConfigError, match="save_artifact takes the folder to write into"):
        run.save_artifact(directory)


def test_save_artifact_under_a_file_names_the_path(run, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(RunError, match=rf"could not write the artifact's zip {blocker}"):
        run.save_artifact(blocker / "artifacts")
    assert blocker.read_text() == "not a folder"
