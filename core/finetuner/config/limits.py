"""Limits of fit options that a pydantic bound on one field cannot say: the ``lr`` inside
the optimizer options (the same rule as ``learning_rate``), the CPU count for worker
processes, and the type of a folder option. :class:`~.options.FitConfig` applies them."""

from __future__ import annotations

import os
from typing import Annotated, Any

from pydantic import Strict, TypeAdapter, ValidationError

__all__ = ["check_lr", "check_path_option", "check_workers"]


def check_lr(options: dict[str, Any], bounds: list[Any]) -> dict[str, Any]:
    """*options* whose ``lr``, if any, is a finite number within *bounds* (those of
    ``learning_rate``)."""
    if "lr" not in options:
        return options
    try:
        TypeAdapter(Annotated[(float, Strict(), *bounds)]).validate_python(options["lr"])
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"]
        raise ValueError(
            f"'lr' {problem[0].lower()}{problem[1:]} (got {options['lr']!r}); 'lr' has the "
            "limits of learning_rate"
        ) from None
    return options


def check_workers(value: int) -> int:
    """*value* worker processes, if the machine has at least that many CPUs: more only cost
    memory (each worker is a process holding a copy of the data)."""
    cpus = os.cpu_count() or 1
    if value > cpus:
        raise ValueError(
            f"{value} worker processes are more than the {cpus} CPUs of this machine "
            f"(os.cpu_count()); use at most {cpus} (0 batches in the main process)"
        )
    return value


def check_path_option(value: Any) -> Any:
    """*value* if it is ``None`` or a path (pydantic's own message lists its union's parts)."""
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"expected a folder path (str or os.PathLike), got {type(value).__name__}")
    return value
