"""finetuner: fine-tune embedding models for search, on your own machine.

``finetuner.fit(...)`` trains a model and returns a :class:`~finetuner.runs.Run`; callbacks are
pluggy plugins found through entry points; runs and artifacts stay in a local folder.

Heavy modules (torch, docarray, pytorch-metric-learning) load on first use of the names that
need them, so ``import finetuner`` stays fast.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import _compat
from ._version import __version__
from .errors import (
    ArtifactError,
    ConfigError,
    DataError,
    ExperimentNotFoundError,
    FinetunerError,
    PluginError,
    RunError,
    RunFailedError,
    RunInProgressError,
    RunNotFoundError,
    TrainingDivergedError,
)
from .hookspecs import hookimpl

if TYPE_CHECKING:
    from .runs import Run

__all__ = [
    "ArtifactError",
    "CSVOptions",
    "ConfigError",
    "DataError",
    "Document",
    "DocumentArray",
    "Experiment",
    "ExperimentNotFoundError",
    "FinetunerError",
    "PluginError",
    "RetrievalExample",
    "Run",
    "RunError",
    "RunFailedError",
    "RunInProgressError",
    "RunNotFoundError",
    "ScoredPair",
    "TrainingDivergedError",
    "Triplet",
    "__version__",
    "build_model",
    "cos_sim",
    "create_experiment",
    "delete_data",
    "delete_experiment",
    "delete_run",
    "describe_models",
    "encode",
    "fit",
    "get_experiment",
    "get_model",
    "get_run",
    "hookimpl",
    "list_callbacks",
    "list_data",
    "list_experiments",
    "list_models",
    "list_runs",
    "mine_hard_negatives",
    "push_data",
]

_LAZY = {
    "Run": "runs",
    "Experiment": "runs",
    "get_run": "runs",
    "list_runs": "runs",
    "delete_run": "runs",
    "create_experiment": "runs",
    "get_experiment": "runs",
    "list_experiments": "runs",
    "delete_experiment": "runs",
    "get_model": "models.inference",
    "build_model": "models.inference",
    "encode": "models.inference",
    "cos_sim": "models.inference",
    "mine_hard_negatives": "mining",
    "describe_models": "models",
    "list_models": "models",
    "list_callbacks": "plugins",
    "Document": "data.documents",
    "DocumentArray": "data.documents",
    "RetrievalExample": "data.documents",
    "ScoredPair": "data.documents",
    "Triplet": "data.documents",
    "CSVOptions": "data.csv_options",
    "push_data": "data.pushed",
    "list_data": "data.store",
    "delete_data": "data.store",
}


_compat.install()

# finetuner.<name> imports the submodule: the subpackages and top modules, and the old flat
# names that now alias a moved module (see _compat).
_SUBMODULES = frozenset(
    {
        "callback",
        "cli",
        "config",
        "context",
        "data",
        "demo",
        "encoding",
        "errors",
        "events",
        "hookspecs",
        "mining",
        "models",
        "plugins",
        "runs",
        "search",
        "testing",
        "training",
        *(name.rpartition(".")[2] for name in _compat.MOVED),
        *(name.rpartition(".")[2] for name in _compat.MOVED_PACKAGES),
    }
)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'finetuner' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def fit(
    model: Any,
    train_data: Any,
    eval_data: Any = None,
    *,
    val_split: float = 0.0,
    model_options: Mapping[str, Any] | None = None,
    loss: str = "auto",
    loss_options: Mapping[str, Any] | None = None,
    miner: str | None = None,
    miner_options: Mapping[str, Any] | None = None,
    optimizer: str = "Adam",
    optimizer_options: Mapping[str, Any] | None = None,
    learning_rate: float | None = None,
    epochs: int = 5,
    batch_size: int | None = None,
    scheduler: str | None = None,
    scheduler_options: Mapping[str, Any] | None = None,
    callbacks: list[Any] | None = None,
    device: str = "auto",
    num_workers: int = 0,
    num_items_per_class: int = 4,
    sampler: str = "auto",
    run_name: str | None = None,
    experiment_name: str | None = None,
    description: str | None = None,
    seed: int | None = None,
    runs_dir: str | os.PathLike[str] | None = None,
    resume: Any = None,
    csv_options: Any = None,
    loss_optimizer: str | None = None,
    loss_optimizer_options: Mapping[str, Any] | None = None,
    model_artifact: str | os.PathLike[str] | None = None,
    to_onnx: bool = False,
    precision: str = "32",
    accumulate_grad_batches: int = 1,
    gradient_clip_norm: float | None = None,
    gradient_clip_value: float | None = None,
    gradient_checkpointing: bool = False,
    layer_wise_lr_decay: float | None = None,
    backend: str = "auto",
    gather_across_devices: bool = False,
) -> Run:
    """Fine-tune *model* on *train_data* and return the finished :class:`~finetuner.runs.Run`.

    *model* is a registry name (:func:`describe_models`), a local text model folder or any
    ``torch.nn.Module``; *train_data* and *eval_data* are CSV files, data set names, docarray
    ``DocList`` objects or lists of ``(item, label)`` pairs; the other options are described by
    :class:`finetuner.config.FitConfig`. *resume* continues an interrupted run (a name, a
    :class:`Run` or a folder) from its latest checkpoint. Under ``torchrun`` every process
    calls ``fit`` alike and they train together (see the distributed training guide).
    :raises ConfigError: for invalid options, before anything runs.
    :raises DataError: for unusable data, before anything runs.
    """
    options = dict(locals())  # first, while the locals are exactly the parameters
    resume = options.pop("resume")
    from .config import validate_fit_options
    from .training import Trainer

    return Trainer(validate_fit_options(options), resume=resume).run()
