"""A run's records made readable: log lines for people, following a log, and rich tables.

Log records are JSON objects; on screen each is ``<timestamp> <LEVEL> <event>  key=value ...``.
rich is imported only by the functions that print tables, so reading a run stays light.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import RunInProgressError
from .layout import FINAL_STATUSES

if TYPE_CHECKING:
    from .run import Run

__all__ = ["follow_log", "print_examples", "print_metrics", "render_line", "render_record"]


def _format_value(value: Any) -> str:
    if isinstance(value, str):
        if value and not any(c.isspace() or c in '="' for c in value):
            return value
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, default=str)


def render_record(record: Any) -> str:
    """One log record as ``<timestamp> <LEVEL> <event>  key=value ...``.

    The ``logger`` key is left out (every record has one; it is noise on screen). A string field
    spanning several lines, such as a traceback under ``exception``, follows on indented lines.
    """
    if not isinstance(record, dict):
        return _format_value(record)
    timestamp = str(record.get("timestamp", "-"))
    level = str(record.get("level", "-")).upper()
    event = str(record.get("event", ""))
    pairs: list[str] = []
    blocks: list[str] = []
    for key, value in record.items():
        if key in ("timestamp", "level", "event", "logger"):
            continue
        if isinstance(value, str) and "\n" in value:
            body = "\n".join("    " + line for line in value.rstrip("\n").splitlines())
            blocks.append(f"  {key}:\n{body}")
        else:
            pairs.append(f"{key}={_format_value(value)}")
    line = f"{timestamp} {level:<8} {event}"
    if pairs:
        line += "  " + " ".join(pairs)
    return "\n".join([line, *blocks])


def render_line(text: str) -> str:
    """One line of a log file, rendered; a line that is not JSON is shown as it is."""
    try:
        return render_record(json.loads(text))
    except json.JSONDecodeError:
        return text


class _LogTail:
    """The lines appended to a log file since the last look, whole lines only."""

    def __init__(self, path: Path):
        self._path = path
        self._offset = 0
        self._pending = b""

    def new_lines(self, final: bool) -> list[str]:
        """The complete lines written since the last call; with *final*, the unfinished last
        line too (the writer is done, so it will never get its newline)."""
        try:
            with open(self._path, "rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            chunk = b""
        self._offset += len(chunk)
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        if final and self._pending.strip():
            lines.append(self._pending)
            self._pending = b""
        texts = (raw.decode("utf-8", errors="replace").rstrip("\r") for raw in lines)
        return [text for text in texts if text.strip()]


def follow_log(run: Run, interval: float, timeout: float | None) -> Iterator[str]:
    """Yield *run*'s rendered log lines as they are appended, until the run is done.

    Looks for new lines every *interval* seconds; raises RunInProgressError once *timeout*
    seconds have passed with the run still going. A stale run (its process is gone) is done
    too: nobody will write to it again. Arguments are checked by the caller.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    tail = _LogTail(run.log_path)
    while True:
        # Status first: the trainer writes its last lines before it marks the run done,
        # so lines read after seeing a final status are all the lines there will be.
        content = run.status()
        status = str(content["status"])
        done = status in FINAL_STATUSES or bool(content.get("stale"))
        for text in tail.new_lines(final=done):
            yield render_line(text)
        if done:
            return
        wait = interval
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RunInProgressError(
                    f"run '{run.name}' is still {status} after {timeout:g} s of "
                    "stream_logs(); call it again to keep following."
                )
            wait = min(wait, remaining)
        time.sleep(wait)


def print_metrics(run_name: str, metrics: Mapping[str, Mapping[str, Any]]) -> None:
    """Print one rich table per stage of *metrics* (``{stage: {key: value}}``)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not metrics:
        console.print(f"Run '{run_name}' has no retrieval metrics before or after fine-tuning.")
        return
    for stage, values in metrics.items():
        title = f"Retrieval metrics {stage} fine-tuning:"
        table = Table(title=title, min_width=len(title))
        table.add_column("Retrieval Metric")
        table.add_column("Value", justify="right")
        for key, value in values.items():
            shown = f"{value:.5f}" if isinstance(value, (int, float)) else str(value)
            table.add_row(key, shown)
        console.print(table)


def print_examples(run_name: str, examples: Mapping[str, Mapping[str, Any]], k: int) -> None:
    """Print one rich table per stage of *examples*: each query, then its first *k* matches."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not any(examples.values()):
        console.print(
            f"Run '{run_name}' has no example results; gather them with "
            "EvaluationCallback(..., gather_examples=True)."
        )
        return
    for stage, queries in examples.items():
        if not queries:
            continue
        title = f"Results {stage} fine-tuning:"
        table = Table(title=title, min_width=len(title))
        table.add_column("Result")
        table.add_column("Text")
        for query, matches in queries.items():
            shown = list(matches)[:k]
            table.add_row("Query", str(query), style="yellow bold", end_section=not shown)
            for i, match in enumerate(shown, start=1):
                table.add_row(f"Match {i}", str(match), end_section=i == len(shown))
        console.print(table)
