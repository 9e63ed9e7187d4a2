"""What the declarations of :class:`~.options.FitConfig` say, read for the rest of finetuner:
the options a resumed run must keep, what a run records in its config, and the rows of the
documentation's options table.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from .options import FIT_OPTIONS, FitConfig

__all__ = ["describe_data", "option_rows", "recorded_options", "resume_checked_options"]


def _extra(field: FieldInfo) -> Mapping[str, Any]:
    extra = field.json_schema_extra
    return extra if isinstance(extra, Mapping) else {}


def resume_checked_options() -> tuple[str, ...]:
    """The options a resumed run must keep: every recorded option but the data (compared by
    its fingerprint instead) and those marked free (epochs, callbacks, the device...)."""
    return tuple(
        name
        for name, field in FitConfig.model_fields.items()
        if _extra(field).get("resume") != "free"
        and _extra(field).get("record") not in ("data", False)
    )


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


def _recorded_value(value: Any, field: FieldInfo) -> Any:
    if _extra(field).get("record") == "data":
        return describe_data(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return dict(value)
    return value


def recorded_options(config: FitConfig, resolved: Mapping[str, Any]) -> dict[str, Any]:
    """The run's config record: every recorded option, in declaration order, with the values
    the trainer *resolved* (the batch size it chose, the seed it drew, ...) in place of the
    given ones, and data described rather than copied."""
    unknown = set(resolved) - set(FIT_OPTIONS)
    if unknown:
        raise ValueError(f"resolved values for unknown options: {', '.join(sorted(unknown))}")
    record: dict[str, Any] = {}
    for name, field in FitConfig.model_fields.items():
        if _extra(field).get("record") is False:
            continue
        if name in resolved:
            record[name] = resolved[name]
        else:
            record[name] = _recorded_value(getattr(config, name), field)
    return record


def _limits(field: FieldInfo) -> str:
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    parts = [
        f"{words[key]} {getattr(item, key)}"
        for item in field.metadata
        for key in words
        if getattr(item, key, None) is not None
    ]
    if field.annotation in (float, float | None) and parts:
        parts.append("finite")
    extra = _extra(field)
    if extra.get("limits"):
        parts.append(str(extra["limits"]))
    if extra.get("lr_limits"):
        parts.append(f"`lr` {_limits(FitConfig.model_fields['learning_rate'])}")
    return ", ".join(parts)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    return "`None`" if value is None else f"`{value!r}`"


def _on_resume(field: FieldInfo) -> str:
    extra = _extra(field)
    if extra.get("record") == "data":
        return "same data (fingerprint)"
    if extra.get("resume") == "free" or extra.get("record") is False:
        return "may change"
    return "must match"


def option_rows() -> list[dict[str, str]]:
    """One row per option for the documentation: name, default, limits, resume rule, meaning."""
    return [
        {
            "option": name,
            "default": _default(field),
            "limits": _limits(field),
            "on resume": _on_resume(field),
            "meaning": field.description or "",
        }
        for name, field in FitConfig.model_fields.items()
    ]
