"""The options of :func:`finetuner.fit`: one declaration, :class:`FitConfig`, is their source.

Each option's type, default, limits and description are declared once, here. Everything else
reads them from :class:`FitConfig`: validation (Python API and config files) here, and in
:mod:`.declared` the options a resumed run must keep, what a run records in its config, and the
options table of the documentation.
A test checks that the signature of :func:`finetuner.fit` agrees with it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonDict

from ..data import as_csv_options
from ..errors import ConfigError, close_matches_hint
from .limits import check_lr, check_path_option, check_workers

__all__ = ["FIT_OPTIONS", "FitConfig", "format_validation_error", "validate_fit_options"]

# What the extra keys of an option's Field say (json_schema_extra):
#   resume: "free"    a resumed run may change it (it does not shape the model); every other
#                     recorded option must match, and the data must have the same fingerprint
#   record: "data"    recorded as a description of the data, not the data itself
#   record: False     not recorded in the run's config (a machine-local setting)
_MATCH: JsonDict = {"resume": "match"}
_FREE: JsonDict = {"resume": "free"}
_DATA: JsonDict = {"record": "data"}
_UNRECORDED: JsonDict = {"record": False}
#   limits: "..."     a limit the Field's own bounds cannot say, shown in the options table
#   lr_limits: True   the dict's 'lr' obeys the bounds of learning_rate (one rule for both)
_LR_LIMITS: JsonDict = {"lr_limits": True}

SEED_MAX = 2**32 - 1
"""The largest seed: numpy's generators take seeds below 2**32."""

_CONTAINER_OPTIONS = (
    "model_options",
    "loss_options",
    "miner_options",
    "optimizer_options",
    "scheduler_options",
    "loss_optimizer_options",
    "callbacks",
)


class FitConfig(BaseModel):
    """Every option of :func:`finetuner.fit`, with its type, default, limits and meaning."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)

    model: Any = Field(
        description="A registry name (`finetuner.describe_models()`: `mlp`, `resnet-base`, "
        "`sentence-transformers/all-MiniLM-L6-v2`, `clip-base-en`, ...), a local text model "
        "folder, or any `torch.nn.Module` mapping a batch to a `(batch, dim)` embedding tensor.",
        json_schema_extra=_MATCH,
    )
    train_data: Any = Field(
        description="A CSV file (path or open file; see `csv_options`), the name of a pushed or "
        "built-in data set, a docarray `DocList`, or a list of `(item, label)` pairs; items are "
        "tensors, texts or image paths.",
        json_schema_extra=_DATA,
    )
    eval_data: Any = Field(
        None,
        description="Data in the same forms; its loss is reported as `val_loss` each epoch.",
        json_schema_extra=_DATA,
    )
    val_split: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        allow_inf_nan=False,
        description="Fraction of `train_data` held out as validation data when `eval_data` is "
        "not given, stratified by class (whole queries for retrieval data).",
    )
    model_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Options of a registry model, e.g. `{'hidden_sizes': [128, 64]}`.",
    )
    loss: str = Field(
        "auto",
        description="`'auto'` (by the training data: `TripletMarginLoss` for labeled items, "
        "`MultipleNegativesRankingLoss` for retrieval data, `CLIPLoss` for text-image pairs, "
        "`CosineSimilarityLoss` for scored pairs, `MarginMSELoss` for triplets), a "
        "pytorch-metric-learning loss class name, or `CLIPLoss`, `CachedCLIPLoss`, "
        "`MultipleNegativesRankingLoss`, `CachedMultipleNegativesRankingLoss`, "
        "`CosineSimilarityLoss`, `MarginMSELoss`, `MatryoshkaLoss`; losses needing "
        "`num_classes` or `embedding_size` get them filled in.",
        json_schema_extra=_MATCH,
    )
    loss_options: dict[str, Any] = Field(default_factory=dict, description="Arguments of the loss.")
    miner: str | None = Field(
        None, description="A pytorch-metric-learning miner class name.", json_schema_extra=_MATCH
    )
    miner_options: dict[str, Any] = Field(
        default_factory=dict, description="Arguments of the miner."
    )
    optimizer: str = Field(
        "Adam", description="A `torch.optim` class name.", json_schema_extra=_MATCH
    )
    optimizer_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Arguments of the optimizer.",
        json_schema_extra=_LR_LIMITS,
    )
    learning_rate: float | None = Field(
        None,
        gt=0.0,
        le=10.0,
        allow_inf_nan=False,
        description="Overrides the `lr` of `optimizer_options`.",
        json_schema_extra=_MATCH,
    )
    epochs: int = Field(
        5,
        ge=0,
        le=100_000,
        strict=True,
        description="Passes over the training data.",
        json_schema_extra=_FREE,
    )
    batch_size: int | None = Field(
        None,
        ge=2,
        strict=True,
        description="Items per batch (default 32, at most the size of the data).",
        json_schema_extra=_MATCH,
    )
    scheduler: str | None = Field(
        None,
        description="`linear`, `cosine`, `cosine_with_restarts`, `polynomial`, `constant` or "
        "`constant_with_warmup`.",
        json_schema_extra=_MATCH,
    )
    scheduler_options: dict[str, Any] = Field(
        default_factory=dict,
        description="`num_warmup_steps`, `num_training_steps` (`'auto'`), `scheduler_step` "
        "(`'batch'` or `'epoch'`), `num_cycles`, `power`, `lr_end`.",
    )
    callbacks: list[Any] = Field(
        default_factory=list,
        description="Callback instances (`finetuner.callback.<Class>(...)`); in config files, "
        "names with their options.",
        json_schema_extra=_FREE,
    )
    device: str = Field(
        "auto",
        description="`'auto'` (CUDA when available, else Apple's MPS, else the CPU), `'cpu'`, "
        "`'cuda'`, `'cuda:N'`, ...",
        json_schema_extra=_FREE,
    )
    num_workers: int = Field(
        0,
        ge=0,
        strict=True,
        description="`DataLoader` worker processes for batching (0: in the main process); "
        "more than the machine's CPUs is refused.",
        json_schema_extra={"limits": "<= os.cpu_count()", **_FREE},
    )
    num_items_per_class: int = Field(
        4,
        ge=2,
        strict=True,
        description="Items of each class per batch for the class-balanced sampler.",
        json_schema_extra=_MATCH,
    )
    sampler: Literal["auto", "class", "no_duplicates", "random"] = Field(
        "auto",
        description="`'auto'` (no-duplicates batches for in-batch-negative losses such as "
        "MultipleNegativesRankingLoss on pairs or retrieval data, class-balanced for label "
        "losses on labeled data, random for classification-style losses such as ArcFace and "
        "otherwise), `'class'`, `'no_duplicates'` (no text or image twice in a batch) or "
        "`'random'`.",
        json_schema_extra=_MATCH,
    )
    run_name: str | None = Field(
        None, description="Name of the run (generated when not given).", json_schema_extra=_FREE
    )
    experiment_name: str | None = Field(
        None,
        description="The experiment that groups runs (`'default'`).",
        json_schema_extra=_FREE,
    )
    description: str | None = Field(
        None,
        description="A free-text note recorded in the run's config.",
        json_schema_extra=_FREE,
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=SEED_MAX,
        strict=True,
        description="Seed of every random number generator used (drawn and recorded when not "
        "given; a resumed run keeps its own).",
    )
    runs_dir: str | os.PathLike[str] | None = Field(
        None,
        description="The run store (default `$FINETUNER_RUNS_DIR` or `./finetuner-runs`).",
        json_schema_extra=_UNRECORDED,
    )
    csv_options: Any = Field(
        None, description="A `CSVOptions` (or a dict of its fields) for CSV data."
    )
    loss_optimizer: str | None = Field(
        None,
        description="A `torch.optim` class name for the loss's own parameters (e.g. the class "
        "centres of `ArcFaceLoss`); otherwise they train with the model's optimizer.",
    )
    loss_optimizer_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Arguments of the loss optimizer.",
        json_schema_extra=_LR_LIMITS,
    )
    model_artifact: str | os.PathLike[str] | None = Field(
        None,
        description="An artifact (folder or zip) of an earlier run of the same model: training "
        "starts from its weights.",
    )
    to_onnx: bool = Field(
        False,
        description="Also export each model to `model.onnx` in the artifact, checked against "
        'torch (needs `pip install "finetuner[onnx]"`).',
    )
    precision: Literal["32", "bf16", "16-mixed"] = Field(
        "32",
        description="`'32'` (float32), `'bf16'` (autocast to bfloat16 on the CPU or a GPU that "
        "supports it; weights and optimizer state stay float32) or `'16-mixed'` (CUDA autocast "
        "to float16 with a gradient scaler). Evaluation during the fit runs in it too; the "
        "artifact is always float32.",
    )
    accumulate_grad_batches: int = Field(
        1,
        ge=1,
        le=10_000,
        strict=True,
        description="Batches whose gradients are summed before each optimizer step; the "
        "scheduler and the step count follow optimizer steps. It does not add in-batch "
        "negatives: each batch's loss still sees only its own items.",
        json_schema_extra=_MATCH,
    )
    gradient_clip_norm: float | None = Field(
        None,
        gt=0.0,
        allow_inf_nan=False,
        description="Clip the gradients' total L2 norm to this value before each optimizer "
        "step (the norm before clipping is reported as `grad_norm` either way).",
    )
    gradient_clip_value: float | None = Field(
        None,
        gt=0.0,
        allow_inf_nan=False,
        description="Clip every gradient element into `[-value, value]` before each "
        "optimizer step.",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute activations in the backward pass instead of keeping them "
        "(Hugging Face backbones: text models and CLIP towers): less memory, slower steps.",
        json_schema_extra=_FREE,
    )
    layer_wise_lr_decay: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Transformer backbones: the top layer trains at the learning rate times "
        "this factor, each layer below at one more factor, the embeddings lowest; heads at the "
        "full rate.",
        json_schema_extra=_MATCH,
    )

    backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto",
        description="Under torchrun (or `finetuner fit --nproc N`): the process-group backend, "
        "`'auto'` (nccl on CUDA, gloo on the CPU), `'gloo'` or `'nccl'`. One process: unused.",
        json_schema_extra=_FREE,
    )
    gather_across_devices: bool = Field(
        False,
        description="In a distributed fit, in-batch-negative losses score each rank's queries "
        "against the documents of every rank, and label losses see the whole global batch; "
        "the gradients are those of one process on the global batch. One process: no effect.",
        json_schema_extra=_MATCH,
    )

    @field_validator(*_CONTAINER_OPTIONS, mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any, info: Any) -> Any:
        if value is None:
            return [] if info.field_name == "callbacks" else {}
        return value

    @field_validator("optimizer_options", "loss_optimizer_options")
    @classmethod
    def _lr_in_bounds(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_lr(value, cls.model_fields["learning_rate"].metadata)

    _workers_within_cpus = field_validator("num_workers")(check_workers)
    _runs_dir_is_a_path = field_validator("runs_dir", mode="before")(check_path_option)

    @field_validator("csv_options")
    @classmethod
    def _csv_options(cls, value: Any) -> Any:
        return as_csv_options(value)

    @field_validator("model")
    @classmethod
    def _model_kind(cls, value: Any) -> Any:
        if isinstance(value, str) or isinstance(value, torch.nn.Module):
            return value
        if isinstance(value, type) and issubclass(value, torch.nn.Module):
            raise ValueError(
                f"got the class {value.__name__}; pass an instance, e.g. {value.__name__}(...)"
            )
        raise ValueError(f"expected a model name or a torch.nn.Module, got {type(value).__name__}")

    @field_validator("precision", mode="before")
    @classmethod
    def _precision(cls, value: Any) -> Any:
        if value in (32, "32-true", "fp32"):  # a YAML `precision: 32` reads as a number
            return "32"
        if value in (16, "16", "fp16", "16-true"):
            raise ValueError("float16 trains only with a gradient scaler: use '16-mixed' (CUDA)")
        if value in ("bf16-mixed", "bfloat16"):
            return "bf16"
        return value

    @model_validator(mode="after")
    def _one_clipping(self) -> FitConfig:
        if self.gradient_clip_norm is not None and self.gradient_clip_value is not None:
            raise ValueError(
                "gradient_clip_norm and gradient_clip_value are both set; choose one way of "
                "clipping"
            )
        return self

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value == "auto":
            return value
        try:
            torch.device(value)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(
                f"'{value}' is not a device: use 'auto', 'cpu', 'cuda' or 'cuda:N'"
            ) from exc
        return value


FIT_OPTIONS: tuple[str, ...] = tuple(FitConfig.model_fields)


def format_validation_error(
    exc: ValidationError, *, source: str | None = None, lines: Mapping[str, int] | None = None
) -> str:
    """One readable message for a pydantic error: option, problem, given value, and for config
    files the file and line."""
    parts = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"]) or "(options)"
        top = str(error["loc"][0]) if error["loc"] else ""
        where = f"option '{loc}'"
        if source is not None:
            line = (lines or {}).get(top)
            where = f"{source}{f':{line}' if line else ''}: option '{loc}'"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown option." + close_matches_hint(top, FIT_OPTIONS)
            parts.append(f"{where}: {message}")
            continue
        given = error.get("input")
        shown = repr(given) if not isinstance(given, Mapping) and len(repr(given)) < 80 else None
        parts.append(f"{where}: {message}" + (f" (got {shown})" if shown is not None else ""))
    return "; ".join(parts)


def validate_fit_options(
    options: Mapping[str, Any], *, source: str | None = None, lines: Mapping[str, int] | None = None
) -> FitConfig:
    """Validate *options* into a :class:`FitConfig` or raise one clear ``ConfigError``."""
    try:
        return FitConfig(**options)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=source, lines=lines)) from None
