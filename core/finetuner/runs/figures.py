"""The run's plots, drawn with plotly: the loss per step and per epoch, and each published
metric over the fit. Used by the run report and by a run's display in a notebook.

plotly is an optional dependency (``pip install 'finetuner[report]'``); it is imported here
only when a plot is drawn, and :func:`require_plotly` says how to install it when it is missing.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import FinetunerError

__all__ = [
    "INSTALL_HINT",
    "figure_divs",
    "loss_figures",
    "metric_figures",
    "plotly_script",
    "require_plotly",
]

INSTALL_HINT = "pip install 'finetuner[report]' (or pip install plotly)"
_HEIGHT = 300
_ids = itertools.count()


def require_plotly(what: str = "the run report") -> Any:
    """``plotly.graph_objects``, or a FinetunerError saying how to install plotly."""
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise FinetunerError(
            f"{what} draws its plots with plotly, which is not installed; "
            f"install it with {INSTALL_HINT}."
        ) from None
    return go


def plotly_script() -> str:
    """plotly's JavaScript, inline in a ``<script>`` element (no network needed)."""
    from plotly.offline import get_plotlyjs

    return f'<script type="text/javascript">{get_plotlyjs()}</script>'


def _figure(go: Any, title: str, x_title: str, y_title: str) -> Any:
    figure = go.Figure()
    figure.update_layout(
        title={"text": title, "x": 0.02},
        template="plotly_white",
        height=_HEIGHT,
        margin={"l": 50, "r": 20, "t": 50, "b": 45},
        xaxis_title=x_title,
        yaxis_title=y_title,
        legend={"orientation": "h", "y": -0.25},
    )
    return figure


def loss_figures(steps: Sequence[Mapping[str, Any]]) -> list[Any]:
    """The training loss per optimizer step, and its mean per epoch (none without steps)."""
    points = [(int(s["step"]), float(s["loss"])) for s in steps if s.get("loss") is not None]
    if not points:
        return []
    go = require_plotly()
    per_step = _figure(go, "Training loss per step", "optimizer step", "loss")
    per_step.add_trace(
        go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines", name="loss")
    )
    by_epoch: dict[int, list[float]] = {}
    for record in steps:
        if record.get("loss") is not None:
            by_epoch.setdefault(int(record.get("epoch", 0)), []).append(float(record["loss"]))
    per_epoch = _figure(go, "Mean training loss per epoch", "epoch", "loss")
    epochs = sorted(by_epoch)
    per_epoch.add_trace(
        go.Scatter(
            x=epochs,
            y=[sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs],
            mode="lines+markers",
            name="mean loss",
        )
    )
    return [per_step, per_epoch]


def metric_figures(history: Iterable[Mapping[str, Any]]) -> list[Any]:
    """One plot per published metric: its value at each publish, by optimizer step, with the
    stage (``before``, ``epoch``, ``step``, ``after``) in the hover text."""
    series: dict[str, list[tuple[int, float, str]]] = {}
    for record in history:
        label = (
            record["stage"]
            if record["stage"] in ("before", "after")
            else (f"{record['stage']} (epoch {record.get('epoch')})")
        )
        for key, value in (record.get("metrics") or {}).items():
            series.setdefault(key, []).append((int(record.get("step", 0)), float(value), label))
    if not series:
        return []
    go = require_plotly()
    figures = []
    for key, points in series.items():
        figure = _figure(go, key, "optimizer step", "value")
        figure.add_trace(
            go.Scatter(
                x=[p[0] for p in points],
                y=[p[1] for p in points],
                text=[p[2] for p in points],
                mode="lines+markers",
                name=key,
                hovertemplate="%{text}<br>step %{x}: %{y:.4f}<extra></extra>",
            )
        )
        figures.append(figure)
    return figures


def figure_divs(figures: Sequence[Any], include_plotlyjs: bool = False) -> str:
    """The HTML of *figures*, each in a ``<div class="figure">``; with *include_plotlyjs*,
    plotly's JavaScript comes inline before the first one."""
    parts = []
    for number, figure in enumerate(figures):
        html = figure.to_html(
            full_html=False,
            include_plotlyjs=include_plotlyjs and number == 0,
            div_id=f"finetuner-plot-{next(_ids)}",
            default_height=f"{_HEIGHT}px",
            config={"displaylogo": False, "responsive": True},
        )
        parts.append(f'<div class="figure">{html}</div>')
    return "\n".join(parts)
