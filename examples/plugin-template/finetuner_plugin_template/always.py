"""An always-on plugin: a module whose functions are hook implementations."""

from __future__ import annotations

from typing import Any


def finetuner_on_fit_end(ctx: Any, event: Any) -> None:
    ctx.logger.info(f"template-always: run {event.run_name} finished in {event.duration_s:.1f} s")


def _hello(args: Any) -> int:
    print("hello from the plugin template")
    return 0


def finetuner_add_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser("template-hello", help="a command added by the plugin template")
    parser.set_defaults(handler=_hello)
