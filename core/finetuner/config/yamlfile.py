"""YAML files that finetuner reads as configuration (``finetuner fit CONFIG``, a run's
``source.yml``), read defensively: every fault is one :class:`~finetuner.errors.ConfigError`
naming the file (and the line where there is one).

* The file must be UTF-8 text of at most :data:`MAX_CONFIG_BYTES`; binary files (a NUL byte)
  and other encodings are refused by name.
* Aliases (``*name``) may add at most :data:`ALIAS_NODE_BUDGET` nodes to the document as it
  is read: a "billion laughs" of nested aliases is refused before anything walks it.
* A key given twice in one mapping is an error naming both lines (YAML would silently keep
  the last one).
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path
from typing import Any

import yaml

from .._yaml import ALIAS_NODE_BUDGET, RefusedYAML, load_bounded
from ..errors import ConfigError

__all__ = ["ALIAS_NODE_BUDGET", "MAX_CONFIG_BYTES", "read_yaml_file", "top_level_lines"]

MAX_CONFIG_BYTES = 10 * 1024 * 1024
"""A config file holds options, not data: 10 MiB is far above any real one."""


def _text(file: Path) -> str:
    """The text of the config *file*, or a ConfigError saying why it cannot be one."""
    if file.is_dir():
        raise ConfigError(f"'{file}' is a folder, not a config file; pass the YAML file's path.")
    if not file.is_file():
        raise ConfigError(f"config file '{file}' does not exist.")
    try:
        size = file.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{file}: {size} bytes is too large for a config file (at most "
                f"{MAX_CONFIG_BYTES}); a config file holds options, data goes in its own files."
            )
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the config file '{file}': {exc.strerror}.") from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ConfigError(f"{file}: this is UTF-16 text; save the config file as UTF-8.")
    if b"\x00" in data:
        raise ConfigError(
            f"{file}: this is a binary file (it holds NUL bytes), not a YAML config file."
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{file}:{line}: not UTF-8 text (byte {data[exc.start : exc.start + 1]!r}); save "
            "the config file as UTF-8."
        ) from None


def read_yaml_file(path: str | os.PathLike[str]) -> tuple[Any, yaml.Node | None, str]:
    """The value of the YAML file *path*, its node graph (for line numbers; ``None`` for an
    empty file) and its text."""
    file = Path(path)
    text = _text(file)
    try:
        value, node = load_bounded(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        what = "" if isinstance(exc, RefusedYAML) else "not valid YAML: "
        raise ConfigError(f"{file}{line}: {what}{problem}.") from None
    except RecursionError:
        raise ConfigError(
            f"{file}: its values are nested too deeply to read; a config file's options are "
            "a few levels deep."
        ) from None
    return value, node, text


def top_level_lines(node: yaml.Node | None) -> dict[str, int]:
    """Line number (1-based) of each top-level key of the document *node*."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(key.value): key.start_mark.line + 1 for key, _ in node.value}
