"""``finetuner report RUN``: write a run's report, one self-contained HTML file."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_report_command"]


def _cmd_report(args: argparse.Namespace) -> int:
    from ..runs import get_run

    run = get_run(args.run, experiment_name=args.experiment, runs_dir=args.runs_dir)
    path = run.report(args.output)
    print(f"report of run '{run.name}' (experiment '{run.experiment_name}'): {path}")
    return 0


_HELP = "write a run's report: plots, metrics and changed queries in one HTML file"
_DESCRIPTION = (
    "Write one self-contained HTML file about a run (it opens with no network): the loss and "
    "metric plots, the before/after table, the queries that improved and regressed most, the "
    "config, plugins, durations and artifact. Needs plotly: pip install 'finetuner[report]'."
)
_OPTIONS = {
    ("-o", "--output"): "where to write the file (default: report.html in the run folder)",
    ("--experiment",): "the run's experiment (default: any that has a run of that name)",
    ("--runs-dir",): "run store folder (default: $FINETUNER_RUNS_DIR or ./finetuner-runs)",
}


def add_report_command(sub: Any) -> None:
    report = sub.add_parser("report", help=_HELP, description=_DESCRIPTION)
    report.add_argument("run", help="the run's name")
    for flags, text in _OPTIONS.items():
        report.add_argument(*flags, help=text)
    report.set_defaults(handler=_cmd_report)
