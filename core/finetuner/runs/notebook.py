"""How runs show in Jupyter: :class:`MetricsTable` and :class:`ExampleResults` are the dicts
``run.metrics()`` and ``run.example_results()`` return, drawn as HTML tables, and
:func:`run_html` is ``Run._repr_html_``: the summary, the metrics and the plots.

The first display with plots in a Python process carries plotly's JavaScript inline (no
network needed); later ones reuse it. Without plotly installed, the plots are left out with a
line saying how to install it.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from ..errors import FinetunerError
from .html import STYLE, examples_html, metrics_table_html, table_html

if TYPE_CHECKING:
    from .run import Run

__all__ = ["ExampleResults", "MetricsTable", "run_html", "summary_rows"]

_plotlyjs_shown = False


def _wrap(body: str) -> str:
    return f'<div class="finetuner-run"><style>{STYLE}</style>{body}</div>'


class MetricsTable(dict[str, dict[str, float]]):
    """``{"before": {...}, "after": {...}}``, shown in a notebook as the before/after table."""

    def _repr_html_(self) -> str:
        return _wrap(metrics_table_html(self))


class ExampleResults(dict[str, dict[str, list[str]]]):
    """``{stage: {query: [match, ...]}}``, shown in a notebook as one table per stage
    (images as thumbnails)."""

    def _repr_html_(self) -> str:
        return _wrap(examples_html(self))


def _seconds(start: str | None, end: str | None) -> float | None:
    from datetime import datetime

    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def summary_rows(run: Run) -> list[tuple[str, str]]:
    """``(label, value)`` lines that sum a run up: names, status, times and durations."""
    status = run.status()
    rows = [
        ("run", run.name),
        ("experiment", run.experiment_name),
        ("status", str(status["status"])),
        ("created", str(status.get("created_at") or "-")),
        ("started", str(status.get("started_at") or "-")),
        ("finished", str(status.get("finished_at") or "-")),
    ]
    total = _seconds(status.get("started_at"), status.get("finished_at"))
    if total is not None:
        rows.append(("duration", f"{total:.1f} s"))
    if status.get("reason"):
        rows.append(("reason", str(status["reason"])))
    return rows


def run_html(run: Run, *, plots: bool = True) -> str:
    """The run's summary, its before/after metrics and (with *plots*) its loss and metric
    plots, as one HTML fragment."""
    global _plotlyjs_shown
    from .figures import figure_divs, loss_figures, metric_figures

    rows = [[f"<th>{escape(k)}</th>", f"<td>{escape(v)}</td>"] for k, v in summary_rows(run)]
    parts = [table_html([], rows), metrics_table_html(run.metrics())]
    if plots:
        try:
            figures = loss_figures(run.step_history()) + metric_figures(run.metric_history())
        except FinetunerError as exc:
            parts.append(f"<p>No plots: {escape(str(exc))}</p>")
        else:
            if figures:
                divs = figure_divs(figures, include_plotlyjs=not _plotlyjs_shown)
                _plotlyjs_shown = True
                parts.append(f'<div class="figures">{divs}</div>')
    return _wrap("\n".join(parts))
