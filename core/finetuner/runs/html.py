"""HTML fragments of a run for people: metrics tables, example results, the queries that
changed most, and items shown as text or as inline thumbnails.

Everything here is self-contained markup: images become base64 ``data:`` URLs, so the HTML
opens anywhere, with no network and without the run's folder.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from html import escape
from pathlib import Path
from typing import Any

__all__ = [
    "STYLE",
    "changed_queries",
    "examples_html",
    "item_html",
    "metrics_table_html",
    "query_changes_html",
    "table_html",
]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
_THUMBNAIL_PX = 96

STYLE = """
.finetuner-run { font-family: system-ui, sans-serif; color: #222; }
.finetuner-run table { border-collapse: collapse; margin: 0.5em 0 1em; }
.finetuner-run th, .finetuner-run td { border: 1px solid #ccc; padding: 3px 8px;
  text-align: left; vertical-align: top; }
.finetuner-run td.num { text-align: right; font-variant-numeric: tabular-nums; }
.finetuner-run .better { color: #176d2c; } .finetuner-run .worse { color: #a1251b; }
.finetuner-run .relevant { background: #e6f4e9; }
.finetuner-run img.thumb { max-width: 96px; max-height: 96px; display: block; }
.finetuner-run .figures { display: grid; gap: 8px;
  grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); }
.finetuner-run pre { background: #f6f6f6; padding: 8px; overflow: auto; max-height: 30em; }
"""


@lru_cache(maxsize=4096)
def _thumbnail(path: str, mtime: float) -> str | None:
    """A small JPEG of the image at *path* as a data URL, or None if it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.thumbnail((_THUMBNAIL_PX, _THUMBNAIL_PX))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=80)
    except (OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def item_html(display: str) -> str:
    """An item's display string as HTML: a thumbnail when it names a readable image file,
    else the text."""
    if display.lower().endswith(_IMAGE_SUFFIXES):
        path = Path(display)
        if path.is_file():
            url = _thumbnail(str(path), path.stat().st_mtime)
            if url is not None:
                return f'<img class="thumb" src="{url}" alt="{escape(display)}" title="{escape(display)}">'
    return escape(display)


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{float(value):.4f}"


def table_html(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "") -> str:
    """A table from cells that are already HTML."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    head = f"<thead><tr>{head}</tr></thead>" if header else ""
    body = "".join("<tr>" + "".join(cell for cell in row) + "</tr>" for row in rows)
    title = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{title}{head}<tbody>{body}</tbody></table>"


def metrics_table_html(metrics: Mapping[str, Mapping[str, float]]) -> str:
    """The before/after table: one row per metric key, with the change."""
    before, after = metrics.get("before", {}), metrics.get("after", {})
    keys = list(dict.fromkeys([*before, *after]))
    if not keys:
        return "<p>No metrics were published.</p>"
    rows = []
    for key in keys:
        old, new = before.get(key), after.get(key)
        change, css = "-", ""
        if old is not None and new is not None:
            delta = new - old
            change = f"{delta:+.4f}"
            css = " better" if delta > 0 else (" worse" if delta < 0 else "")
        rows.append(
            [
                f"<td>{escape(key)}</td>",
                f'<td class="num">{_number(old)}</td>',
                f'<td class="num">{_number(new)}</td>',
                f'<td class="num{css}">{change}</td>',
            ]
        )
    return table_html(["metric", "before", "after", "change"], rows)


def examples_html(examples: Mapping[str, Mapping[str, Sequence[str]]], k: int = 5) -> str:
    """One table per stage: each example query, then its first *k* matches."""
    if not examples:
        return "<p>No example results were gathered.</p>"
    parts = []
    for stage, queries in examples.items():
        rows = [
            [f"<td>{item_html(q)}</td>", *(f"<td>{item_html(m)}</td>" for m in matches[:k])]
            for q, matches in queries.items()
        ]
        header = ["query", *(f"match {i + 1}" for i in range(k))]
        parts.append(table_html(header, rows, caption=f"example results {stage}"))
    return "\n".join(parts)


def changed_queries(
    stages: Mapping[str, Any], count: int = 5
) -> tuple[list[tuple[dict, dict]], list[tuple[dict, dict]]]:
    """The *count* queries whose score rose most and fell most from ``before`` to ``after``
    (pairs of the two stages' records of one query); queries without both scores are left out."""
    if "before" not in stages or "after" not in stages:
        return [], []
    before = {q["id"]: q for q in stages["before"]["queries"]}
    pairs = [
        (before[q["id"]], q)
        for q in stages["after"]["queries"]
        if q["id"] in before and q["score"] is not None and before[q["id"]]["score"] is not None
    ]
    pairs.sort(key=lambda pair: pair[1]["score"] - pair[0]["score"])
    improved = [p for p in reversed(pairs) if p[1]["score"] > p[0]["score"]][:count]
    regressed = [p for p in pairs if p[1]["score"] < p[0]["score"]][:count]
    return improved, regressed


def _results_html(record: Mapping[str, Any]) -> str:
    flags = list(record.get("relevant") or [])
    items = []
    for rank, result in enumerate(record.get("results") or []):
        css = ' class="relevant"' if rank < len(flags) and flags[rank] else ""
        items.append(f"<li{css}>{item_html(result)}</li>")
    return "<ol>" + "".join(items) + "</ol>"


def _change_rows(pairs: Sequence[tuple[dict, dict]]) -> list[list[str]]:
    rows = []
    for old, new in pairs:
        delta = new["score"] - old["score"]
        css = "better" if delta > 0 else "worse"
        rows.append(
            [
                f"<td>{item_html(new['query'])}</td>",
                f'<td class="num">{_number(old["score"])}</td>',
                f'<td class="num">{_number(new["score"])}</td>',
                f'<td class="num {css}">{delta:+.4f}</td>',
                f"<td>{_results_html(old)}</td>",
                f"<td>{_results_html(new)}</td>",
            ]
        )
    return rows


def query_changes_html(query_results: Mapping[str, Mapping[str, Any]], count: int = 5) -> str:
    """For each evaluation, the queries that improved and regressed most, with their top
    results before and after (relevant results shaded)."""
    parts = []
    for key, stages in query_results.items():
        metric = next(iter(stages.values()))["metric"]
        improved, regressed = changed_queries(stages, count)
        header = ["query", f"{metric} before", "after", "change", "top results before", "after"]
        for title, pairs in (("improved most", improved), ("regressed most", regressed)):
            caption = f"{key}: queries that {title}"
            if pairs:
                parts.append(table_html(header, _change_rows(pairs), caption=caption))
            else:
                parts.append(f"<p>{escape(caption)}: none.</p>")
    return "\n".join(parts) or "<p>No per-query results were recorded.</p>"
