"""The plugin author's kit: a cheap import, the names it promises, the weight snapshot."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys

import pytest
import torch

import finetuner.plugins.kit as kit
from finetuner.errors import PluginError
from finetuner.plugins.kit import WeightSnapshot

FIRST_PARTY_PACKAGES = [
    "finetuner_evaluation",
    "finetuner_early_stopping",
    "finetuner_best_model",
    "finetuner_training_checkpoint",
    "finetuner_wiseft",
    "finetuner_wandb",
    "finetuner_mlflow",
]
HEAVY = ("torch", "transformers", "numpy", "annoy")


def _heavy_after(code: str) -> list[str]:
    script = f"import sys\n{code}\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    return [name for name in out.stdout.strip().split(",") if name]


def test_the_kit_imports_without_torch_and_loads_heavy_names_on_use():
    assert _heavy_after("import finetuner.plugins.kit") == []
    assert (
        _heavy_after(
            "from finetuner.plugins.kit import MetricMonitor, WeightSnapshot, resolve_mode"
        )
        == []
    )
    assert _heavy_after("from finetuner.plugins.kit import prune_checkpoints") == []
    assert "torch" in _heavy_after("from finetuner.plugins import kit; kit.load_dataset")


def test_every_name_of_the_kit_resolves():
    import finetuner.data
    import finetuner.plugins.monitoring
    import finetuner.runs.checkpoints

    for name in kit.__all__:
        assert getattr(kit, name) is not None, name
    assert kit.prune_checkpoints is finetuner.runs.checkpoints.prune
    assert kit.load_dataset is finetuner.data.load_dataset
    assert kit.CSVOptions is finetuner.data.CSVOptions
    assert kit.MetricMonitor is finetuner.plugins.monitoring.MetricMonitor
    assert set(kit.__all__) <= set(dir(kit))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        kit.nothing  # noqa: B018


@pytest.mark.parametrize("package", FIRST_PARTY_PACKAGES)
def test_first_party_plugins_import_without_torch(package):
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed here")
    assert _heavy_after(f"import {package}") == []


def _models(seed: int) -> dict[str, torch.nn.Module]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    return {"model": model, "head": torch.nn.Linear(3, 2)}


def _state(models: dict[str, torch.nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    return {n: {k: v.clone() for k, v in m.state_dict().items()} for n, m in models.items()}


def _same(a: dict[str, dict[str, torch.Tensor]], b: dict[str, dict[str, torch.Tensor]]) -> bool:
    return a.keys() == b.keys() and all(
        a[n].keys() == b[n].keys() and all(torch.equal(a[n][k], b[n][k]) for k in a[n]) for n in a
    )


def test_weight_snapshot_round_trip():
    models = _models(0)
    original = _state(models)
    snapshot = WeightSnapshot("Test")
    assert not snapshot.taken and snapshot.state_dict() == {}
    snapshot.take(models)
    assert snapshot.taken and snapshot.model_names == ["model", "head"]

    with torch.no_grad():  # training moves on: the copy must not follow
        for module in models.values():
            for parameter in module.parameters():
                parameter.add_(1.0)
    assert not _same(_state(models), original)
    assert _same({n: dict(snapshot.weights(n)) for n in models}, original)

    snapshot.restore(models)
    assert _same(_state(models), original)
    snapshot.restore(models)  # restoring leaves the snapshot as it was
    assert _same(_state(models), original)
    for weights in snapshot.state_dict().values():
        assert all(t.device.type == "cpu" for t in weights.values())

    # Through a checkpoint: state_dict -> torch.save/load (weights only) -> a new snapshot.
    buffer = io.BytesIO()
    torch.save(snapshot.state_dict(), buffer)
    buffer.seek(0)
    restored = WeightSnapshot("Test")
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    other = _models(1)
    assert not _same(_state(other), original)
    restored.restore(other)
    assert _same(_state(other), original)

    empty = WeightSnapshot("Test")
    empty.load_state_dict(None)
    assert not empty.taken


def test_weight_snapshot_names_what_is_missing():
    snapshot = WeightSnapshot("BestModelCheckpoint")
    with pytest.raises(PluginError, match=r"BestModelCheckpoint: .*no model 'model'.*nothing"):
        snapshot.restore({"model": torch.nn.Linear(2, 2)})
    snapshot.take({"a": torch.nn.Linear(2, 2)})
    with pytest.raises(PluginError, match=r"no model 'b'; it holds a\b"):
        snapshot.weights("b")
