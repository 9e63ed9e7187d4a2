"""Optimizers by name (``torch.optim``) and learning-rate schedulers with warmup."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from ..errors import ConfigError, close_matches_hint
from .option_values import check_option_types, is_number

__all__ = ["SCHEDULERS", "build_optimizer", "build_scheduler", "optimizer_names"]

SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
)
_SCHEDULER_OPTIONS = {
    "num_warmup_steps",
    "num_training_steps",
    "scheduler_step",
    "num_cycles",
    "power",
    "lr_end",
}


def optimizer_names() -> list[str]:
    return sorted(
        name
        for name, obj in vars(torch.optim).items()
        if isinstance(obj, type)
        and issubclass(obj, torch.optim.Optimizer)
        and obj is not torch.optim.Optimizer
    )


def validate_optimizer_name(name: str) -> str:
    names = optimizer_names()
    if name not in names:
        raise ConfigError(
            f"unknown optimizer '{name}'; torch.optim optimizers are: {', '.join(names)}."
            f"{close_matches_hint(name, names)}"
        )
    return name


def validate_scheduler(name: str, options: Mapping[str, Any]) -> None:
    if name not in SCHEDULERS:
        raise ConfigError(
            f"unknown scheduler '{name}'; schedulers are: {', '.join(SCHEDULERS)}."
            f"{close_matches_hint(name, SCHEDULERS)}"
        )
    for key in options:
        if key not in _SCHEDULER_OPTIONS:
            raise ConfigError(
                f"scheduler_options: unknown option '{key}'; options are "
                f"{', '.join(sorted(_SCHEDULER_OPTIONS))}.{close_matches_hint(key, _SCHEDULER_OPTIONS)}"
            )
    step = options.get("scheduler_step", "batch")
    if step not in ("batch", "epoch"):
        raise ConfigError(
            f"scheduler_options: scheduler_step must be 'batch' or 'epoch', not {step!r}."
        )
    warmup = options.get("num_warmup_steps", 0)
    if not is_number(warmup) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError("scheduler_options: num_warmup_steps must be a non-negative integer.")
    total = options.get("num_training_steps", "auto")
    if total != "auto" and (not is_number(total) or not isinstance(total, int) or total < 1):
        raise ConfigError(
            "scheduler_options: num_training_steps must be 'auto' or a positive integer."
        )
    for key in ("num_cycles", "power", "lr_end"):
        value = options.get(key, 1.0)
        if not is_number(value) or not math.isfinite(value) or value < 0:
            raise ConfigError(
                f"scheduler_options: {key} must be a finite number of at least 0, not {value!r}."
            )


_FUSABLE = frozenset({"Adam", "AdamW"})


def _fusable(name: str, groups: list[Any], kwargs: Mapping[str, Any]) -> bool:
    """Adam and AdamW on float parameters on the CPU or CUDA, unless the user chose."""
    if name not in _FUSABLE or {"fused", "foreach", "differentiable", "capturable"} & set(kwargs):
        return False
    params = [
        p for group in groups for p in (group["params"] if isinstance(group, dict) else [group])
    ]
    return bool(params) and all(
        isinstance(p, torch.Tensor) and p.is_floating_point() and p.device.type in ("cpu", "cuda")
        for p in params
    )


def _check_optimizer_keys(name: str, options: Mapping[str, Any], option: str) -> None:
    """Every key of *options* is an argument of the optimizer *name*."""
    accepted = [
        p for p in inspect.signature(getattr(torch.optim, name)).parameters if p != "params"
    ]
    for key in options:
        if key not in accepted:
            raise ConfigError(
                f"{option}: {name} has no option {key!r}; its options are "
                f"{', '.join(accepted)}.{close_matches_hint(str(key), accepted)}"
            )


def build_optimizer(
    name: str,
    param_groups: Iterable[Any],
    options: Mapping[str, Any],
    learning_rate: float | None,
    *,
    option: str = "optimizer_options",
) -> torch.optim.Optimizer:
    validate_optimizer_name(name)
    _check_optimizer_keys(name, options, option)
    check_option_types(getattr(torch.optim, name), options, option)
    kwargs = dict(options)
    if learning_rate is not None:
        kwargs["lr"] = learning_rate
    groups = list(param_groups)
    if _fusable(name, groups, kwargs):
        # One fused kernel for all parameters instead of a loop over them: on CPU the
        # per-parameter Adam step was 18% of a MiniLM training step (15-20 ms fused vs 130-170).
        try:
            return getattr(torch.optim, name)(groups, **kwargs, fused=True)
        except (RuntimeError, TypeError, ValueError):
            pass  # a device or dtype the fused kernel does not take: the plain step
    try:
        return getattr(torch.optim, name)(groups, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{option} for {name} are invalid: {exc}") from exc


def _lambda(
    name: str, warmup: int, total: int, options: Mapping[str, Any], base_lr: float
) -> Callable[[int], float]:
    cycles = float(options.get("num_cycles", 0.5 if name == "cosine" else 1))
    power = float(options.get("power", 1.0))
    lr_end = float(options.get("lr_end", 1e-7))

    def factor(step: int) -> float:
        if name == "constant":
            return 1.0
        if step < warmup:
            return step / max(1, warmup)
        if name == "constant_with_warmup":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if name == "linear":
            return max(0.0, 1.0 - progress)
        if name == "cosine":
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * cycles * 2.0 * progress)))
        if name == "cosine_with_restarts":
            if progress >= 1.0:
                return 0.0
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0))))
        # polynomial decay from base_lr to lr_end
        if base_lr <= 0:
            return 0.0
        end = lr_end / base_lr
        return (1.0 - end) * (1.0 - progress) ** power + end

    return factor


def build_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    options: Mapping[str, Any],
    *,
    steps_per_epoch: int,
    epochs: int,
) -> tuple[torch.optim.lr_scheduler.LambdaLR, str]:
    """Return the scheduler and when it steps (``"batch"`` or ``"epoch"``)."""
    validate_scheduler(name, options)
    step_on = options.get("scheduler_step", "batch")
    total = options.get("num_training_steps", "auto")
    if total == "auto":
        total = epochs * (steps_per_epoch if step_on == "batch" else 1)
    warmup = int(options.get("num_warmup_steps", 0))
    base_lr = float(optimizer.param_groups[0]["lr"])
    lambdas = _lambda(name, warmup, int(total), options, base_lr)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas), step_on
