"""The artifact of a finished fit: its models' weights, the metadata to rebuild them, the
config, versions and plugins, the metrics before and after, a model card (``README.md``), and
optionally ONNX exports.

The folder format itself belongs to :mod:`finetuner.models.artifact`; this module gathers what
goes into it from the fit.
"""

from __future__ import annotations

import platform
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_open, reported_write
from .._version import __version__
from ..data import KINDS
from ..errors import RunError
from ..models.artifact import write_artifact
from ..models.card import CardFacts
from ..models.onnx import export_onnx
from ..plugins import Registered
from ..runs import Run
from ..runs.checkpoints import list_checkpoints
from .setup import FitSetup

__all__ = [
    "artifact_metadata",
    "card_facts",
    "export_onnx_models",
    "keep_weights",
    "write_fit_artifact",
]

FALLBACK_DIR = "weights-fallback"
"""Where the trained weights go when the artifact cannot be written."""


def export_onnx_models(setup: FitSetup, log: Any) -> dict[str, bytes]:
    """Each model exported to ONNX and checked against torch on a batch of the data."""
    data = setup.train_data
    batch = data.take(list(range(min(4, len(data)))))
    exported: dict[str, bytes] = {}
    for name, items in zip(setup.routes, batch.items):
        if name in exported:
            continue
        sample = setup.models.preprocessors[name](items)
        exported[name] = export_onnx(setup.models.modules[name], sample)
        log.info("model exported to ONNX", model=name, size_bytes=len(exported[name]))
    return exported


def artifact_metadata(
    run: Run, device: torch.device, duration: float, registered: Sequence[Registered]
) -> dict[str, Any]:
    """The artifact's ``metadata.yml``: the run, versions, device, duration and plugins used."""
    return {
        "run_name": run.name,
        "experiment_name": run.experiment_name,
        "finetuner_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": str(device),
        "duration_s": round(duration, 3),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "plugins": [
            {"name": r.name, "kind": r.kind, "distribution": r.distribution, "version": r.version}
            for r in registered
        ],
    }


def card_facts(setup: FitSetup, epochs_completed: int | None = None) -> CardFacts:
    """What the model card says of the data and the optimizer, from the fit's set-up, and the
    epochs trained."""
    train, validation = setup.train_data, setup.eval_data
    source = None
    if validation is not None:
        source = "eval_data" if setup.config.eval_data is not None else "val_split"
    lr = setup.optimizer.defaults.get("lr")
    return CardFacts(
        data_kind=train.kind,
        data_kind_text=KINDS.get(train.kind),
        training_rows=len(train),
        validation_rows=None if validation is None else len(validation),
        validation_source=source,
        learning_rate=float(lr) if isinstance(lr, (int, float)) else None,
        epochs_completed=epochs_completed,
    )


def write_fit_artifact(
    setup: FitSetup,
    run: Run,
    *,
    config: Mapping[str, Any],
    registered: Sequence[Registered],
    metrics: Mapping[str, Mapping[str, float]],
    duration: float,
    log: Any,
    epochs_completed: int | None = None,
) -> Path:
    """Write the run's artifact folder, atomically, and return it. When it cannot be written
    (a full disk), the RunError says so and where the trained weights were kept instead
    (:func:`keep_weights`)."""
    models = setup.models
    try:
        with reported_write("write the artifact", run.artifact_dir):
            return write_artifact(
                run.artifact_dir,
                models=models.modules,
                model_metadata=models.metadata,
                preprocessor_files={n: p.files() for n, p in models.preprocessors.items()},
                onnx=export_onnx_models(setup, log) if setup.config.to_onnx else None,
                config=dict(config),
                metadata=artifact_metadata(run, setup.device, duration, registered),
                metrics=dict(metrics),
                examples=run.example_results(),
                card=card_facts(setup, epochs_completed),
            )
    except RunError as exc:
        raise RunError(f"{exc} {keep_weights(setup, run)}") from exc


def keep_weights(setup: FitSetup, run: Run) -> str:
    """Save the trained weights where they still fit, when the artifact could not be written:
    ``weights-fallback/`` in the run folder, else beside it; failing both, point to the last
    checkpoint. Returns the sentence that says where they are."""
    modules = setup.models.modules
    for folder in (run.path / FALLBACK_DIR, run.path.with_name(f"{run.name}.{FALLBACK_DIR}")):
        try:
            for name, module in modules.items():
                with atomic_open(folder / f"{name}.pt") as handle:
                    torch.save(module.state_dict(), handle)
        except OSError:
            shutil.rmtree(folder, ignore_errors=True)
            continue
        return (
            f"The trained weights are kept in {folder} (one <model>.pt each; load with "
            "torch.load(path, weights_only=True) and module.load_state_dict)."
        )
    checkpoints = list_checkpoints(run.checkpoint_dir)
    if checkpoints:
        return (
            f"The weights could not be saved anywhere; the last checkpoint, {checkpoints[-1].path}, "
            f"holds those of epoch {checkpoints[-1].epoch}: free space and resume the run."
        )
    return "The trained weights could not be saved anywhere, and the run has no checkpoint."
