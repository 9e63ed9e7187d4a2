"""The ``finetuner`` command: the parser and :func:`main`.

Errors print as one ``error: ...`` line with a non-zero exit; ``--debug`` shows tracebacks.
Start-up stays fast: the parser is built from metadata and light modules, plugins' commands are
imported only when they run (:mod:`.plugin_commands`), and each command imports what it needs.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from .._version import __version__
from ..errors import FinetunerError, Terminated
from .commands import add_builtin_commands, add_store_commands
from .export import add_export_command
from .listing import add_plugins_command
from .mining import add_mine_command
from .plugin_commands import add_plugin_commands
from .report import add_report_command

__all__ = ["build_parser", "main"]


def _invoked_command(argv: Sequence[str]) -> str | None:
    """The command *argv* runs: its first argument that is not an option (the top-level
    options take no values)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of ``finetuner``, for the command line *argv* (without the program name).

    Every command is listed, those of plugins from metadata; only the plugin command that
    *argv* runs is imported and complete (``None``: none is).
    """
    parser = argparse.ArgumentParser(
        prog="finetuner", description="Fine-tune embedding models on your own machine."
    )
    parser.add_argument("--version", action="version", version=f"finetuner {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_builtin_commands(sub)
    add_plugins_command(sub)
    add_store_commands(sub)
    add_mine_command(sub)
    add_report_command(sub)
    add_export_command(sub)
    add_plugin_commands(sub, _invoked_command(argv or ()), builtin=set(sub.choices))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        args.debug = debug
        if not getattr(args, "handler", None):
            parser.print_help()
            return 0
        return int(args.handler(args) or 0)
    except FinetunerError as exc:
        if debug:
            traceback.print_exc()
        if _speaks():
            print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `finetuner runs | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Terminated:
        if _speaks():
            print("error: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        if _speaks():
            print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            traceback.print_exc()
        if not _speaks():
            return 1
        print(
            f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


def _speaks() -> bool:
    """Whether this process reports errors: in a distributed fit only rank 0 does (it names
    the rank that failed), so the terminal gets one line, not one per rank."""
    return os.environ.get("WORLD_SIZE", "1") in ("", "1") or os.environ.get("RANK", "0") == "0"
