"""Validation of ``fit``'s options, for the Python API and for config files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError

__all__ = ["FIT_OPTIONS", "FitConfig", "format_validation_error", "validate_fit_options"]


class FitConfig(BaseModel):
    """Every option of :func:`finetuner.fit`, with its type and range."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)

    model: Any
    train_data: Any
    eval_data: Any = None
    val_split: float = Field(0.0, ge=0.0, lt=1.0)
    model_options: dict[str, Any] = Field(default_factory=dict)
    loss: str = "TripletMarginLoss"
    loss_options: dict[str, Any] = Field(default_factory=dict)
    miner: str | None = None
    miner_options: dict[str, Any] = Field(default_factory=dict)
    optimizer: str = "Adam"
    optimizer_options: dict[str, Any] = Field(default_factory=dict)
    learning_rate: float | None = Field(None, gt=0.0, le=10.0)
    epochs: int = Field(5, ge=0, le=100_000, strict=True)
    batch_size: int | None = Field(None, ge=2, strict=True)
    scheduler: str | None = None
    scheduler_options: dict[str, Any] = Field(default_factory=dict)
    callbacks: list[Any] = Field(default_factory=list)
    device: str = "auto"
    num_workers: int = Field(0, ge=0, strict=True)
    num_items_per_class: int = Field(4, ge=2, strict=True)
    sampler: Literal["auto", "class", "random"] = "auto"
    run_name: str | None = None
    experiment_name: str | None = None
    description: str | None = None
    seed: int | None = Field(None, ge=0, strict=True)
    runs_dir: str | os.PathLike[str] | None = None
    csv_options: Any = None
    loss_optimizer: str | None = None
    loss_optimizer_options: dict[str, Any] = Field(default_factory=dict)
    model_artifact: str | os.PathLike[str] | None = None
    to_onnx: bool = False

    @field_validator("csv_options")
    @classmethod
    def _csv_options(cls, value: Any) -> Any:
        from .data import as_csv_options

        return as_csv_options(value)

    @field_validator("model")
    @classmethod
    def _model_kind(cls, value: Any) -> Any:
        import torch

        if isinstance(value, str) or isinstance(value, torch.nn.Module):
            return value
        if isinstance(value, type) and issubclass(value, torch.nn.Module):
            raise ValueError(
                f"got the class {value.__name__}; pass an instance, e.g. {value.__name__}(...)"
            )
        raise ValueError(f"expected a model name or a torch.nn.Module, got {type(value).__name__}")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        import torch

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
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            from .errors import close_matches_hint

            message = "unknown option" + close_matches_hint(top, FIT_OPTIONS)
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


def describe_data(data: Any) -> Any:
    """A JSON-friendly description of a data argument for the recorded config."""
    if data is None:
        return None
    if isinstance(data, (str, Path)):
        return str(data)
    kind = type(data).__name__
    try:
        size = len(data)
    except TypeError:
        size = None
    return {"type": kind, "size": size}
