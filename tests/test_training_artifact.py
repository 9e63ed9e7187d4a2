"""What a finished fit puts into its artifact, written without running a fit."""

from __future__ import annotations

import torch
import yaml
from training_parts import open_loop, tiny_setup

import finetuner
from finetuner.training.artifact import artifact_metadata, write_fit_artifact


def test_the_artifact_of_a_set_up_rebuilds_its_model(tmp_path):
    setup = tiny_setup()
    loop = open_loop(tmp_path, setup)
    run = loop.ctx.run
    path = write_fit_artifact(
        setup,
        run,
        config=loop.ctx.config,
        registered=loop.registered,
        metrics={"before": {"val_loss": 2.0}, "after": {"val_loss": 1.0}},
        duration=1.23456,
        log=loop.log,
    )
    assert path == run.artifact_dir
    metadata = yaml.safe_load((path / "metadata.yml").read_text())
    assert metadata["run_name"] == run.name and metadata["duration_s"] == 1.235
    assert {p["name"] for p in metadata["plugins"]} >= {"console"}
    assert yaml.safe_load((path / "metrics.yml").read_text())["after"] == {"val_loss": 1.0}
    assert yaml.safe_load((path / "config.yml").read_text())["batch_size"] == 8
    model = finetuner.get_model(path)
    items = torch.stack([x for x, _ in setup.config.train_data[:3]])
    with torch.no_grad():
        expected = setup.models.first.eval()(items).numpy()
    assert torch.allclose(
        torch.from_numpy(finetuner.encode(model, items)), torch.from_numpy(expected)
    )


def test_metadata_names_versions_device_and_plugins(tmp_path):
    setup = tiny_setup()
    loop = open_loop(tmp_path, setup)
    metadata = artifact_metadata(loop.ctx.run, setup.device, 2.0, loop.registered)
    assert metadata["finetuner_version"] == finetuner.__version__
    assert metadata["torch_version"] == torch.__version__ and metadata["device"] == "cpu"
    assert all(set(p) == {"name", "kind", "distribution", "version"} for p in metadata["plugins"])
