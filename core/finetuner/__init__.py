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
    ConfigError,
    DataError,
    ExperimentNotFoundError,
    FinetunerError,
    PluginError,
    RunError,
    RunFailedError,
    RunInProgressError,
    RunNotFoundError,
)
from .hookspecs import hookimpl

if TYPE_CHECKING:
    from .runs import Run

__all__ = [
    "CSVOptions",
    "ConfigError",
    "DataError",
    "Document",
    "DocumentArray",
    "Experiment",
    "ExperimentNotFoundError",
    "FinetunerError",
    "PluginError",
    "Run",
    "RunError",
    "RunFailedError",
    "RunInProgressError",
    "RunNotFoundError",
    "ScoredPair",
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
    "get_model": "inference",
    "build_model": "inference",
    "encode": "inference",
    "cos_sim": "inference",
    "describe_models": "models",
    "list_models": "models",
    "list_callbacks": "plugins",
    "Document": "document",
    "DocumentArray": "document",
    "ScoredPair": "document",
    "Triplet": "document",
    "CSVOptions": "csv_data",
    "push_data": "datastore",
    "list_data": "datastore",
    "delete_data": "datastore",
}


_compat.install()

_SUBMODULES = frozenset(
    {
        "artifacts",
        "backbones",
        "callback",
        "checkpoint",
        "cli",
        "config",
        "context",
        "csv_data",
        "data",
        "datasets",
        "datastore",
        "document",
        "events",
        "hookspecs",
        "images",
        "inference",
        "losses",
        "models",
        "monitoring",
        "onnx_export",
        "optim",
        "plugins",
        "runs",
        "testing",
        "trainer",
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
    loss: str = "TripletMarginLoss",
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
) -> Run:
    """Fine-tune *model* on *train_data* and return the finished :class:`~finetuner.runs.Run`.

    :param model: a registry name (see :func:`describe_models`: ``"mlp"``, ``"resnet-base"``,
        ``"sentence-transformers/all-MiniLM-L6-v2"``, ``"clip-base-en"``, ...), a local text
        model folder, or any ``torch.nn.Module`` that maps a batch of tensors to a
        ``(batch, dim)`` embedding tensor.
    :param train_data: a CSV file (path or open file; see *csv_options*), the name of a pushed
        or built-in data set, a docarray ``DocList`` (items in ``text``, ``uri``/``url`` or
        ``tensor``, labels in ``tags['finetuner_label']`` or ``label``; a ``text`` with a
        ``uri`` is a text-image pair; :class:`ScoredPair` and :class:`Triplet` documents) or a
        list of ``(item, label)`` pairs, items being tensors, texts or image paths.
    :param eval_data: data in the same form; its loss is reported as ``val_loss`` each epoch.
    :param val_split: fraction of *train_data* held out as validation data when *eval_data* is
        not given (``0 <= val_split < 1``), stratified by class.
    :param model_options: options of a registry model, e.g. ``{"hidden_sizes": [128, 64]}``.
    :param loss: a pytorch-metric-learning loss class name; *loss_options* are its arguments.
        Losses that need ``num_classes`` or ``embedding_size`` get them filled in.
    :param miner: a pytorch-metric-learning miner class name; *miner_options* its arguments.
    :param optimizer: a ``torch.optim`` class name; *optimizer_options* its arguments.
    :param learning_rate: overrides the ``lr`` of *optimizer_options*.
    :param epochs: number of passes over the training data.
    :param batch_size: items per batch (default 32, at most the size of the data).
    :param scheduler: ``linear``, ``cosine``, ``cosine_with_restarts``, ``polynomial``,
        ``constant`` or ``constant_with_warmup``; *scheduler_options*: ``num_warmup_steps``,
        ``num_training_steps`` (``'auto'``), ``scheduler_step`` (``'batch'`` or ``'epoch'``),
        ``num_cycles``, ``power``, ``lr_end``.
    :param callbacks: callback instances (``finetuner.callback.<Class>(...)``).
    :param description: a free-text note recorded in the run's config.
    :param device: ``'auto'`` (CUDA when available, else Apple's MPS, else CPU), ``'cpu'``, ``'cuda'``, ...
    :param num_workers: ``DataLoader`` worker processes for batching (0: in the main process).
    :param num_items_per_class: items of each class per batch for the class-balanced sampler.
    :param sampler: ``'auto'`` (class-balanced, or random for classification-style losses such
        as ArcFace), ``'class'`` or ``'random'``.
    :param run_name: name of the run (generated when ``None``); *experiment_name* groups runs
        (``'default'``).
    :param seed: seed of every random number generator used (drawn and recorded when ``None``).
    :param runs_dir: the run store (default ``$FINETUNER_RUNS_DIR`` or ``./finetuner-runs``).
    :param csv_options: a :class:`CSVOptions` (or a dict of its fields) for CSV data.
    :param loss_optimizer: a ``torch.optim`` class name for the loss's own parameters (e.g. the
        class centres of ``ArcFaceLoss``), with *loss_optimizer_options*; otherwise they train
        with the model's optimizer.
    :param model_artifact: an artifact (folder or zip) of an earlier run of the same model:
        training starts from its weights.
    :param to_onnx: also export each model to ``model.onnx`` in the artifact, checked against
        torch (needs ``pip install "finetuner[onnx]"``).
    :param resume: continue an interrupted run (its name, a :class:`Run` or its folder) from its
        latest training checkpoint, with the same options it started with. Runs write
        checkpoints when fit with the ``TrainingCheckpoint`` callback.
    :raises ConfigError: for invalid options, before anything runs.
    :raises DataError: for unusable data, before anything runs.
    """
    from .config import validate_fit_options
    from .trainer import Trainer

    options = {
        "model": model,
        "train_data": train_data,
        "eval_data": eval_data,
        "val_split": val_split,
        "model_options": dict(model_options or {}),
        "loss": loss,
        "loss_options": dict(loss_options or {}),
        "miner": miner,
        "miner_options": dict(miner_options or {}),
        "optimizer": optimizer,
        "optimizer_options": dict(optimizer_options or {}),
        "learning_rate": learning_rate,
        "epochs": epochs,
        "batch_size": batch_size,
        "scheduler": scheduler,
        "scheduler_options": dict(scheduler_options or {}),
        "callbacks": list(callbacks or []),
        "device": device,
        "num_workers": num_workers,
        "num_items_per_class": num_items_per_class,
        "sampler": sampler,
        "run_name": run_name,
        "experiment_name": experiment_name,
        "description": description,
        "seed": seed,
        "runs_dir": runs_dir,
        "csv_options": csv_options,
        "loss_optimizer": loss_optimizer,
        "loss_optimizer_options": dict(loss_optimizer_options or {}),
        "model_artifact": model_artifact,
        "to_onnx": to_onnx,
    }
    return Trainer(validate_fit_options(options), resume=resume).run()
