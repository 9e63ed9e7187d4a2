"""``finetuner plugins``: the installed callbacks and always-on plugins, and their state.

One line per plugin (name, kind, distribution and version, status) that fits the terminal (80
columns when the output is not one); a broken plugin's error follows on an indented line, and
``--verbose`` adds each plugin's entry point and hooks. ``--json`` prints every field.
"""

from __future__ import annotations

import argparse
import json
import shutil
import textwrap
from collections.abc import Sequence
from typing import Any

from ..plugins.discovery import disabled_names, discover, implemented_hooks, load

__all__ = ["add_plugins_command", "format_plugin_rows", "plugin_rows"]

_KIND_WIDTH = len("always-on")
_MIN_NAME_WIDTH = 20
_GAP = "  "
_INDENT = "    "


def plugin_rows() -> list[dict[str, Any]]:
    """Installed callbacks and always-on plugins, loaded, with their hooks and state."""
    blocked = disabled_names()
    rows = []
    for info in discover().all():
        load(info, warn=False)
        rows.append(
            {
                "name": info.name,
                "kind": info.kind,
                "object": info.value,
                "distribution": info.distribution,
                "version": info.version,
                "hooks": implemented_hooks(info.obj) if not info.broken else [],
                "status": "broken"
                if info.broken
                else ("disabled" if info.matches(blocked) else "ok"),
                "error": info.error,
            }
        )
    return rows


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _column_widths(
    names: list[str], dists: list[str], statuses: list[str], width: int
) -> tuple[int, int]:
    """Widths of the name and distribution columns so that a line fits in *width*."""
    status_width = max(len("status"), *(len(s) for s in statuses))
    room = width - _KIND_WIDTH - status_width - 3 * len(_GAP)
    name_width = max(len("name"), *(len(n) for n in names))
    dist_width = max(len("distribution"), *(len(d) for d in dists))
    if name_width + dist_width > room:
        # Cut names before distributions, but keep 20 columns of them: a name's start is what
        # tells plugins apart, while a cut version number says nothing.
        dist_width = max(min(dist_width, room - min(name_width, _MIN_NAME_WIDTH)), 1)
        name_width = max(room - dist_width, 1)
    return name_width, dist_width


def _detail(label: str, text: str, width: int) -> list[str]:
    return textwrap.wrap(
        f"{label}{text}",
        width=max(width, 20),
        initial_indent=_INDENT,
        subsequent_indent=_INDENT + " " * len(label),
        break_on_hyphens=False,
    )


def format_plugin_rows(
    rows: Sequence[dict[str, Any]], *, width: int = 80, verbose: bool = False
) -> list[str]:
    """The lines ``finetuner plugins`` prints for *rows*, none longer than *width*."""
    dists = [" ".join(filter(None, (row["distribution"], row["version"]))) or "-" for row in rows]
    name_width, dist_width = _column_widths(
        [row["name"] for row in rows], dists, [row["status"] for row in rows], width
    )

    def line(name: str, kind: str, dist: str, status: str) -> str:
        cells = [
            _cut(name, name_width).ljust(name_width),
            kind.ljust(_KIND_WIDTH),
            _cut(dist, dist_width).ljust(dist_width),
            status,
        ]
        return _cut(_GAP.join(cells).rstrip(), width)

    lines = [line("name", "kind", "distribution", "status")]
    for row, dist in zip(rows, dists):
        lines.append(line(row["name"], row["kind"], dist, row["status"]))
        if row["error"]:
            lines += _detail("", row["error"], width)
        if verbose:
            lines += _detail("entry point: ", row["object"], width)
            if not row["error"]:
                lines += _detail("hooks: ", ", ".join(row["hooks"]) or "(none)", width)
    return lines


def _cmd_plugins(args: argparse.Namespace) -> int:
    rows = plugin_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no plugins installed")
        return 0
    width = shutil.get_terminal_size((80, 24)).columns
    print("\n".join(format_plugin_rows(rows, width=width, verbose=args.verbose)))
    return 0


def add_plugins_command(sub: Any) -> None:
    plugins = sub.add_parser("plugins", help="list installed callbacks and always-on plugins")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.add_argument(
        "-v", "--verbose", action="store_true", help="also show entry points and hooks"
    )
    plugins.set_defaults(handler=_cmd_plugins)
