"""The trainer: builds everything from a validated config, then runs the hook sequence.

The order of hooks, and the produce-then-publish handling of metrics, are documented in
:mod:`finetuner.hookspecs`; this module is their single implementation.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._version import __version__
from .artifacts import artifact_size, write_artifact
from .callback import Callback
from .config import FitConfig, describe_data
from .context import TrainingContext
from .data import (
    IMAGE,
    KINDS,
    TENSOR,
    Batch,
    ClassBalancedBatchSampler,
    Collate,
    Dataset,
    RandomBatchSampler,
    encodable_values,
    iterate_batches,
    load_dataset,
    split_dataset,
)
from .encoding import encode_items, evaluating, resolve_device, to_device
from .errors import (
    ConfigError,
    DataError,
    FinetunerError,
    PluginError,
    RunError,
    RunInProgressError,
    close_matches_hint,
)
from .events import (
    BatchEnded,
    BatchStarted,
    EpochEnded,
    EpochStarted,
    EvaluationRequested,
    ExceptionRaised,
    FitConfigured,
    FitEnded,
    FitStarted,
    LogRecorded,
    MetricDeclaration,
    MetricsPublished,
    Stage,
    TrainEnded,
    TrainEpochEnded,
    ValidationEnded,
    frozen_mapping,
)
from .losses import (
    CLASSIFICATION_LOSSES,
    PAIR_LOSSES,
    build_loss,
    build_miner,
    validate_loss_name,
    validate_miner_name,
)
from .models import ModelSpec, Preprocessor, get_spec
from .optim import build_optimizer, build_scheduler, validate_optimizer_name, validate_scheduler
from .plugins import build_plugin_manager
from .runs import Run, RunStatus, RunWriter, create_run, get_run
from .runs.checkpoints import (
    capture_rng,
    list_checkpoints,
    load_checkpoint,
    restore_rng,
    write_checkpoint,
)
from .runs.log import RunLog
from .runs.processes import live_pid

__all__ = ["Trainer", "encode_items", "resolve_device"]

DEFAULT_BATCH_SIZE = 32
MODEL_NAME = "model"


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _format_reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Trainer:
    """One fit. Construct with a validated :class:`FitConfig`, then call :meth:`run`."""

    def __init__(
        self, config: FitConfig, *, resume: Any = None, source: Mapping[str, Any] | None = None
    ):
        self.cfg = config
        self._phase = "setup"
        self.source = source
        self.resume_run: Run | None = self._find_resumed_run(resume) if resume is not None else None
        self.seed = self._choose_seed()
        _seed_everything(self.seed)
        self.device = resolve_device(config.device)
        self._check_names()
        self.train_data, self.eval_data = self._load_data()
        self._name_models()
        self.routes = self._route_columns(self.train_data)
        if self.eval_data is not None:
            self._route_columns(self.eval_data)
        self._build_models()
        self.collate = Collate([self.preprocessors[name] for name in self.routes])
        self.output_dim = self._check_forward()
        self.loss_fn, self.miner = self._build_loss()
        self.loss_optimizer = self._build_loss_optimizer()
        self.batch_size = self._batch_size()
        self.sampler = self._build_sampler()
        self.steps_per_epoch = len(self.sampler)
        self.optimizer = self._build_optimizer()
        self.scheduler, self.scheduler_step = (None, "batch")
        if config.scheduler:
            self.scheduler, self.scheduler_step = build_scheduler(
                config.scheduler,
                self.optimizer,
                config.scheduler_options,
                steps_per_epoch=self.steps_per_epoch,
                epochs=config.epochs,
            )
        self.callbacks = self._check_callbacks(config.callbacks)
        if config.to_onnx:
            from .onnx_export import _require_onnx

            _require_onnx()  # missing onnx fails now, not after training

    # --- building ---------------------------------------------------------------------------

    def _find_resumed_run(self, resume: Any) -> Run:
        if isinstance(resume, Run):
            run = resume
        elif isinstance(resume, (str, Path)) and (Path(resume) / "status.json").is_file():
            run = Run(Path(resume))
        elif isinstance(resume, str):
            run = get_run(
                resume, experiment_name=self.cfg.experiment_name, runs_dir=self.cfg.runs_dir
            )
        else:
            raise ConfigError(
                f"resume must be a run name, a Run or a run folder, not {type(resume).__name__}."
            )
        status = run.status()
        if status["status"] == RunStatus.FINISHED.value:
            raise RunError(
                f"run '{run.name}' already finished; there is nothing to resume. Start a new run."
            )
        if status["status"] == RunStatus.STARTED.value and live_pid(status) not in (
            None,
            os.getpid(),
        ):
            raise RunInProgressError(
                f"run '{run.name}' is still running (pid {status.get('pid')}); stop it before resuming."
            )
        if not list_checkpoints(run.checkpoint_dir):
            raise RunError(
                f"run '{run.name}' has no checkpoint to resume from ({run.checkpoint_dir}); runs are "
                "resumable when fit with the TrainingCheckpoint callback."
            )
        return run

    def _choose_seed(self) -> int:
        if self.resume_run is not None:
            recorded = self.resume_run.config.get("seed")
            if self.cfg.seed is not None and recorded is not None and self.cfg.seed != recorded:
                raise ConfigError(
                    f"seed={self.cfg.seed} differs from the seed {recorded} of run "
                    f"'{self.resume_run.name}'; a resumed run keeps its seed (leave seed unset)."
                )
            if recorded is not None:
                return int(recorded)
        if self.cfg.seed is not None:
            return self.cfg.seed
        return random.SystemRandom().randrange(2**31)

    def _check_names(self) -> None:
        cfg = self.cfg
        validate_loss_name(cfg.loss)
        if cfg.miner:
            validate_miner_name(cfg.miner)
        validate_optimizer_name(cfg.optimizer)
        if cfg.loss_optimizer:
            validate_optimizer_name(cfg.loss_optimizer)
        if cfg.scheduler:
            validate_scheduler(cfg.scheduler, cfg.scheduler_options)
        if isinstance(cfg.model, str):
            get_spec(cfg.model)

    def _load_data(self) -> tuple[Dataset, Dataset | None]:
        cfg = self.cfg
        options = cfg.csv_options
        train = load_dataset(cfg.train_data, name="train_data", csv_options=options)
        evaluation = (
            load_dataset(cfg.eval_data, name="eval_data", csv_options=options)
            if cfg.eval_data is not None
            else None
        )
        self._check_loss_fits(train)
        if evaluation is None and cfg.val_split > 0:
            train, evaluation = split_dataset(train, cfg.val_split, self.seed)
        if train.kind == "labeled" and train.num_classes < 2:
            raise DataError(
                f"train_data has a single class ({train.classes[0]!r}); {cfg.loss} learns by "
                "telling classes apart and needs items of at least two classes."
            )
        if evaluation is not None and (evaluation.kind, evaluation.modalities) != (
            train.kind,
            train.modalities,
        ):
            raise DataError(
                f"eval_data holds {KINDS[evaluation.kind]} ({', '.join(evaluation.modalities)}) "
                f"but train_data holds {KINDS[train.kind]} ({', '.join(train.modalities)}); "
                "they must be of one form."
            )
        if evaluation is not None and evaluation.item_shape != train.item_shape:
            raise DataError(
                f"eval_data items have shape {evaluation.item_shape} but train_data "
                f"items have shape {train.item_shape}; they must match."
            )
        if evaluation is not None and evaluation.labels is not None:
            # Validation labels use the training classes where they overlap.
            evaluation = _align_classes(evaluation, train)
        return train, evaluation

    def _check_loss_fits(self, data: Dataset) -> None:
        """The loss must train on the form of the data: class losses on labeled items (or
        text-image pairs), the pair losses on their own forms."""
        loss = self.cfg.loss
        wanted = getattr(PAIR_LOSSES.get(loss), "data_kind", None)
        if wanted is not None and data.kind != wanted:
            raise DataError(
                f"{loss} trains on {KINDS[wanted]}, but train_data holds {KINDS[data.kind]}; "
                f"{self._loss_hint(data.kind)}"
            )
        if wanted is None and data.kind in ("scored", "triplets"):
            raise DataError(
                f"{loss} learns from class labels, but train_data holds {KINDS[data.kind]}; "
                f"{self._loss_hint(data.kind)}"
            )

    @staticmethod
    def _loss_hint(kind: str) -> str:
        return {
            "labeled": "use a pytorch-metric-learning loss such as TripletMarginLoss or ArcFaceLoss.",
            "pairs": "use loss='CLIPLoss' (or a pytorch-metric-learning loss).",
            "scored": "use loss='CosineSimilarityLoss'.",
            "triplets": "use loss='MarginMSELoss'.",
        }[kind]

    def _name_models(self) -> None:
        """The names, display names and input modalities of the model or its towers, known
        before anything is built, so data of the wrong kind fails fast."""
        cfg = self.cfg
        self.spec: ModelSpec | None = None
        if isinstance(cfg.model, str):
            spec = self.spec = get_spec(cfg.model)
            if spec.towers:
                self.model_modalities = dict(spec.towers)
                self.model_names = {name: name for name in spec.towers}
            else:
                self.model_modalities = {MODEL_NAME: spec.modality}
                self.model_names = {MODEL_NAME: spec.name}
        else:
            self.model_modalities = {MODEL_NAME: TENSOR}
            self.model_names = {MODEL_NAME: type(cfg.model).__name__.lower()}

    def _build_models(self) -> None:
        """The model (or both towers of a two-tower model), with its preprocessors and the
        metadata for the artifact."""
        cfg = self.cfg
        item_shape = self.train_data.item_shape
        self.models: dict[str, nn.Module] = {}
        self.preprocessors: dict[str, Any] = {}
        self.model_metas: dict[str, dict[str, Any]] = {}
        if self.spec is not None:
            spec = self.spec
            options = spec.resolve_options(cfg.model_options, item_shape)
            built = spec.build(options)
            towers: dict[str, nn.Module] = (
                dict(built.items()) if spec.towers else {MODEL_NAME: built}  # type: ignore[operator]
            )
            for name, module in towers.items():
                tower = name if spec.towers else None
                self.models[name] = module
                self.preprocessors[name] = spec.build_preprocessor(options, tower)
                self.model_metas[name] = {
                    "registry_name": spec.name,
                    "tower": tower,
                    "modality": spec.modality_of(tower),
                    "options": options,
                    "class": f"{type(module).__module__}.{type(module).__qualname__}",
                    "input_shape": list(item_shape) if item_shape is not None else None,
                }
        else:
            if cfg.model_options:
                raise ConfigError(
                    "model_options apply to registry models only; configure your own "
                    "torch.nn.Module when you create it."
                )
            module = cfg.model
            self.models[MODEL_NAME] = module
            self.preprocessors[MODEL_NAME] = Preprocessor()
            self.model_metas[MODEL_NAME] = {
                "registry_name": None,
                "tower": None,
                "modality": TENSOR,
                "options": {},
                "class": f"{type(module).__module__}.{type(module).__qualname__}",
                "input_shape": list(item_shape) if item_shape is not None else None,
            }
        if cfg.model_artifact is not None:
            self._load_model_artifact(cfg.model_artifact)
        for name, module in self.models.items():
            self.models[name] = module.to(self.device)
        self.model = next(iter(self.models.values()))

    def _load_model_artifact(self, artifact: Any) -> None:
        """Start from the weights of an earlier run's artifact (``model_artifact=``)."""
        from .artifacts import load_model_records, load_weights

        records = {r.name: r for r in load_model_records(artifact)[0]}
        for name, module in self.models.items():
            record = records.get(name)
            if record is None:
                raise ConfigError(
                    f"model_artifact '{artifact}' holds {', '.join(records) or 'no model'}, not "
                    f"'{name}'; continue training with the model the artifact was trained with."
                )
            mine = self.model_metas[name].get("registry_name")
            theirs = record.metadata.get("registry_name")
            if mine != theirs:
                raise ConfigError(
                    f"model_artifact '{artifact}' was trained with model '{theirs or record.metadata.get('class')}', "
                    f"not '{mine or self.model_metas[name]['class']}'; pass that model."
                )
            load_weights(
                module,
                record.tensors,
                f"the weights of model_artifact '{artifact}' (trained with other model_options?) "
                "do not fit",
            )
            if record.files:
                assert self.spec is not None
                meta = self.model_metas[name]
                self.preprocessors[name] = self.spec.build_preprocessor(
                    meta["options"], meta["tower"], record.files
                )

    def _route_columns(self, data: Dataset) -> list[str]:
        """Which model embeds each column of *data*: the model, or the tower of its modality."""
        routes = []
        for modality in data.modalities:
            takers = [
                name
                for name, takes in self.model_modalities.items()
                if takes == modality or (takes == IMAGE and modality == TENSOR)
            ]
            if not takers:
                models = ", ".join(
                    f"{self.model_names[n]} ({m})" for n, m in self.model_modalities.items()
                )
                if len(self.model_modalities) == 1 and len(set(data.modalities)) > 1:
                    hint = "text-image pairs need a two-tower model such as 'clip-base-en'."
                elif modality == TENSOR:
                    hint = "tensors need a model taking tensors, e.g. 'mlp' or your own module."
                else:
                    article = "an" if modality[0] in "aeiou" else "a"
                    hint = f"{modality} items need {article} {modality} model (see finetuner.describe_models())."
                raise DataError(
                    f"{data.source} holds {modality} items, but the model takes other inputs ({models}); {hint}"
                )
            routes.append(takers[0])
        return routes

    def _check_forward(self) -> int:
        """Run one small batch through the model(s), so data/model mismatches fail before the run."""
        batch = self.train_data.take(list(range(min(2, len(self.train_data)))))
        dims = set()
        for name, items, preprocess in zip(
            self.routes, batch.items, [self.preprocessors[r] for r in self.routes]
        ):
            shape = (
                f"items of shape {tuple(items.shape[1:])}"
                if isinstance(items, torch.Tensor)
                else f"{self.model_metas[name]['modality']} items"
            )
            try:
                with evaluating(self.models[name]):
                    out = self.models[name](to_device(preprocess(items), self.device))
            except FinetunerError:
                raise
            except Exception as exc:
                raise ConfigError(
                    f"the model failed on a batch of train_data ({shape}): {_format_reason(exc)}"
                ) from exc
            if not isinstance(out, torch.Tensor) or out.dim() != 2:
                raise ConfigError(
                    "the model must return a 2-D tensor of embeddings (batch, dim); it returned "
                    f"{type(out).__name__}{' of shape ' + str(tuple(out.shape)) if isinstance(out, torch.Tensor) else ''}."
                )
            self.model_metas[name]["output_dim"] = int(out.shape[1])
            dims.add(int(out.shape[1]))
        if len(dims) > 1:
            raise ConfigError(
                f"the towers embed into different sizes ({', '.join(map(str, sorted(dims)))}); "
                "a two-tower model must embed both sides into one space."
            )
        common = dims.pop()
        for meta in self.model_metas.values():
            meta.setdefault("output_dim", common)
        return int(self.model_metas[self.routes[0]]["output_dim"])

    def _build_loss(self) -> tuple[nn.Module, Any]:
        """The loss (losses with weights of their own get ``num_classes`` and the model's
        ``embedding_size``) and the miner."""
        cfg = self.cfg
        loss = build_loss(
            cfg.loss,
            cfg.loss_options,
            num_classes=max(self.train_data.num_classes, 1),
            embedding_size=self.output_dim,
        ).to(self.device)
        if cfg.miner and cfg.loss in PAIR_LOSSES:
            raise ConfigError(
                f"miner={cfg.miner!r} mines label-based tuples, but {cfg.loss} trains on "
                f"{KINDS[PAIR_LOSSES[cfg.loss].data_kind]}; drop the miner."  # type: ignore[attr-defined]
            )
        miner = build_miner(cfg.miner, cfg.miner_options) if cfg.miner else None
        return loss, miner

    def _batch_size(self) -> int:
        size = self.cfg.batch_size or DEFAULT_BATCH_SIZE
        return max(2, min(size, len(self.train_data)))

    def _sampler_kind(self) -> str:
        labeled = self.train_data.kind == "labeled"
        if self.cfg.sampler == "class" and not labeled:
            raise ConfigError(
                f"sampler='class' needs class labels, but train_data holds "
                f"{KINDS[self.train_data.kind]}; use sampler='auto' or 'random'."
            )
        if self.cfg.sampler != "auto":
            return self.cfg.sampler
        if not labeled or self.cfg.loss in CLASSIFICATION_LOSSES:
            return "random"
        return "class"

    def _build_sampler(
        self, data: Dataset | None = None, seed: int | None = None
    ) -> ClassBalancedBatchSampler | RandomBatchSampler:
        """Batches of *data* (the training data) the way the loss needs them."""
        data = self.train_data if data is None else data
        seed = self.seed if seed is None else seed
        if self._sampler_kind() == "class":
            assert data.labels is not None
            return ClassBalancedBatchSampler(
                data.labels, self.batch_size, self.cfg.num_items_per_class, seed
            )
        return RandomBatchSampler(len(data), min(self.batch_size, len(data)), seed)

    def _build_optimizer(self) -> torch.optim.Optimizer:
        groups: list[dict[str, Any]] = [
            {"params": [p for m in self.models.values() for p in m.parameters() if p.requires_grad]}
        ]
        loss_params = [p for p in self.loss_fn.parameters() if p.requires_grad]
        if loss_params and not self.cfg.loss_optimizer:
            groups.append({"params": loss_params})
        if not groups[0]["params"]:
            raise ConfigError("the model has no trainable parameters (all are frozen).")
        return build_optimizer(
            self.cfg.optimizer, groups, self.cfg.optimizer_options, self.cfg.learning_rate
        )

    def _build_loss_optimizer(self) -> torch.optim.Optimizer | None:
        """A separate optimizer for the loss's own parameters (``loss_optimizer=``), e.g. the
        class centres of ArcFace, which often want another learning rate."""
        cfg = self.cfg
        if not cfg.loss_optimizer:
            if cfg.loss_optimizer_options:
                raise ConfigError("loss_optimizer_options are set but loss_optimizer is not.")
            return None
        params = [p for p in self.loss_fn.parameters() if p.requires_grad]
        if not params:
            raise ConfigError(
                f"loss_optimizer={cfg.loss_optimizer!r}, but {cfg.loss} has no parameters to "
                "optimize; loss_optimizer is for losses such as ArcFaceLoss or CosFaceLoss."
            )
        return build_optimizer(
            cfg.loss_optimizer, [{"params": params}], cfg.loss_optimizer_options, None
        )

    def _check_callbacks(self, callbacks: Sequence[Any]) -> list[Any]:
        checked = []
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
            checked.append(callback)
        return checked

    def resolved_config(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "model": cfg.model
            if isinstance(cfg.model, str)
            else self.model_metas[MODEL_NAME]["class"],
            "model_options": next(iter(self.model_metas.values())).get("options", {}),
            "model_artifact": str(cfg.model_artifact) if cfg.model_artifact is not None else None,
            "train_data": describe_data(cfg.train_data),
            "eval_data": describe_data(cfg.eval_data),
            "val_split": cfg.val_split,
            "loss": cfg.loss,
            "loss_options": dict(cfg.loss_options),
            "miner": cfg.miner,
            "miner_options": dict(cfg.miner_options),
            "optimizer": cfg.optimizer,
            "optimizer_options": dict(cfg.optimizer_options),
            "loss_optimizer": cfg.loss_optimizer,
            "loss_optimizer_options": dict(cfg.loss_optimizer_options),
            "csv_options": dataclasses.asdict(cfg.csv_options) if cfg.csv_options else None,
            "to_onnx": cfg.to_onnx,
            "learning_rate": cfg.learning_rate,
            "epochs": cfg.epochs,
            "batch_size": self.batch_size,
            "scheduler": cfg.scheduler,
            "scheduler_options": dict(cfg.scheduler_options),
            "callbacks": [
                {
                    "class": type(cb).__name__,
                    "options": cb.options() if isinstance(cb, Callback) else {},
                }
                for cb in self.callbacks
            ],
            "device": str(self.device),
            "num_workers": cfg.num_workers,
            "num_items_per_class": cfg.num_items_per_class,
            "sampler": self._sampler_kind(),
            "run_name": cfg.run_name,
            "experiment_name": cfg.experiment_name or "default",
            "description": cfg.description,
            "seed": self.seed,
        }

    # --- running ----------------------------------------------------------------------------

    def run(self) -> Run:
        cfg = self.cfg
        config = self.resolved_config()
        if self.resume_run is not None:
            run = self.resume_run
            self._check_resumable_config(run.config, config)
            config["run_name"] = run.name
            config["experiment_name"] = run.experiment_name
        else:
            run = create_run(
                config,
                run_name=cfg.run_name,
                experiment_name=cfg.experiment_name,
                runs_dir=cfg.runs_dir,
            )
            config["run_name"] = run.name
            if self.source is not None:
                RunWriter(run).write_source(self.source)
        self.run_obj = run
        self.run_writer = RunWriter(run)
        self.runlog = RunLog(run.log_path)
        self.log = self.runlog.logger("finetuner.trainer")
        self.pm = None
        self.ctx: TrainingContext | None = None
        started = time.perf_counter()
        try:
            checkpoint_state = self._load_resume_state() if self.resume_run is not None else None
            self.run_writer.set_status(
                RunStatus.STARTED,
                resumed_from_epoch=checkpoint_state["epoch"] if checkpoint_state else None,
            )
            self._phase = "plugins"
            skipped: list[tuple[str, str]] = []
            self.pm, self.registered = build_plugin_manager(
                self.callbacks, on_skip=lambda name, why: skipped.append((name, why))
            )
            self.ctx = TrainingContext(
                run=run,
                config=frozen_mapping(config),
                models=self.models,
                device=self.device,
                plugin_manager=self.pm,
                logger=self.runlog.logger("finetuner.run"),
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                loss=self.loss_fn,
                train_data=self.train_data,
                eval_data=self.eval_data,
                epoch=-1,
                epochs=cfg.epochs,
                steps_per_epoch=self.steps_per_epoch,
                model_names=dict(self.model_names),
                model_modalities=dict(self.model_modalities),
                _encode=self._encode,
                _load_data=lambda data, name: load_dataset(
                    data, name=name, csv_options=cfg.csv_options
                ),
                _record_examples=self.run_writer.record_examples,
                _save_checkpoint=self._save_checkpoint,
            )
            self.runlog.set_listener(self._forward_log)
            self.log.info(
                "run resumed" if checkpoint_state else "run started",
                run=run.name,
                experiment=run.experiment_name,
                plugins=[r.name for r in self.registered],
                device=str(self.device),
                seed=self.seed,
                **({"from_epoch": checkpoint_state["epoch"]} if checkpoint_state else {}),
            )
            for name, why in skipped:
                # Blocking is the user's choice: recorded, not shouted. Broken plugins warn.
                report = self.log.info if why.startswith("blocked") else self.log.warning
                report(f"plugin '{name}' skipped: {why}", plugin=name, reason=why)
            self._fit(started, checkpoint_state)
        except BaseException as exc:
            self._fail(exc)
            raise
        finally:
            self.runlog.close()
        return run

    def _fit(self, started: float, checkpoint_state: dict[str, Any] | None = None) -> None:
        assert self.ctx is not None and self.pm is not None
        ctx, hook, cfg = self.ctx, self.pm.hook, self.cfg
        self._phase = "configure"
        declared = hook.finetuner_configure(
            ctx=ctx,
            event=FitConfigured(
                run_name=ctx.run.name,
                experiment_name=ctx.run.experiment_name,
                config=ctx.config,
                model_names=tuple(self.models),
            ),
        )
        self._validate_declarations(declared)
        start_epoch = 0
        if checkpoint_state is not None:
            start_epoch = self._restore(checkpoint_state)
        self._phase = "fit_begin"
        hook.finetuner_on_fit_begin(
            ctx=ctx,
            event=FitStarted(
                run_name=ctx.run.name,
                experiment_name=ctx.run.experiment_name,
                epochs=cfg.epochs,
                steps_per_epoch=self.steps_per_epoch,
                start_epoch=start_epoch,
                metric_keys=ctx.metric_keys,
            ),
        )
        if checkpoint_state is None:
            val_before = self._validation_loss() if self.eval_data is not None else None
            self.metrics_before = self._evaluate_and_publish(
                "before", epoch=-1, val_loss=val_before
            )
        else:
            self.metrics_before = dict(checkpoint_state.get("metrics_before") or {})

        if checkpoint_state is not None:
            # Last, so nothing a plugin drew since the checkpoint shifts the random streams.
            restore_rng(checkpoint_state["rng"])
        epochs_done = start_epoch
        last_metrics: Mapping[str, float] = {}
        stop = ctx.control.stop_requested
        for epoch in range(start_epoch, cfg.epochs):
            if stop:
                break
            ctx.epoch = epoch
            self._phase = "train"
            train_loss = self._train_epoch(epoch)
            if self.scheduler is not None and self.scheduler_step == "epoch":
                self.scheduler.step()
            hook.finetuner_on_train_epoch_end(
                ctx=ctx,
                event=TrainEpochEnded(
                    epoch=epoch, train_loss=train_loss, steps=self.steps_per_epoch
                ),
            )
            val_loss = None
            if self.eval_data is not None:
                self._phase = "validate"
                val_loss = self._validation_loss()
                hook.finetuner_on_validation_end(
                    ctx=ctx, event=ValidationEnded(epoch=epoch, val_loss=val_loss)
                )
            last_metrics = self._evaluate_and_publish(
                "epoch", epoch, train_loss=train_loss, val_loss=val_loss
            )
            epochs_done = epoch + 1
            stop = ctx.control.stop_requested
            self._phase = "epoch_end"
            hook.finetuner_on_epoch_end(
                ctx=ctx,
                event=EpochEnded(
                    epoch=epoch,
                    epochs=cfg.epochs,
                    step=ctx.step,
                    metrics=last_metrics,
                    stop_requested=stop,
                    stop_reason=ctx.control.stop_reason,
                    is_last=stop or epoch == cfg.epochs - 1,
                ),
            )
            ctx.control._clear_checkpoint_request()
            if stop:
                self.log.info(
                    "training stopped",
                    reason=ctx.control.stop_reason,
                    epoch=epoch,
                    by=ctx.control.stop_requested_by,
                )

        self._phase = "train_end"
        hook.finetuner_on_train_end(
            ctx=ctx,
            event=TrainEnded(
                epochs_completed=epochs_done,
                step=ctx.step,
                stopped_early=ctx.control.stop_requested,
                stop_reason=ctx.control.stop_reason,
            ),
        )
        val_after = self._validation_loss() if self.eval_data is not None else None
        self.metrics_after = self._evaluate_and_publish(
            "after", epoch=max(epochs_done - 1, 0), val_loss=val_after
        )
        self._phase = "artifact"
        duration = time.perf_counter() - started
        artifact = self._write_artifact(duration)
        self._phase = "fit_end"
        hook.finetuner_on_fit_end(
            ctx=ctx,
            event=FitEnded(
                run_name=ctx.run.name,
                experiment_name=ctx.run.experiment_name,
                duration_s=duration,
                artifact_path=str(artifact),
                artifact_size_bytes=artifact_size(artifact),
                metrics_before=frozen_mapping(self.metrics_before),
                metrics_after=frozen_mapping(self.metrics_after),
            ),
        )
        self.run_writer.set_status(
            RunStatus.FINISHED, duration_s=round(duration, 3), epochs_completed=epochs_done
        )
        self.log.info("run finished", duration_s=round(duration, 3))

    # --- checkpoints and resume -------------------------------------------------------------

    _RESUME_MUST_MATCH = (
        "model",
        "loss",
        "miner",
        "optimizer",
        "batch_size",
        "sampler",
        "num_items_per_class",
        "scheduler",
        "learning_rate",
    )

    def _check_resumable_config(
        self, recorded: Mapping[str, Any], current: Mapping[str, Any]
    ) -> None:
        changed = [
            f"{key}: {recorded.get(key)!r} -> {current.get(key)!r}"
            for key in self._RESUME_MUST_MATCH
            if key in recorded and recorded.get(key) != current.get(key)
        ]
        if changed:
            raise ConfigError(
                f"cannot resume run '{self.resume_run.name if self.resume_run else ''}' with "
                f"different options ({'; '.join(changed)}); resume with the options it started with."
            )

    def _load_resume_state(self) -> dict[str, Any]:
        assert self.resume_run is not None
        latest = list_checkpoints(self.resume_run.checkpoint_dir)[-1]
        state = load_checkpoint(latest)
        saved = state["models"]
        for name, module in self.models.items():
            if name not in saved:
                raise ConfigError(f"the checkpoint '{latest.path}' holds no model '{name}'.")
            mine = {k: tuple(v.shape) for k, v in module.state_dict().items()}
            theirs = {k: tuple(v.shape) for k, v in saved[name].items()}
            if mine != theirs:
                missing = sorted(set(mine) ^ set(theirs))
                shapes = [k for k in set(mine) & set(theirs) if mine[k] != theirs[k]]
                detail = (
                    f"parameters only on one side: {', '.join(missing[:4])}"
                    if missing
                    else f"different shapes: {', '.join(f'{k} {theirs[k]} vs {mine[k]}' for k in sorted(shapes)[:4])}"
                )
                raise ConfigError(
                    f"the checkpoint '{latest.path}' was written by a different model ({detail}); "
                    "resume with the model the run started with."
                )
        return state

    def _restore(self, state: Mapping[str, Any]) -> int:
        """Load a checkpoint into the fit; returns the first epoch to run."""
        assert self.ctx is not None
        for name, module in self.models.items():
            module.load_state_dict(state["models"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.loss_optimizer is not None and state.get("loss_optimizer") is not None:
            self.loss_optimizer.load_state_dict(state["loss_optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("loss") is not None:
            self.loss_fn.load_state_dict(state["loss"])
        self.ctx.control.load_state_dict(state.get("control") or {})
        saved_plugins = state.get("plugins") or {}
        for reg in self.registered:
            if isinstance(reg.plugin, Callback) and reg.name in saved_plugins:
                reg.plugin.load_state_dict(saved_plugins[reg.name])
        self.ctx.step = int(state["step"])
        epoch = int(state["epoch"])
        # Epochs the checkpoint does not cover run again; their old records go.
        self.run_writer.keep_metrics_through(epoch)
        return epoch + 1

    def _checkpoint_state(self) -> dict[str, Any]:
        assert self.ctx is not None
        ctx = self.ctx
        plugins = {
            reg.name: reg.plugin.state_dict()
            for reg in self.registered
            if isinstance(reg.plugin, Callback)
        }
        return {
            "epoch": ctx.epoch,
            "step": ctx.step,
            "seed": self.seed,
            "models": {name: m.state_dict() for name, m in self.models.items()},
            "optimizer": self.optimizer.state_dict(),
            "loss_optimizer": (
                self.loss_optimizer.state_dict() if self.loss_optimizer is not None else None
            ),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "loss": self.loss_fn.state_dict(),
            "rng": capture_rng(),
            "control": ctx.control.state_dict(),
            "plugins": plugins,
            "metrics_before": dict(self.metrics_before),
        }

    def _save_checkpoint(self) -> Path:
        assert self.ctx is not None
        checkpoint = write_checkpoint(
            self.run_obj.checkpoint_dir, self.ctx.epoch, self._checkpoint_state()
        )
        self.log.info("checkpoint saved", epoch=self.ctx.epoch, path=str(checkpoint.path))
        return checkpoint.path

    def _train_epoch(self, epoch: int) -> float:
        assert self.ctx is not None and self.pm is not None
        ctx, hook = self.ctx, self.pm.hook
        optimizer, loss_optimizer = self.optimizer, self.loss_optimizer
        models = list(self.models.values())
        scheduler = self.scheduler if self.scheduler_step == "batch" else None
        device = self.device
        self.sampler.set_epoch(epoch)
        hook.finetuner_on_epoch_begin(
            ctx=ctx,
            event=EpochStarted(epoch=epoch, epochs=self.cfg.epochs, steps=self.steps_per_epoch),
        )
        batch_begin, batch_end = (
            hook.finetuner_on_train_batch_begin,
            hook.finetuner_on_train_batch_end,
        )
        for model in models:
            model.train()
        total, count = 0.0, 0
        for batch_index, batch in enumerate(self._batches()):
            size = len(batch)
            batch_begin(
                ctx=ctx,
                event=BatchStarted(
                    epoch=epoch, step=ctx.step, batch_index=batch_index, batch_size=size
                ),
            )
            optimizer.zero_grad(set_to_none=True)
            if loss_optimizer is not None:
                loss_optimizer.zero_grad(set_to_none=True)
            loss = self._batch_loss(batch, device)
            loss.backward()
            optimizer.step()
            if loss_optimizer is not None:
                loss_optimizer.step()
            if scheduler is not None:
                scheduler.step()
            value = float(loss.item())
            if not math.isfinite(value):
                raise FinetunerError(
                    f"the training loss became {value} at epoch {epoch + 1}, batch {batch_index + 1}; "
                    "lower the learning rate or check the data for extreme values."
                )
            ctx.step += 1
            total += value
            count += 1
            batch_end(
                ctx=ctx,
                event=BatchEnded(
                    epoch=epoch,
                    step=ctx.step,
                    batch_index=batch_index,
                    batch_size=size,
                    loss=value,
                    learning_rates=tuple(group["lr"] for group in optimizer.param_groups),
                ),
            )
            if ctx.control._take_evaluation_request():
                self._evaluate_and_publish("step", epoch, train_loss=total / count)
                for model in models:
                    model.train()
        return total / max(count, 1)

    def _batch_loss(self, batch: Batch, device: torch.device) -> torch.Tensor:
        """Embed each column of *batch* with its model and apply the loss the data form needs."""
        embeddings = [
            self.models[name](to_device(items, device))
            for name, items in zip(self.routes, batch.items)
        ]
        loss_fn, kind = self.loss_fn, self.train_data.kind
        if kind in ("scored", "triplets"):
            assert batch.scores is not None
            return loss_fn(*embeddings, batch.scores.to(device))
        if isinstance(loss_fn, PAIR_LOSSES["CLIPLoss"]):
            return loss_fn(*embeddings)
        assert batch.labels is not None
        labels = batch.labels.to(device)
        if len(embeddings) > 1:  # text-image pairs under a label-based loss: one pool of items
            labels = labels.repeat(len(embeddings))
        joined = torch.cat(embeddings) if len(embeddings) > 1 else embeddings[0]
        if self.miner is not None:
            return loss_fn(joined, labels, self.miner(joined, labels))
        return loss_fn(joined, labels)

    def _batches(self) -> Iterator[Batch]:
        return iterate_batches(self.train_data, self.sampler, self.collate, self.cfg.num_workers)

    def _validation_loss(self) -> float:
        assert self.eval_data is not None
        data = self.eval_data
        total, count = 0.0, 0
        sampler = self._build_sampler(data, seed=0)  # the same batches every time
        with evaluating(*self.models.values()):
            for batch in iterate_batches(data, sampler, self.collate, self.cfg.num_workers):
                total += float(self._batch_loss(batch, self.device).item())
                count += 1
        return total / max(count, 1)

    # --- metrics ----------------------------------------------------------------------------

    def _validate_declarations(self, returned: list[Any]) -> None:
        assert self.ctx is not None
        declarations: list[MetricDeclaration] = []
        for item in returned:
            if not isinstance(item, MetricDeclaration):
                raise PluginError(
                    f"finetuner_configure returned {item!r}; return a MetricDeclaration or None."
                )
            declarations.append(item)
        for reg in self.registered:
            if isinstance(reg.plugin, Callback):
                provides = tuple(reg.plugin.provided_metrics(self.ctx))
                monitors = tuple(reg.plugin.monitored_metrics(self.ctx))
                if provides or monitors:
                    declarations.append(
                        MetricDeclaration(source=reg.name, provides=provides, monitors=monitors)
                    )
        provided: dict[str, str] = {}
        for decl in declarations:
            for key in decl.provides:
                if key in ("train_loss", "val_loss"):
                    raise PluginError(
                        f"plugin '{decl.source}' declares '{key}', which the trainer provides.",
                        plugin=decl.source,
                    )
                if key in provided:
                    raise PluginError(
                        f"plugins '{provided[key]}' and '{decl.source}' both provide the metric '{key}'; "
                        "give one of them another caption or key prefix.",
                        plugin=decl.source,
                    )
                provided[key] = decl.source
        keys = [*provided, "train_loss"] + (["val_loss"] if self.eval_data is not None else [])
        aliases: dict[str, str] = {}
        for decl in declarations:
            for name in decl.monitors:
                if name in keys:
                    continue
                if name == "val_loss":
                    raise ConfigError(
                        f"{decl.source} monitors 'val_loss', which nothing provides: val_loss needs "
                        f"eval_data or val_split. Available keys: {', '.join(keys)}."
                    )
                matches = [k for k in provided if k.endswith("_" + name)]
                if len(matches) == 1:
                    aliases[name] = matches[0]
                    continue
                if len(matches) > 1:
                    raise ConfigError(
                        f"{decl.source} monitors '{name}', which several producers provide "
                        f"({', '.join(matches)}); monitor one full key."
                    )
                raise ConfigError(
                    f"{decl.source} monitors '{name}', which nothing provides. Available keys: "
                    f"{', '.join(keys)}.{close_matches_hint(name, keys)} Install or add the "
                    "callback that produces it (e.g. EvaluationCallback), or monitor another key."
                )
        self.ctx.metric_keys = tuple(keys)
        self.ctx._metric_aliases = aliases
        self._declared = set(provided)
        self._producers = tuple(sorted({decl.source for decl in declarations if decl.provides}))

    def _evaluate_and_publish(
        self,
        stage: Stage,
        epoch: int,
        *,
        train_loss: float | None = None,
        val_loss: float | None = None,
    ) -> dict[str, float]:
        assert self.ctx is not None and self.pm is not None
        ctx, hook = self.ctx, self.pm.hook
        self._phase = "evaluate"
        event = EvaluationRequested(stage=stage, epoch=epoch, step=ctx.step)
        with evaluating(*self.models.values()):
            results = hook.finetuner_evaluate(ctx=ctx, event=event)
        metrics: dict[str, float] = {}
        for result in results:
            if not isinstance(result, Mapping):
                raise PluginError(
                    f"a finetuner_evaluate implementation returned {type(result).__name__}; return a dict of floats."
                )
            for key, value in result.items():
                if key not in self._declared:
                    raise PluginError(
                        f"a producer returned the metric '{key}', which no plugin declared; declare it "
                        "in provided_metrics() (or a MetricDeclaration from finetuner_configure)."
                    )
                if key in metrics:
                    raise PluginError(f"the metric '{key}' was returned twice in one evaluation.")
                try:
                    metrics[key] = float(value)
                except (TypeError, ValueError):
                    raise PluginError(f"the metric '{key}' is {value!r}, not a number.") from None
        if train_loss is not None:
            metrics["train_loss"] = float(train_loss)
        if val_loss is not None:
            metrics["val_loss"] = float(val_loss)
        skipped, ctx._skipped = ctx._skipped, {}
        self.run_writer.append_metrics(stage, epoch, ctx.step, metrics, skipped=skipped)
        self._phase = "publish"
        published = MetricsPublished(
            stage=stage,
            epoch=epoch,
            step=ctx.step,
            metrics=frozen_mapping(metrics),
            producers=self._producers,
        )
        hook.finetuner_on_metrics(ctx=ctx, event=published)
        return metrics

    # --- helpers for ctx ----------------------------------------------------------------------

    def _encode(
        self, data: Any, *, model: str | None, batch_size: int, num_workers: int
    ) -> np.ndarray:
        name = model or MODEL_NAME
        if name not in self.models:
            raise ConfigError(
                f"no model named '{name}' in this fit; models: {', '.join(self.models)}."
            )
        modality = self.model_metas[name]["modality"]
        if isinstance(data, (list, tuple)) and data and not isinstance(data[0], (list, tuple)):
            values = encodable_values(data, modality)[
                0
            ]  # bare items: texts, image paths or tensors
        else:
            dataset = (
                data
                if isinstance(data, Dataset)
                else load_dataset(data, name="data", csv_options=self.cfg.csv_options)
            )
            values = dataset.column(modality if modality != TENSOR else None).columns[0].values
        return encode_items(
            self.models[name],
            self.preprocessors[name],
            values,
            batch_size=batch_size,
            device=self.device,
            num_workers=num_workers,
        )

    def _forward_log(self, level: str, message: str, logger: str, fields: dict[str, Any]) -> None:
        if self.pm is None or self.ctx is None:
            return
        self.pm.hook.finetuner_on_log(
            ctx=self.ctx,
            event=LogRecorded(
                level=level, message=message, logger=logger, fields=frozen_mapping(fields)
            ),
        )

    # --- endings ----------------------------------------------------------------------------

    def _export_onnx(self) -> dict[str, bytes]:
        """Each model exported to ONNX and checked against torch on a batch of the data."""
        from .onnx_export import export_onnx

        batch = self.train_data.take(list(range(min(4, len(self.train_data)))))
        exported = {}
        for name, items in zip(self.routes, batch.items):
            if name in exported:
                continue
            sample = self.preprocessors[name](items)
            exported[name] = export_onnx(self.models[name], sample)
            self.log.info("model exported to ONNX", model=name, size_bytes=len(exported[name]))
        return exported

    def _write_artifact(self, duration: float) -> Path:
        run = self.run_obj
        metadata = {
            "run_name": run.name,
            "experiment_name": run.experiment_name,
            "finetuner_version": __version__,
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "device": str(self.device),
            "duration_s": round(duration, 3),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "plugins": [
                {
                    "name": r.name,
                    "kind": r.kind,
                    "distribution": r.distribution,
                    "version": r.version,
                }
                for r in self.registered
            ],
        }
        return write_artifact(
            run.artifact_dir,
            models=self.models,
            model_metadata=self.model_metas,
            preprocessor_files={n: p.files() for n, p in self.preprocessors.items()},
            onnx=self._export_onnx() if self.cfg.to_onnx else None,
            config=dict(self.ctx.config) if self.ctx else {},
            metadata=metadata,
            metrics={"before": self.metrics_before, "after": self.metrics_after},
            examples=run.example_results(),
        )

    def _fail(self, exc: BaseException) -> None:
        plugin, hook_name = self.pm.culprit(exc) if self.pm is not None else (None, None)
        if plugin is None and isinstance(exc, PluginError):
            plugin, hook_name = exc.plugin, exc.hook
        reason = (
            _format_reason(exc)
            if not isinstance(exc, KeyboardInterrupt)
            else "interrupted (KeyboardInterrupt)"
        )
        if plugin is not None:
            try:
                exc.add_note(f"raised by plugin '{plugin}' in {hook_name}")
            except AttributeError:  # pragma: no cover - Python < 3.11
                pass
        try:
            self.run_writer.set_status(
                RunStatus.FAILED, reason=reason, plugin=plugin, hook=hook_name, phase=self._phase
            )
        except Exception:
            pass
        try:
            self.log.error(
                "run failed", reason=reason, plugin=plugin, hook=hook_name, phase=self._phase
            )
        except Exception:
            pass
        if self.pm is not None and self.ctx is not None:
            try:
                self.pm.hook.finetuner_on_exception(
                    ctx=self.ctx,
                    event=ExceptionRaised(
                        exception=exc, plugin=plugin, hook=hook_name, phase=self._phase
                    ),
                )
            except Exception as hook_exc:
                try:
                    self.log.error("finetuner_on_exception raised", error=_format_reason(hook_exc))
                except Exception:
                    pass


def _align_classes(evaluation: Dataset, train: Dataset) -> Dataset:
    """Re-code *evaluation*'s labels so equal labels share a code with *train*."""
    code = {label: i for i, label in enumerate(train.classes)}
    classes = list(train.classes)
    mapping = []
    for label in evaluation.classes:
        if label not in code:
            code[label] = len(classes)
            classes.append(label)
        mapping.append(code[label])
    labels = np.asarray(mapping, dtype=np.int64)[evaluation.labels]
    return dataclasses.replace(evaluation, labels=labels, classes=classes, _label_tensor=None)
