"""The ``finetuner`` command line.

Errors print as one ``error: ...`` line with a non-zero exit; ``--debug`` shows tracebacks.
Plugins add sub-commands through the ``finetuner_add_commands`` hook.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from ._version import __version__
from .errors import FinetunerError

__all__ = ["main"]


def _cmd_fit(args: argparse.Namespace) -> int:
    from .config import load_fit_config
    from .training import Trainer

    overrides = {
        "runs_dir": args.runs_dir,
        "run_name": args.run_name,
        "experiment_name": args.experiment,
    }
    config, source = load_fit_config(args.config, overrides, with_source=True)
    run = Trainer(config, source=source).run()
    print(f"run '{run.name}' (experiment '{run.experiment_name}') finished: {run.path}")
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    import yaml

    from .config import fit_config_from_options
    from .errors import RunError
    from .runs import get_run
    from .training import Trainer

    run = get_run(args.run, experiment_name=args.experiment, runs_dir=args.runs_dir)
    source_file = run.path / "source.yml"
    if not source_file.is_file():
        raise RunError(
            f"run '{run.name}' was started from Python, so its data and model are not on record; "
            f"resume it from Python: finetuner.fit(<the same options>, resume='{run.name}')."
        )
    source = yaml.safe_load(source_file.read_text(encoding="utf-8")) or {}
    config = fit_config_from_options(source, origin=str(source_file))
    run = Trainer(config, resume=run).run()
    print(f"run '{run.name}' (experiment '{run.experiment_name}') finished: {run.path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run = run_demo(epochs=args.epochs, runs_dir=args.runs_dir)
    print(f"run '{run.name}' (experiment '{run.experiment_name}') finished: {run.path}")
    return 0


def plugin_rows() -> list[dict[str, Any]]:
    """Installed callbacks and always-on plugins, loaded, with their hooks and state."""
    from .plugins import disabled_names, discover, implemented_hooks, load

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


def _cmd_plugins(args: argparse.Namespace) -> int:
    rows = plugin_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="finetuner plugins")
    for column in ("name", "kind", "distribution", "version", "status", "hooks"):
        table.add_column(column, overflow="fold")
    for row in rows:
        status = row["status"] if row["status"] != "broken" else f"broken: {row['error']}"
        table.add_row(
            row["name"],
            row["kind"],
            row["distribution"] or "-",
            row["version"] or "-",
            status,
            ", ".join(row["hooks"]),
        )
    Console(soft_wrap=False).print(table)
    if not rows:
        print("no plugins installed")
    return 0


def _cmd_runs(args: argparse.Namespace) -> int:
    from .runs import get_run, list_runs

    if args.name:
        run = get_run(args.name, experiment_name=args.experiment, runs_dir=args.runs_dir)
        status = run.status()
        if args.json:
            print(
                json.dumps(
                    {
                        "name": run.name,
                        "experiment": run.experiment_name,
                        "status": status,
                        "metrics": run.metrics(),
                    },
                    indent=2,
                )
            )
            return 0
        print(f"run:        {run.name}")
        print(f"experiment: {run.experiment_name}")
        print(
            f"status:     {status['status']}"
            + (f" ({status.get('reason')})" if status.get("reason") else "")
        )
        print(f"path:       {run.path}")
        run.display_metrics()
        return 0
    runs = list_runs(experiment_name=args.experiment, runs_dir=args.runs_dir)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": r.name,
                        "experiment": r.experiment_name,
                        "status": r.status()["status"],
                    }
                    for r in runs
                ],
                indent=2,
            )
        )
        return 0
    if not runs:
        print("no runs yet")
        return 0
    for run in runs:
        status = run.status()
        print(
            f"{run.experiment_name}/{run.name}  {status['status']}  {status.get('created_at') or ''}"
        )
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import describe_models

    rows = describe_models(task=args.task, print_table=not args.json)
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from .data import CSVOptions, delete_data, list_data, push_data

    if args.action == "push":
        options = CSVOptions(is_labeled=args.labeled, encoding=args.encoding)
        path = push_data(args.name, args.file, csv_options=options, overwrite=args.overwrite)
        print(f"Pushed '{args.name}' ({path})")
    elif args.action == "delete":
        delete_data(args.name)
        print(f"Deleted '{args.name}'")
    else:
        rows = list_data()
        if args.json:
            print(json.dumps(rows, indent=2))
        elif not rows:
            print("No pushed data sets (push one with: finetuner data push NAME FILE.csv).")
        for row in rows if not args.json else []:
            print(
                f"{row['name']}  {row['kind']}  {row['size']} rows  "
                f"{'/'.join(row['modalities'])}  pushed {row['pushed_at']}"
            )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finetuner", description="Fine-tune embedding models on your own machine."
    )
    parser.add_argument("--version", action="version", version=f"finetuner {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    fit = sub.add_parser("fit", help="fine-tune with the options of a YAML config file")
    fit.add_argument("config", help="YAML file with fit options")
    fit.add_argument(
        "--runs-dir", help="run store folder (default: $FINETUNER_RUNS_DIR or ./finetuner-runs)"
    )
    fit.add_argument("--run-name", help="name of the run (overrides the file)")
    fit.add_argument("--experiment", help="experiment name (overrides the file)")
    fit.set_defaults(handler=_cmd_fit)

    resume = sub.add_parser("resume", help="continue an interrupted run from its last checkpoint")
    resume.add_argument("run", help="name of the run")
    resume.add_argument("--experiment")
    resume.add_argument("--runs-dir")
    resume.set_defaults(handler=_cmd_resume)

    demo = sub.add_parser("demo", help="fine-tune a small model on the built-in digits data")
    demo.add_argument("--epochs", type=int, default=5)
    demo.add_argument("--runs-dir")
    demo.set_defaults(handler=_cmd_demo)

    plugins = sub.add_parser("plugins", help="list installed callbacks and always-on plugins")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.set_defaults(handler=_cmd_plugins)

    runs = sub.add_parser("runs", help="list runs, or show one with its status and metrics")
    runs.add_argument("name", nargs="?", help="a run name to show")
    runs.add_argument("--experiment")
    runs.add_argument("--runs-dir")
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(handler=_cmd_runs)

    models = sub.add_parser("models", help="list the backbones of the model registry")
    models.add_argument("--task")
    models.add_argument("--json", action="store_true")
    models.set_defaults(handler=_cmd_models)

    data = sub.add_parser("data", help="push, list and delete named data sets")
    actions = data.add_subparsers(dest="action", metavar="ACTION", required=True)
    push = actions.add_parser("push", help="store a CSV file under a name")
    push.add_argument("name")
    push.add_argument("file", help="a CSV file")
    push.add_argument("--labeled", action="store_true", help="rows are item,label")
    push.add_argument("--encoding", default="utf-8")
    push.add_argument("--overwrite", action="store_true")
    listing = actions.add_parser("list", help="list pushed data sets")
    listing.add_argument("--json", action="store_true")
    delete = actions.add_parser("delete", help="delete a pushed data set")
    delete.add_argument("name")
    data.set_defaults(handler=_cmd_data)

    _add_plugin_commands(sub)
    return parser


def _command_holders(obj: Any) -> list[Any]:
    """Where a plugin's module-level ``finetuner_add_commands`` may live: the entry point's
    module itself, or, for a class, its module and then its top-level package."""
    if not isinstance(obj, type):
        return [obj]
    module = getattr(obj, "__module__", "") or ""
    names = [module, module.split(".")[0]]
    return [sys.modules[name] for name in dict.fromkeys(names) if name in sys.modules]


def _add_plugin_commands(sub: Any) -> None:
    """Let installed plugins add sub-commands (finetuner_add_commands)."""
    from .plugins import FinetunerPluginManager, disabled_names, discover, load

    pm = FinetunerPluginManager()
    blocked = disabled_names()
    for info in discover().all():
        if info.matches(blocked):
            continue
        load(info, warn=False)
        if info.broken:
            continue
        for holder in _command_holders(info.obj):
            if callable(getattr(holder, "finetuner_add_commands", None)):
                if pm.get_plugin(info.name) is None and not pm.is_registered(holder):
                    pm.register(holder, name=info.name)
                break
    pm.hook.finetuner_add_commands(subparsers=sub)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "handler", None):
            parser.print_help()
            return 0
        return int(args.handler(args) or 0)
    except FinetunerError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `finetuner runs | head`: the reader left, nothing to report
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            traceback.print_exc()
        print(
            f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
