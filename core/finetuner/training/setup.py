"""The builder: a validated :class:`~finetuner.config.FitConfig` becomes a :class:`FitSetup`.

:func:`build_setup` checks names, loads the data, builds the models, the loss, the optimizers,
the scheduler and the sampler, and runs one small batch through the models, so that a mistake
fails before any run exists. It has no side effects: it creates no run, writes no file,
registers no plugin, and leaves the global random number generators as it found them (the
models' initial weights are drawn from *seed* inside :func:`~.randomness.seeded`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..callback import Callback
from ..config import FitConfig, recorded_options
from ..data import KINDS, Collate, Dataset
from ..distributed import DistributedEnv
from ..encoding import check_precision, resolve_device
from ..errors import ConfigError, DataError
from ..models import get_spec
from ..models.onnx import require_onnx
from ..models.prompts import column_roles, with_prompt
from .data_setup import load_fit_data
from .losses import validate_loss_name, validate_miner_name
from .model_setup import MODEL_NAME, ModelSet, build_models, check_forward, plan_models
from .optim import validate_optimizer_name, validate_scheduler
from .optimization import (
    build_loss_and_miner,
    build_loss_optimizer,
    build_optimizer_for,
    build_scheduler_for,
)
from .randomness import seeded
from .sampling import Sampler, batch_size_for, build_sampler, sampler_kind, warn_unfilled_batches

__all__ = ["FitSetup", "build_setup", "check_callbacks", "steps_for"]


def steps_for(batches: int, accumulate: int) -> int:
    """Optimizer steps for *batches* batches, *accumulate* batches per step."""
    return -(-batches // accumulate)


@dataclass
class FitSetup:
    """Everything a fit trains with, built from its config (see :func:`build_setup`)."""

    config: FitConfig
    seed: int
    device: torch.device
    train_data: Dataset
    eval_data: Dataset | None
    models: ModelSet
    routes: list[str]
    """The model that embeds each column of the data, in column order."""
    collate: Collate
    loss: nn.Module
    miner: Any
    optimizer: torch.optim.Optimizer
    loss_optimizer: torch.optim.Optimizer | None
    scheduler: Any
    scheduler_step: str
    """When the scheduler steps: ``"batch"`` or ``"epoch"``."""
    batch_size: int
    sampler_kind: str
    sampler: Sampler
    callbacks: list[Any]
    dist: DistributedEnv = field(default_factory=DistributedEnv)
    """The ranks training together (one, unless started by torchrun)."""

    @property
    def batches_per_epoch(self) -> int:
        return len(self.sampler)

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch: one per ``accumulate_grad_batches`` batches, and one for
        the batches left at the epoch's end."""
        return steps_for(len(self.sampler), self.config.accumulate_grad_batches)

    def validation_sampler(self) -> Sampler:
        """Batches of the validation data, the same ones every time (seed 0)."""
        assert self.eval_data is not None
        return build_sampler(
            self.sampler_kind,
            self.eval_data,
            self.batch_size,
            self.config.num_items_per_class,
            seed=0,
        )

    def data_fingerprint(self) -> dict[str, Any]:
        """The fingerprints of the training and validation data, as loaded (what a resumed
        run checks its data against)."""
        from ..data.fingerprint import fingerprint

        evaluation = self.eval_data
        return {
            "train_data": fingerprint(self.train_data),
            "validation": None if evaluation is None else fingerprint(evaluation),
        }

    def recorded_config(self) -> dict[str, Any]:
        """The run's config record: the options, with the values this set-up resolved."""
        config = self.config
        model = config.model if isinstance(config.model, str) else None
        resolved = {
            "model": model or self.models.metadata[MODEL_NAME]["class"],
            "model_options": next(iter(self.models.metadata.values())).get("options", {}),
            "batch_size": self.batch_size,
            "callbacks": [
                {
                    "class": type(cb).__name__,
                    "options": cb.options() if isinstance(cb, Callback) else {},
                }
                for cb in self.callbacks
            ],
            "device": str(self.device),
            "sampler": self.sampler_kind,
            "experiment_name": config.experiment_name or "default",
            "seed": self.seed,
        }
        return recorded_options(config, resolved)


def _check_names(config: FitConfig) -> None:
    if config.loss != "auto":  # resolved once the training data is loaded
        validate_loss_name(config.loss)
    if config.miner:
        validate_miner_name(config.miner)
    validate_optimizer_name(config.optimizer)
    if config.loss_optimizer:
        validate_optimizer_name(config.loss_optimizer)
    if config.scheduler:
        validate_scheduler(config.scheduler, config.scheduler_options)
    if isinstance(config.model, str):
        get_spec(config.model)


def check_callbacks(callbacks: Sequence[Any]) -> list[Any]:
    """The callbacks, or a ConfigError for a class, a name or an object that is no callback."""
    for i, callback in enumerate(callbacks):
        if isinstance(callback, type):
            raise ConfigError(
                f"callbacks[{i}] is the class {callback.__name__}; pass an instance: "
                f"{callback.__name__}(...)."
            )
        if isinstance(callback, str):
            raise ConfigError(
                f"callbacks[{i}] is the string {callback!r}; in Python pass an instance "
                f"(finetuner.callback.{callback}(...)); names work in config files."
            )
        if not isinstance(callback, Callback) and not any(
            name.startswith("finetuner_") for name in dir(callback)
        ):
            raise ConfigError(
                f"callbacks[{i}] ({type(callback).__name__}) is not a finetuner callback: "
                "subclass finetuner.callback.Callback and implement finetuner_* hooks."
            )
    return list(callbacks)


def _collate(models: ModelSet, routes: list[str], train: Dataset) -> Collate:
    """The preprocessor of each column's model, with the model's query or document prompt
    where the column plays that role (:func:`~finetuner.models.prompts.column_roles`)."""
    roles = column_roles(train.kind, train.modalities)
    return Collate(
        [
            with_prompt(models.preprocessors[name], models.metadata[name].get("options"), role)
            for name, role in zip(routes, roles)
        ]
    )


def _check_gather(config: FitConfig, train: Dataset) -> None:
    if config.gather_across_devices and train.kind in ("scored", "triplets"):
        raise ConfigError(
            f"gather_across_devices=True shares in-batch negatives and label batches across "
            f"processes, but {config.loss} scores each row of {KINDS[train.kind]} on its own; "
            "leave it off."
        )


def _sampler(
    kind: str, train: Dataset, batch_size: int, config: FitConfig, seed: int, dist: DistributedEnv
) -> Sampler:
    """The training sampler: this rank's share of every global batch."""
    sampler = build_sampler(
        kind,
        train,
        batch_size,
        config.num_items_per_class,
        seed,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    if len(sampler) == 0:
        raise DataError(
            f"train_data has {len(train)} rows, too few for {dist.world_size} processes "
            "(each needs at least one row of every batch); add data or use fewer processes."
        )
    if dist.is_main:  # one warning for the whole fit
        warn_unfilled_batches(sampler)
    return sampler


def build_setup(config: FitConfig, *, seed: int, dist: DistributedEnv | None = None) -> FitSetup:
    """Build everything *config* trains with; the models' initial weights come from *seed*.
    *dist*: the ranks of a distributed fit, each of which builds the same set-up and trains
    on its share of every batch."""
    with seeded(seed):
        return _build(config, seed, dist or DistributedEnv())


def _build(config: FitConfig, seed: int, dist: DistributedEnv) -> FitSetup:
    device = dist.device_for(resolve_device(config.device))
    check_precision(config.precision, device)
    _check_names(config)
    config, train, evaluation = load_fit_data(config, seed)  # the config with its loss resolved
    _check_gather(config, train)
    plan = plan_models(config)
    routes = plan.route_columns(train)
    if evaluation is not None:
        plan.route_columns(evaluation)
    models = build_models(config, plan, train, device)
    output_dim = check_forward(models, routes, train, device)
    loss, miner = build_loss_and_miner(
        config, num_classes=train.num_classes, embedding_size=output_dim, device=device
    )
    loss_optimizer = build_loss_optimizer(config, loss)
    batch_size = batch_size_for(config, train)
    kind = sampler_kind(config, train)
    sampler = _sampler(kind, train, batch_size, config, seed, dist)
    optimizer = build_optimizer_for(config, list(models.modules.values()), loss)
    scheduler, scheduler_step = build_scheduler_for(
        config, optimizer, steps_for(len(sampler), config.accumulate_grad_batches)
    )
    callbacks = check_callbacks(config.callbacks)
    if config.to_onnx:
        require_onnx()  # a missing onnx fails now, not after training
    return FitSetup(
        config=config,
        seed=seed,
        device=device,
        train_data=train,
        eval_data=evaluation,
        models=models,
        routes=routes,
        collate=_collate(models, routes, train),
        loss=loss,
        miner=miner,
        optimizer=optimizer,
        loss_optimizer=loss_optimizer,
        scheduler=scheduler,
        scheduler_step=scheduler_step,
        batch_size=batch_size,
        sampler_kind=kind,
        sampler=sampler,
        callbacks=callbacks,
        dist=dist,
    )
