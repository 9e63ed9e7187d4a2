"""Fit options from a YAML config file, with errors that point at the file and line.

A config file holds the options of :func:`finetuner.fit`; data is named (a built-in data set),
and callbacks are listed by entry-point or class name with their options::

    model: mlp
    train_data: digits-train
    eval_data: digits-eval
    epochs: 3
    callbacks:
      - name: early-stopping
        monitor: val_loss
        patience: 2
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, FinetunerError, PluginError, close_matches_hint
from ..plugins import discover, first_party_callbacks, first_party_distribution, load
from .options import FIT_OPTIONS, FitConfig, validate_fit_options
from .yamlfile import read_yaml_file, top_level_lines

__all__ = ["load_fit_config"]


def _callback_lines(node: yaml.Node | None) -> list[int]:
    if not isinstance(node, yaml.MappingNode):
        return []
    for key, value in node.value:
        if key.value == "callbacks" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def _resolve_callback(spec: Any, where: str) -> Any:
    if isinstance(spec, str):
        name, options = spec, {}
    elif isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
        options = {k: v for k, v in spec.items() if k != "name"}
        name = spec["name"]
    else:
        raise ConfigError(
            f"{where}: a callback is a name or a mapping with a 'name' key and its options, "
            f"e.g. {{name: early-stopping, monitor: val_loss}}; got {spec!r}."
        )
    infos = discover().callbacks
    match = [i for i in infos if i.name == name or i.class_name == name]
    if not match:
        dist = first_party_distribution(name)
        if dist is not None:
            raise PluginError(
                f"{where}: callback '{name}' needs the distribution '{dist}'; install it with `pip install {dist}`."
            )
        known = sorted({*(i.name for i in infos), *(i.class_name or "" for i in infos)} - {""})
        raise ConfigError(
            f"{where}: unknown callback '{name}'; installed callbacks: {', '.join(known) or '(none)'}."
            f"{close_matches_hint(name, [*known, *(c.class_name for c in first_party_callbacks())])}"
        )
    info = load(match[0])
    if info.broken:
        raise PluginError(f"{where}: callback '{name}' is installed but broken: {info.error}")
    cls = info.obj
    try:
        return cls(**options)
    except TypeError as exc:
        accepted = [
            p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")
        ]
        bad = [k for k in options if k not in accepted]
        hint = close_matches_hint(bad[0], accepted) if bad else ""
        raise ConfigError(
            f"{where}: callback '{name}': {exc}. Its options are: {', '.join(accepted) or '(none)'}.{hint}"
        ) from None
    except FinetunerError as exc:
        raise ConfigError(f"{where}: callback '{name}': {exc}") from None


_PATH_OPTIONS = ("train_data", "eval_data", "model_artifact", "query_data", "index_data")


def _anchor_paths(value: Any, base: Path, key: str | None = None) -> Any:
    """Data files named relative to the config file are read from its folder (where a file of
    that name exists there), wherever the command runs from."""
    if isinstance(value, dict):
        return {k: _anchor_paths(v, base, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_anchor_paths(v, base, key) for v in value]
    if key in _PATH_OPTIONS and isinstance(value, str) and not os.path.isabs(value):
        candidate = base / value
        if candidate.exists():
            return str(candidate.absolute())
    return value


def load_fit_config(
    path: str | os.PathLike[str],
    overrides: Mapping[str, Any] | None = None,
    *,
    with_source: bool = False,
) -> Any:
    """Read and validate a YAML config file into a :class:`FitConfig`.

    With *with_source*, return ``(config, options)`` where *options* are the file's options
    with the overrides applied, as plain YAML values (what ``finetuner resume`` re-reads).
    """
    file = Path(path)
    raw, node, _ = read_yaml_file(file)
    if raw is None:
        raise ConfigError(f"{file}: the file is empty; it needs at least 'model' and 'train_data'.")
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{file}: expected a mapping of fit options at the top level, got {type(raw).__name__}."
        )
    lines = top_level_lines(node)
    # Unknown keys first: nothing else is looked at (no path resolved) in a file that is wrong.
    check_option_names(raw, origin=str(file), lines=lines)
    options = _anchor_paths(dict(raw), file.parent)
    options.update({k: v for k, v in (overrides or {}).items() if v is not None})
    config = fit_config_from_options(
        options, origin=str(file), lines=lines, callback_lines=_callback_lines(node)
    )
    return (config, options) if with_source else config


def check_option_names(
    options: Mapping[Any, Any], *, origin: str, lines: Mapping[str, int] | None = None
) -> None:
    """Raise a ConfigError at the first key of *options* that is not a fit option."""
    for key in options:
        if key not in FIT_OPTIONS:
            raise ConfigError(
                f"{origin}:{(lines or {}).get(str(key), '?')}: unknown option '{key}'."
                f"{close_matches_hint(str(key), FIT_OPTIONS)}"
            )


def fit_config_from_options(
    options: Mapping[str, Any],
    *,
    origin: str,
    lines: Mapping[str, int] | None = None,
    callback_lines: list[int] | None = None,
) -> FitConfig:
    """Validate plain (YAML) fit options; callbacks are given by name, with their options."""
    lines = lines or {}
    callback_lines = callback_lines or []
    check_option_names(options, origin=origin, lines=lines)
    resolved = dict(options)
    callbacks = resolved.get("callbacks") or []
    if not isinstance(callbacks, list):
        raise ConfigError(f"{origin}:{lines.get('callbacks', '?')}: 'callbacks' must be a list.")
    resolved["callbacks"] = [
        _resolve_callback(
            spec,
            f"{origin}:{callback_lines[i] if i < len(callback_lines) else lines.get('callbacks', '?')}",
        )
        for i, spec in enumerate(callbacks)
    ]
    for key in ("model", "train_data"):
        if key not in resolved:
            raise ConfigError(f"{origin}: the option '{key}' is required.")
    return validate_fit_options(resolved, source=origin, lines=lines)
