"""Reading the run store's JSON and JSON-lines files, while another process may be writing them.

JSON files are replaced atomically by their writers, so a read sees a whole file. JSON-lines
files only grow: a last line without its newline is one still being written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import RunError

__all__ = ["jsonl_records", "read_json"]


def read_json(path: Path, what: str) -> Any:
    """Parse the JSON file *path* (the *what* file, for messages); FileNotFoundError passes
    through."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise RunError(
            f"the {what} file {path} cannot be read ({exc.strerror or exc}); check that it is "
            "a file you may read."
        ) from exc
    except UnicodeDecodeError as exc:
        raise RunError(
            f"the {what} file {path} is not text ({exc.reason} at byte {exc.start}); it was "
            "damaged or changed outside finetuner."
        ) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunError(
            f"the {what} file {path} is not valid JSON ({exc}); it was changed outside finetuner."
        ) from exc


def jsonl_records(path: Path) -> Iterator[tuple[int, Any, str]]:
    """Yield ``(line number, parsed record or None, raw line)`` for each line of *path*.

    A missing file has no lines. A last line without its newline is still being written: it is
    yielded only when it parses.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise RunError(
            f"{path} cannot be read ({exc.strerror or exc}); check that it is a file you may read."
        ) from exc
    lines = data.split(b"\n")
    complete = lines[:-1]
    tail = lines[-1]
    for number, raw in enumerate(complete, start=1):
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        if not text.strip():
            continue
        try:
            yield number, json.loads(text), text
        except json.JSONDecodeError:
            yield number, None, text
    if tail.strip():
        text = tail.decode("utf-8", errors="replace")
        try:
            yield len(complete) + 1, json.loads(text), text
        except json.JSONDecodeError:
            pass
