"""The run report: one self-contained HTML file about a run (``finetuner report``,
``run.report()``).

It holds the loss per step and per epoch and every published metric over the fit as plotly
plots, the before/after table, the queries that improved and regressed most with their top
results before and after, the durations, the resolved config, the plugins and their versions,
and the artifact. plotly's JavaScript is inline once and images are inline thumbnails, so the
file opens with no network and without the run's folder.
"""

from __future__ import annotations

import json
import os
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._io import atomic_write_text, reported_write
from ..errors import RunError
from .figures import figure_divs, loss_figures, metric_figures, plotly_script, require_plotly
from .html import STYLE, examples_html, metrics_table_html, query_changes_html, table_html
from .notebook import summary_rows

if TYPE_CHECKING:
    from .run import Run

__all__ = ["REPORT_FILE", "report_html", "write_report"]

REPORT_FILE = "report.html"


def _metadata(path: Path) -> dict[str, Any]:
    """The artifact's ``metadata.yml`` as a dict, ``{}`` when it is missing or unreadable."""
    import yaml

    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return content if isinstance(content, dict) else {}


def _section(title: str, body: str, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{body}</section>'


def _artifact(run: Run) -> tuple[str, dict[str, Any]]:
    """The artifact section and the artifact's ``metadata.yml`` (``{}`` without one)."""
    folder = run.artifact_dir
    if not folder.is_dir():
        return "<p>The run has no artifact (yet).</p>", {}
    files = [p for p in folder.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    rows = [
        ["<th>path</th>", f"<td>{escape(str(folder))}</td>"],
        ["<th>size</th>", f'<td class="num">{size / 1e6:.2f} MB ({size} bytes)</td>'],
        ["<th>files</th>", f'<td class="num">{len(files)}</td>'],
    ]
    metadata = _metadata(folder / "metadata.yml")
    return table_html([], rows), metadata


def _plugins(metadata: dict[str, Any]) -> str:
    rows = [
        [
            f"<td>{escape(str(p.get(k) or '-'))}</td>"
            for k in ("name", "kind", "distribution", "version")
        ]
        for p in metadata.get("plugins") or []
    ]
    versions = [
        [f"<th>{escape(k)}</th>", f"<td>{escape(str(metadata[k]))}</td>"]
        for k in ("finetuner_version", "torch_version", "python_version", "device")
        if k in metadata
    ]
    if not rows and not versions:
        return "<p>Recorded in the artifact's metadata, which this run does not have.</p>"
    return table_html([], versions) + table_html(
        ["plugin", "kind", "distribution", "version"], rows
    )


def _durations(run: Run, steps: list[dict[str, Any]], metadata: dict[str, Any]) -> str:
    rows = [[f"<th>{escape(k)}</th>", f"<td>{escape(v)}</td>"] for k, v in summary_rows(run)]
    if "duration_s" in metadata:
        rows.append(["<th>fit (artifact metadata)</th>", f"<td>{metadata['duration_s']} s</td>"])
    times: dict[int, list[float]] = {}
    for record in steps:
        if record.get("time") is not None:
            times.setdefault(int(record.get("epoch", 0)), []).append(float(record["time"]))
    for epoch in sorted(times):
        span = max(times[epoch]) - min(times[epoch])
        rows.append([f"<th>epoch {epoch} (first to last step)</th>", f"<td>{span:.2f} s</td>"])
    return table_html([], rows)


def report_html(run: Run) -> str:
    """The report of *run* as one HTML document."""
    require_plotly()
    steps, history = run.step_history(), run.metric_history()
    artifact, metadata = _artifact(run)
    loss = figure_divs(loss_figures(steps)) or "<p>No optimizer steps were recorded.</p>"
    metrics = figure_divs(metric_figures(history)) or "<p>No metrics were published.</p>"
    config = escape(json.dumps(run.config, indent=2, default=str), quote=False)
    sections = [
        _section("Summary and durations", _durations(run, steps, metadata), "summary"),
        _section("Loss", f'<div class="figures">{loss}</div>', "loss"),
        _section("Metrics over the fit", f'<div class="figures">{metrics}</div>', "metrics"),
        _section("Before and after", metrics_table_html(run.metrics()), "before-after"),
        _section("Queries that changed most", query_changes_html(run.query_results()), "queries"),
        _section("Example results", examples_html(run.example_results()), "examples"),
        _section("Config", f"<pre>{config}</pre>", "config"),
        _section("Plugins and versions", _plugins(metadata), "plugins"),
        _section("Artifact", artifact, "artifact"),
    ]
    title = escape(f"finetuner run {run.experiment_name}/{run.name}")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{STYLE} body {{ margin: 1.5em; }}</style>{plotly_script()}</head>"
        f'<body><div class="finetuner-run"><h1>{title}</h1>{"".join(sections)}</div>'
        "</body></html>\n"
    )


def write_report(run: Run, path: str | os.PathLike[str] | None = None) -> Path:
    """Write the report of *run* to *path* (default: ``report.html`` in the run's folder),
    atomically, and return the path."""
    target = Path(path).expanduser() if path is not None else run.path / REPORT_FILE
    if target.is_dir():
        raise RunError(f"cannot write the report to {target}: it is a folder; give a file name.")
    html = report_html(run)
    with reported_write("write the report", target):
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, html)
    return target.absolute()
