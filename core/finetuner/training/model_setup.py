"""The models of a fit: the model, or both towers of a two-tower model, with their
preprocessors and the metadata the artifact needs to rebuild them.

:func:`plan_models` names the models and what each embeds before anything is built, so data of
the wrong kind fails fast (:func:`route_columns`); :func:`build_models` builds them, optionally
from an earlier run's artifact; :func:`check_forward` runs one small batch through them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..config import FitConfig
from ..data import IMAGE, TENSOR, Dataset
from ..encoding import evaluating, to_device
from ..errors import ConfigError, DataError, FinetunerError
from ..models import ModelSpec, Preprocessor, get_spec
from ..models.artifact import (
    BASE_FROM_FOLDER,
    ModelRecord,
    check_declared_model,
    load_model_records,
    load_record_weights,
)
from ..models.gradient_checkpointing import enable_gradient_checkpointing
from ..models.lora import count_parameters, inject_lora, resolve_lora
from .failure import format_reason

__all__ = ["MODEL_NAME", "ModelPlan", "ModelSet", "build_models", "check_forward", "plan_models"]

MODEL_NAME = "model"
"""The name of the model of a single-tower fit."""


@dataclass(frozen=True)
class ModelPlan:
    """What will be trained, known before anything is built: each model's name, display name
    (registry name or class name) and the modality it embeds."""

    spec: ModelSpec | None
    modalities: dict[str, str]
    display_names: dict[str, str]

    def route_columns(self, data: Dataset) -> list[str]:
        """Which model embeds each column of *data*: the model, or the tower of its modality."""
        return [self._taker(modality, data) for modality in data.modalities]

    def _taker(self, modality: str, data: Dataset) -> str:
        for name, takes in self.modalities.items():
            if takes == modality or (takes == IMAGE and modality == TENSOR):
                return name
        models = ", ".join(f"{self.display_names[n]} ({m})" for n, m in self.modalities.items())
        if len(self.modalities) == 1 and len(set(data.modalities)) > 1:
            hint = "text-image pairs need a two-tower model such as 'clip-base-en'."
        elif modality == TENSOR:
            hint = "tensors need a model taking tensors, e.g. 'mlp' or your own module."
        else:
            article = "an" if modality[0] in "aeiou" else "a"
            hint = f"{modality} items need {article} {modality} model (see finetuner.describe_models())."
        raise DataError(
            f"{data.source} holds {modality} items, but the model takes other inputs ({models}); {hint}"
        )


def plan_models(config: FitConfig) -> ModelPlan:
    """Name the model or its towers from *config* without building anything."""
    if not isinstance(config.model, str):
        name = type(config.model).__name__.lower()
        return ModelPlan(None, {MODEL_NAME: TENSOR}, {MODEL_NAME: name})
    spec = get_spec(config.model)
    if spec.towers:
        return ModelPlan(spec, dict(spec.towers), {name: name for name in spec.towers})
    return ModelPlan(spec, {MODEL_NAME: spec.modality}, {MODEL_NAME: spec.name})


@dataclass
class ModelSet:
    """The built models by name, with their preprocessors and artifact metadata."""

    plan: ModelPlan
    modules: dict[str, nn.Module] = field(default_factory=dict)
    preprocessors: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def first(self) -> nn.Module:
        return next(iter(self.modules.values()))

    def add(self, name: str, module: nn.Module, preprocessor: Any, meta: Mapping[str, Any]) -> None:
        self.modules[name] = module
        self.preprocessors[name] = preprocessor
        described = dict(meta)
        shape = described.pop("input_shape", None)
        described["class"] = f"{type(module).__module__}.{type(module).__qualname__}"
        described["input_shape"] = shape
        self.metadata[name] = described


def _adapter_metadata(module: nn.Module, base_from_folder: bool) -> dict[str, Any]:
    """What the artifact and the run log say of a LoRA model: where its base weights come
    from, and how many of its parameters train."""
    trainable, total = count_parameters(module)
    return {
        "kind": "lora",
        "base_weights": BASE_FROM_FOLDER if base_from_folder else "model.safetensors",
        "trainable_parameters": trainable,
        "total_parameters": total,
    }


def _build_registry_models(config: FitConfig, plan: ModelPlan, item_shape: Any) -> ModelSet:
    spec = plan.spec
    assert spec is not None
    options = spec.resolve_options(config.model_options, item_shape)
    built = spec.build(options)
    towers = dict(built.items()) if spec.towers else {MODEL_NAME: built}  # type: ignore[operator]
    models = ModelSet(plan)
    for name, module in towers.items():
        tower = name if spec.towers else None
        meta = {
            "registry_name": spec.name,
            "tower": tower,
            "modality": spec.modality_of(tower),
            "options": options,
            "input_shape": list(item_shape) if item_shape is not None else None,
        }
        if options.get("lora"):
            pretrained = bool(options.get("pretrained") and options.get("model_path"))
            meta["adapter"] = _adapter_metadata(module, base_from_folder=pretrained)
        models.add(name, module, spec.build_preprocessor(options, tower), meta)
    return models


def _own_module(config: FitConfig, plan: ModelPlan, item_shape: Any) -> ModelSet:
    if set(config.model_options) - {"lora"}:
        raise ConfigError(
            "model_options apply to registry models only (your own module takes 'lora' "
            "alone); configure your own torch.nn.Module when you create it."
        )
    module, options = config.model, {}
    if "lora" in config.model_options:
        options["lora"] = resolve_lora(config.model_options["lora"], model_type=None)
        inject_lora(module, options["lora"], model=plan.display_names[MODEL_NAME])
    models = ModelSet(plan)
    meta: dict[str, Any] = {
        "registry_name": None,
        "tower": None,
        "modality": TENSOR,
        "options": options,
        "input_shape": list(item_shape) if item_shape is not None else None,
    }
    if options:
        meta["adapter"] = _adapter_metadata(module, base_from_folder=False)
    models.add(MODEL_NAME, module, Preprocessor(), meta)
    return models


def _check_same_lora(record: ModelRecord, meta: Mapping[str, Any], artifact: Any) -> None:
    """The artifact's model was trained with the LoRA structure this fit builds, or none."""
    mine, theirs = meta["options"].get("lora"), record.lora
    if mine is None and theirs is not None:
        raise ConfigError(
            f"model_artifact '{artifact}' holds LoRA adapters; continue training them with "
            f"model_options={{'lora': {theirs}}} (and the model options it was trained with)."
        )
    if theirs is None and mine is not None:
        raise ConfigError(
            f"model_artifact '{artifact}' holds no LoRA adapters; drop 'lora' from "
            "model_options to continue training all of its weights."
        )
    same = ("r", "alpha", "target_modules")
    if mine and theirs and any(mine.get(k) != theirs.get(k) for k in same):
        raise ConfigError(
            f"model_artifact '{artifact}' was trained with lora "
            f"{ {k: theirs.get(k) for k in same} }, not { {k: mine.get(k) for k in same} }; "
            "pass the lora options it was trained with."
        )


def load_model_artifact(models: ModelSet, artifact: Any) -> None:
    """Start from the weights (and preprocessor files) of an earlier run's artifact."""
    records = {r.name: r for r in load_model_records(artifact)[0]}
    for name, module in models.modules.items():
        record = records.get(name)
        if record is None:
            raise ConfigError(
                f"model_artifact '{artifact}' holds {', '.join(records) or 'no model'}, not "
                f"'{name}'; continue training with the model the artifact was trained with."
            )
        meta = models.metadata[name]
        mine, theirs = meta.get("registry_name"), record.metadata.get("registry_name")
        if mine != theirs:
            raise ConfigError(
                f"model_artifact '{artifact}' was trained with model "
                f"'{theirs or record.metadata.get('class')}', not '{mine or meta['class']}'; "
                "pass that model."
            )
        _check_same_lora(record, meta, artifact)
        check_declared_model(record)
        load_record_weights(
            module,
            record,
            f"the weights of model_artifact '{artifact}' (trained with other model_options?) "
            "do not fit",
        )
        if "adapter" in meta and record.tensors:  # the base now comes from the artifact
            meta["adapter"]["base_weights"] = "model.safetensors"
        if record.files:
            spec = models.plan.spec
            assert spec is not None
            models.preprocessors[name] = spec.build_preprocessor(
                meta["options"], meta["tower"], record.files
            )


def build_models(
    config: FitConfig, plan: ModelPlan, train_data: Dataset, device: torch.device
) -> ModelSet:
    """Build the planned models for *train_data*'s items and move them to *device*."""
    item_shape = train_data.item_shape
    if plan.spec is not None:
        models = _build_registry_models(config, plan, item_shape)
    else:
        models = _own_module(config, plan, item_shape)
    if config.model_artifact is not None:
        load_model_artifact(models, config.model_artifact)
    for name, module in models.modules.items():
        if config.gradient_checkpointing:  # training only: the artifact rebuilds without it
            enable_gradient_checkpointing(module, plan.display_names[name])
        models.modules[name] = module.to(device)
    return models


def _forward_once(models: ModelSet, name: str, items: Any, device: torch.device) -> Any:
    shape = (
        f"items of shape {tuple(items.shape[1:])}"
        if isinstance(items, torch.Tensor)
        else f"{models.metadata[name]['modality']} items"
    )
    module = models.modules[name]
    try:
        with evaluating(module):
            out = module(to_device(models.preprocessors[name](items), device))
    except FinetunerError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"the model failed on a batch of train_data ({shape}): {format_reason(exc)}"
        ) from exc
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shown = f" of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else ""
        raise ConfigError(
            "the model must return a 2-D tensor of embeddings (batch, dim); it returned "
            f"{type(out).__name__}{shown}."
        )
    return out


def check_forward(models: ModelSet, routes: list[str], data: Dataset, device: torch.device) -> int:
    """Run a small batch of *data* through the model(s), so data/model mismatches fail before
    the run; records each model's ``output_dim`` and returns the embedding size."""
    batch = data.take(list(range(min(2, len(data)))))
    dims = set()
    for name, items in zip(routes, batch.items):
        out = _forward_once(models, name, items, device)
        models.metadata[name]["output_dim"] = int(out.shape[1])
        dims.add(int(out.shape[1]))
    if len(dims) > 1:
        raise ConfigError(
            f"the towers embed into different sizes ({', '.join(map(str, sorted(dims)))}); "
            "a two-tower model must embed both sides into one space."
        )
    common = dims.pop()
    for meta in models.metadata.values():
        meta.setdefault("output_dim", common)
    return int(models.metadata[routes[0]]["output_dim"])
