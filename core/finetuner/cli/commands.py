"""The built-in commands of ``finetuner``: their arguments and what they do.

Each command's heavy modules (the trainer, torch, the model registry) are imported inside its
handler, so that building the parser, ``finetuner --help`` and ``finetuner runs`` stay fast.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import ConfigError, RunError

__all__ = ["add_builtin_commands", "add_store_commands"]


def _relaunched(args: argparse.Namespace, argv: list[str]) -> int | None:
    """With ``--nproc N`` (N > 1): the command run as N ranks, and their exit status."""
    from .launch import check_nproc, launch

    check_nproc(args.nproc)
    if args.nproc == 1:
        return None
    for flag, value in (("--runs-dir", args.runs_dir), ("--experiment", args.experiment)):
        if value:
            argv += [flag, value]
    return launch(args.nproc, argv, debug=args.debug)


def _finished(run: Any) -> int:
    from ..distributed import is_main_process

    if is_main_process():  # one line for the whole distributed fit
        print(f"run '{run.name}' (experiment '{run.experiment_name}') finished: {run.path}")
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    argv = ["fit", args.config] + (["--run-name", args.run_name] if args.run_name else [])
    status = _relaunched(args, argv)
    if status is not None:
        return status
    from ..config import load_fit_config
    from ..training import Trainer

    overrides = {
        "runs_dir": args.runs_dir,
        "run_name": args.run_name,
        "experiment_name": args.experiment,
    }
    config, source = load_fit_config(args.config, overrides, with_source=True)
    try:
        return _finished(Trainer(config, source=source).run())
    except ConfigError as exc:
        raise _located(exc, args.config) from exc


def _located(exc: ConfigError, path: str) -> ConfigError:
    """*exc*, found when the fit set up an option of the config file at *path* (its message
    starts ``loss_options: ...``), pointing at the file and the option's line."""
    from ..config import FIT_OPTIONS
    from ..config.yamlfile import read_yaml_file, top_level_lines

    option = str(exc).split(":", 1)[0]
    if option not in FIT_OPTIONS:
        return exc
    try:
        line = top_level_lines(read_yaml_file(path)[1]).get(option)
    except ConfigError:  # the file was read once already; this only adds its line
        line = None
    return ConfigError(f"{path}{f':{line}' if line else ''}: {exc}")


def _cmd_resume(args: argparse.Namespace) -> int:
    status = _relaunched(args, ["resume", args.run])
    if status is not None:
        return status
    from ..config import fit_config_from_options
    from ..config.yamlfile import read_yaml_file, top_level_lines
    from ..runs import get_run
    from ..runs.layout import SOURCE_FILE
    from ..training import Trainer

    run = get_run(args.run, experiment_name=args.experiment, runs_dir=args.runs_dir)
    source_file = run.path / SOURCE_FILE
    if not source_file.is_file():
        raise RunError(
            f"run '{run.name}' was started from Python, so its data and model are not on record; "
            f"resume it from Python: finetuner.fit(<the same options>, resume='{run.name}')."
        )
    source, node, _ = read_yaml_file(source_file)
    if not isinstance(source, dict):
        raise RunError(
            f"{source_file}: expected the mapping of fit options the run was started with, "
            f"got {type(source).__name__}; the file was edited or damaged."
        )
    config = fit_config_from_options(source, origin=str(source_file), lines=top_level_lines(node))
    return _finished(Trainer(config, resume=run).run())


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    run = run_demo(epochs=args.epochs, runs_dir=args.runs_dir, text=args.text)
    if args.text:
        metrics = run.metrics()
        for stage in ("before", "after"):
            value = metrics.get(stage, {}).get("minilm_ndcg_at_k")
            if value is not None:
                print(f"nDCG at 10 on the held-back queries, {stage} fine-tuning: {value:.4f}")
    print(f"run '{run.name}' (experiment '{run.experiment_name}') finished: {run.path}")
    return 0


def _cmd_runs(args: argparse.Namespace) -> int:
    # Here, not at the top: the run store's module is a tenth of `finetuner --help`'s start-up.
    from ..runs import get_run
    from ..runs.store import list_runs_with_status

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
        print(f"status:     {_shown_state(_row(run, status))}{_status_detail(status)}")
        print(f"path:       {run.path}")
        run.display_metrics()
        return 0
    # each status read once: listing 10,000 runs reads 10,000 small files, not 20,000
    rows = [_row(r, s) for r, s in list_runs_with_status(args.experiment, args.runs_dir)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no runs yet")
        return 0
    for row in rows:
        print(f"{row['experiment']}/{row['name']}  {_shown_state(row)}  {row['created_at'] or ''}")
    return 0


def _row(run: Any, status: dict[str, Any] | None) -> dict[str, Any]:
    """One run of ``finetuner runs`` from its *status* (``None`` where it could not be read);
    a run whose status cannot be read is listed with the error, so one damaged run does not
    hide the others."""
    row = {"name": run.name, "experiment": run.experiment_name, "status": "UNREADABLE"}
    try:
        status = status if status is not None else run.status()  # run.status() names the fault
    except RunError as exc:
        return {**row, "stale": False, "created_at": None, "error": str(exc)}
    row.update(status=status["status"], stale=bool(status.get("stale")), error=None)
    row.update(created_at=status.get("created_at"), pid=status.get("pid"))
    return row


def _shown_state(row: dict[str, Any]) -> str:
    if row["error"]:
        return f"UNREADABLE ({row['error']})"
    if row["stale"]:
        return f"STARTED, stale (its process {row['pid']} is gone: resume or delete it)"
    return str(row["status"])


def _status_detail(status: dict[str, Any]) -> str:
    """What follows the status word: a failure's reason, or why training stopped early."""
    if status.get("reason"):
        return f" ({status['reason']})"
    if status.get("stop_reason"):
        by = f" by {status['stopped_by']}" if status.get("stopped_by") else ""
        epochs = status.get("epochs_completed")
        after = f" after {epochs} epoch{'s' * (epochs != 1)}" if epochs is not None else ""
        return f" (stopped early{after}{by}: {status['stop_reason']})"
    return ""


def _cmd_models(args: argparse.Namespace) -> int:
    from ..models import describe_models

    rows = describe_models(task=args.task, print_table=not args.json)
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from ..data import CSVOptions, delete_data, list_data, push_data

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


def _add_nproc(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="train in N processes on this machine (torch's elastic launcher, as torchrun "
        "--standalone --nproc-per-node N); batch_size is per process",
    )


def add_builtin_commands(sub: Any) -> None:
    """Add the core's commands (all but ``plugins``, see :mod:`.listing`) to *sub*."""
    fit = sub.add_parser("fit", help="fine-tune with the options of a YAML config file")
    fit.add_argument("config", help="YAML file with fit options")
    fit.add_argument(
        "--runs-dir", help="run store folder (default: $FINETUNER_RUNS_DIR or ./finetuner-runs)"
    )
    fit.add_argument("--run-name", help="name of the run (overrides the file)")
    fit.add_argument("--experiment", help="experiment name (overrides the file)")
    _add_nproc(fit)
    fit.set_defaults(handler=_cmd_fit)

    resume = sub.add_parser("resume", help="continue an interrupted run from its last checkpoint")
    resume.add_argument("run", help="name of the run")
    resume.add_argument("--experiment")
    resume.add_argument("--runs-dir")
    _add_nproc(resume)
    resume.set_defaults(handler=_cmd_resume)

    demo = sub.add_parser(
        "demo", help="fine-tune a small model on the built-in digits data (--text: MiniLM)"
    )
    demo.add_argument(
        "--text",
        action="store_true",
        help="fine-tune the bundled MiniLM for product search instead (built-in products-* data)",
    )
    demo.add_argument("--epochs", type=int, help="epochs (5 for digits, 1 for --text)")
    demo.add_argument("--runs-dir")
    demo.set_defaults(handler=_cmd_demo)


def add_store_commands(sub: Any) -> None:
    """Add the commands that read the run store, the registry and the data store to *sub*."""
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
