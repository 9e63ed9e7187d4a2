"""The local run store: experiments and runs as folders on disk.

Layout (the root is ``runs_dir``, else ``$FINETUNER_RUNS_DIR``, else ``./finetuner-runs``)::

    <root>/<experiment>/experiment.json          {"name", "created_at"}
    <root>/<experiment>/<run>/config.json        the resolved config, written once
    <root>/<experiment>/<run>/status.json        status, timestamps, pid, failure reason
    <root>/<experiment>/<run>/logs.jsonl         JSON lines written by the trainer's logger
    <root>/<experiment>/<run>/metrics.jsonl      one record per metrics publish
    <root>/<experiment>/<run>/examples.json      {stage: {query: [match, ...]}}
    <root>/<experiment>/<run>/checkpoints/       written by checkpointing plugins
    <root>/<experiment>/<run>/artifact/          written when the run finishes

Everything is re-read from disk on each call, so a :class:`Run` opened in another process
sees the status and metrics as the trainer writes them. ``status.json`` and
``examples.json`` are replaced atomically; the JSON-lines files only ever grow by whole lines.
Folders whose names start with a dot are never runs or experiments: deletions rename a folder
to a hidden name first, so nobody reads one half removed.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from ._io import atomic_open, atomic_write_json
from .errors import (
    ConfigError,
    ExperimentNotFoundError,
    RunError,
    RunFailedError,
    RunInProgressError,
    RunNotFoundError,
    close_matches_hint,
)

__all__ = [
    "DEFAULT_EXPERIMENT",
    "RUNS_DIR_ENV",
    "Experiment",
    "Run",
    "RunStatus",
    "create_experiment",
    "create_run",
    "delete_experiment",
    "delete_run",
    "ensure_experiment",
    "generate_run_name",
    "get_experiment",
    "get_run",
    "list_experiments",
    "list_runs",
    "resolve_runs_dir",
    "validate_name",
]

RUNS_DIR_ENV = "FINETUNER_RUNS_DIR"
DEFAULT_RUNS_DIR = "finetuner-runs"
DEFAULT_EXPERIMENT = "default"

EXPERIMENT_FILE = "experiment.json"
CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
LOG_FILE = "logs.jsonl"
METRICS_FILE = "metrics.jsonl"
EXAMPLES_FILE = "examples.json"

METRIC_STAGES = ("before", "epoch", "step", "after")
EXAMPLE_STAGES = ("before", "after")

_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_NAME_MAX_LENGTH = 128
_ALLOWED_CHARACTERS = (
    "letters A-Z and a-z, digits 0-9, '.', '_' and '-' (starting with a letter or digit, "
    f"at most {_NAME_MAX_LENGTH} characters)"
)


class RunStatus(str, Enum):
    """Where a run is in its life: ``CREATED`` -> ``STARTED`` -> ``FINISHED`` or ``FAILED``."""

    CREATED = "CREATED"
    STARTED = "STARTED"
    FINISHED = "FINISHED"
    FAILED = "FAILED"

    def __str__(self) -> str:
        return self.value


_DONE = frozenset({RunStatus.FINISHED.value, RunStatus.FAILED.value})


# --------------------------------------------------------------------------- helpers


def _now() -> str:
    """The current time as an ISO-8601 UTC string (microseconds, so creation order sorts)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def resolve_runs_dir(runs_dir: str | os.PathLike[str] | None = None) -> Path:
    """The root folder of the run store, as an absolute path.

    Explicit *runs_dir* first, then the ``FINETUNER_RUNS_DIR`` environment variable, then
    ``./finetuner-runs`` under the current working directory. Resolved on every call, so a
    ``chdir`` or a changed environment variable takes effect at once. The folder need not exist.
    """
    if runs_dir is None:
        runs_dir = os.environ.get(RUNS_DIR_ENV) or None
    if runs_dir is None:
        return Path.cwd() / DEFAULT_RUNS_DIR
    return Path(runs_dir).expanduser().absolute()


def _describe_root(root: Path) -> str:
    """Where the store is and how to move it, for error messages."""
    return f"{root} (choose another store with runs_dir=... or ${RUNS_DIR_ENV})"


def validate_name(name: str, what: str) -> str:
    """Return *name* if it can name a run or an experiment (*what*), else raise ConfigError.

    A name is 1 to 128 characters from ``A-Z a-z 0-9 . _ -`` and starts with a letter or a
    digit, so it is always a single, visible folder name: no slashes, no ``..``, no leading dot.
    """
    if not isinstance(name, str):
        raise ConfigError(
            f"the {what} name must be a string, not {type(name).__name__} ({name!r}); "
            f"use {_ALLOWED_CHARACTERS}."
        )
    if _NAME_PATTERN.fullmatch(name):
        return name
    if not name:
        problem = "is empty"
    elif len(name) > _NAME_MAX_LENGTH:
        problem = f"is {len(name)} characters long"
    elif "/" in name or "\\" in name:
        problem = "contains a path separator"
    elif not name[0].isascii() or not name[0].isalnum():
        problem = f"starts with {name[0]!r}"
    else:
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "._-"))})
        problem = "contains " + ", ".join(repr(c) for c in bad)
    raise ConfigError(f"invalid {what} name {name!r}: it {problem}; use {_ALLOWED_CHARACTERS}.")


_ADJECTIVES = (
    "agile", "amber", "ancient", "bold", "brave", "bright", "calm", "clever", "cosmic", "crisp",
    "curious", "daring", "eager", "fancy", "fierce", "gentle", "golden", "happy", "hidden",
    "humble", "jolly", "keen", "lively", "lucky", "mellow", "misty", "nimble", "noble", "patient",
    "quiet", "rapid", "rustic", "silent", "silver", "snowy", "steady", "sunny", "swift", "tidy",
    "vivid", "wise", "witty",
)  # fmt: skip
_NOUNS = (
    "badger", "beacon", "bison", "canyon", "cedar", "comet", "coral", "crane", "delta", "falcon",
    "fern", "fjord", "gecko", "glacier", "harbor", "hawk", "heron", "island", "jaguar", "lagoon",
    "lantern", "lynx", "maple", "meadow", "meteor", "orca", "otter", "owl", "panda", "pebble",
    "pine", "prairie", "quartz", "raven", "reef", "river", "salmon", "sparrow", "summit",
    "tiger", "walrus", "willow",
)  # fmt: skip


def generate_run_name(rng: random.Random | None = None) -> str:
    """A readable random run name such as ``brave-heron-4821``.

    Without *rng* the names come from the operating system's randomness, so seeding
    :mod:`random` for a reproducible fit does not make every fit pick the same name.
    """
    rng = rng if rng is not None else random.SystemRandom()
    return f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}-{rng.randint(1000, 9999)}"


def _read_json(path: Path, what: str) -> Any:
    """Parse the JSON file *path*; FileNotFoundError passes through."""
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunError(
            f"the {what} file {path} is not valid JSON ({exc}); it was changed outside finetuner."
        ) from exc


def _jsonl_records(path: Path) -> Iterator[tuple[int, Any, str]]:
    """Yield ``(line number, parsed record or None, raw line)`` for each line of *path*.

    A last line without its newline is still being written: it is yielded only when it parses.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    lines = data.split(b"\n")
    complete = lines[:-1]
    tail = lines[-1]
    for number, raw in enumerate(complete, start=1):
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        if not text.strip():
            continue
        try:
            yield number, json.loads(text), text
        except json.JSONDecodeError:
            yield number, None, text
    if tail.strip():
        text = tail.decode("utf-8", errors="replace")
        try:
            yield len(complete) + 1, json.loads(text), text
        except json.JSONDecodeError:
            pass


def _format_value(value: Any) -> str:
    if isinstance(value, str):
        if value and not any(c.isspace() or c in '="' for c in value):
            return value
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, default=str)


def _render_record(record: Any) -> str:
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


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    if pid <= 0:
        return False
    if os.name == "nt":  # pragma: no cover - os.kill(pid, 0) would terminate it on Windows
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        try:
            code = ctypes.c_ulong()
            kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
            return code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _live_pid(status: Mapping[str, Any]) -> int | None:
    """The pid of the process running this run on this machine, if it is still alive."""
    if status.get("status") != RunStatus.STARTED.value:
        return None
    pid = status.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return None
    host = status.get("host")
    if host is not None and host != socket.gethostname():
        return None  # a pid from another machine says nothing about this one
    return pid if _pid_alive(pid) else None


def _remove_tree(path: Path) -> None:
    """Remove the folder *path*: renamed to a hidden name first, so readers never see it half
    deleted and its name is free at once."""
    hidden = Path(tempfile.mkdtemp(prefix=f".deleting-{path.name}-", dir=path.parent))
    os.replace(path, hidden / path.name)
    shutil.rmtree(hidden)


# --------------------------------------------------------------------------- Run


class Run:
    """One run: a folder in the run store. Cheap to create; every read goes to disk.

    Open one with :func:`get_run` (or ``Run(path)`` for a run folder); :func:`create_run`
    makes new ones. Methods whose names start with ``_`` are the trainer's writing side.
    """

    __slots__ = ("_path",)

    def __init__(self, path: str | os.PathLike[str]):
        path = Path(path).expanduser().absolute()
        if not (path / STATUS_FILE).is_file():
            raise RunNotFoundError(f"no run at {path}: the folder has no {STATUS_FILE}.")
        self._path = path

    # ----------------------------------------------------------------- where things are

    @property
    def name(self) -> str:
        return self._path.name

    @property
    def experiment_name(self) -> str:
        return self._path.parent.name

    @property
    def path(self) -> Path:
        return self._path

    @property
    def log_path(self) -> Path:
        """The JSON-lines log the trainer writes."""
        return self._path / LOG_FILE

    @property
    def metrics_path(self) -> Path:
        """The JSON-lines file with one record per metrics publish."""
        return self._path / METRICS_FILE

    @property
    def checkpoint_dir(self) -> Path:
        """Where checkpointing plugins keep their state (created by them when needed)."""
        return self._path / "checkpoints"

    @property
    def artifact_dir(self) -> Path:
        """Where the artifact is built. Unlike :attr:`artifact_path`, this never checks status."""
        return self._path / "artifact"

    @property
    def config(self) -> dict[str, Any]:
        """The resolved config the run was created with."""
        path = self._path / CONFIG_FILE
        try:
            config = _read_json(path, "config")
        except FileNotFoundError:
            raise RunError(f"run '{self.name}' has no {CONFIG_FILE} at {path}.") from None
        if not isinstance(config, dict):
            raise RunError(f"the config file {path} does not hold a JSON object.")
        return config

    # ----------------------------------------------------------------- reading

    def status(self) -> dict[str, Any]:
        """The content of ``status.json``, read now: ``status`` (``CREATED``, ``STARTED``,
        ``FINISHED``, ``FAILED``), ``created_at``, ``updated_at``, ``started_at``,
        ``finished_at``, ``pid``, ``reason``, ``plugin``, ``hook`` and any extra fields."""
        path = self._path / STATUS_FILE
        try:
            status = _read_json(path, "status")
        except FileNotFoundError:
            raise RunNotFoundError(
                f"run '{self.name}' no longer exists: {path} is gone (was it deleted?)."
            ) from None
        if not isinstance(status, dict) or "status" not in status:
            raise RunError(f"the status file {path} does not hold a run status.")
        return status

    def _status_value(self) -> str:
        return str(self.status()["status"])

    def logs(self) -> str:
        """The run's log rendered for people: one line per record,
        ``<timestamp> <LEVEL> <event>  key=value ...``.

        Raises :class:`RunError` while the run is ``CREATED`` and has written no log yet.
        """
        if not self.log_path.exists():
            status = self._status_value()
            if status == RunStatus.CREATED.value:
                raise RunError(
                    f"run '{self.name}' is CREATED and has no logs yet; they appear once it "
                    "starts. Follow them as they come with run.stream_logs()."
                )
            return ""
        return "\n".join(
            _render_record(record) if record is not None else raw
            for _, record, raw in _jsonl_records(self.log_path)
        )

    def stream_logs(self, interval: float = 1.0, timeout: float | None = None) -> Iterator[str]:
        """Yield rendered log lines as the trainer appends them, like ``tail -f``.

        Checks for new lines every *interval* seconds, and ends once the run is ``FINISHED``
        or ``FAILED`` and every line has been yielded. With *timeout* (seconds), raises
        :class:`RunInProgressError` if the run is still going by then. A record with a
        multi-line field (a traceback) is yielded as one string with several lines.
        """
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
            raise ConfigError(
                f"stream_logs(interval=...) must be a positive number of seconds, not {interval!r}."
            )
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0
        ):
            raise ConfigError(
                f"stream_logs(timeout=...) must be None or a number of seconds >= 0, "
                f"not {timeout!r}."
            )
        return self._follow(float(interval), None if timeout is None else float(timeout))

    def _follow(self, interval: float, timeout: float | None) -> Iterator[str]:
        deadline = None if timeout is None else time.monotonic() + timeout
        offset = 0
        pending = b""
        while True:
            # Status first: the trainer writes its last lines before it marks the run done,
            # so lines read after seeing a final status are all the lines there will be.
            status = self._status_value()
            done = status in _DONE
            try:
                with open(self.log_path, "rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
            except FileNotFoundError:
                chunk = b""
            offset += len(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if done and pending.strip():
                lines.append(pending)
                pending = b""
            for raw in lines:
                text = raw.decode("utf-8", errors="replace").rstrip("\r")
                if not text.strip():
                    continue
                try:
                    yield _render_record(json.loads(text))
                except json.JSONDecodeError:
                    yield text
            if done:
                return
            wait = interval
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RunInProgressError(
                        f"run '{self.name}' is still {status} after {timeout:g} s of "
                        "stream_logs(); call it again to keep following."
                    )
                wait = min(wait, remaining)
            time.sleep(wait)

    def metric_history(self) -> list[dict[str, Any]]:
        """Every metrics record, oldest first: ``{"stage", "epoch", "step", "metrics",
        "timestamp"}`` (and ``"skipped"`` where queries could not be scored)."""
        history = []
        for number, record, _raw in _jsonl_records(self.metrics_path):
            if not isinstance(record, dict):
                raise RunError(
                    f"{self.metrics_path}:{number} is not a metrics record; the file was "
                    "changed outside finetuner."
                )
            history.append(record)
        return history

    def metrics(self) -> dict[str, dict[str, float]]:
        """``{"before": {...}, "after": {...}}``: the last record of each of those stages.
        A stage with no record yet is left out."""
        result: dict[str, dict[str, float]] = {}
        for record in self.metric_history():
            stage = record.get("stage")
            if stage in EXAMPLE_STAGES:
                result[stage] = dict(record.get("metrics") or {})
        return {stage: result[stage] for stage in EXAMPLE_STAGES if stage in result}

    def display_metrics(self) -> None:
        """Print the before/after retrieval metrics as rich tables."""
        from rich.console import Console
        from rich.table import Table

        console = Console()
        metrics = self.metrics()
        if not metrics:
            console.print(
                f"Run '{self.name}' has no retrieval metrics before or after fine-tuning."
            )
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

    def example_results(self) -> dict[str, dict[str, list[str]]]:
        """``{stage: {query: [match, ...]}}`` gathered by evaluation, ``{}`` if none."""
        path = self._path / EXAMPLES_FILE
        try:
            examples = _read_json(path, "examples")
        except FileNotFoundError:
            return {}
        if not isinstance(examples, dict):
            raise RunError(f"the examples file {path} does not hold a JSON object.")
        return examples

    def display_examples(self, k: int = 5) -> None:
        """Print one rich table per stage: each query, then its first *k* matches."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"display_examples(k=...) must be an integer >= 1, not {k!r}.")
        from rich.console import Console
        from rich.table import Table

        console = Console()
        examples = self.example_results()
        if not any(examples.values()):
            console.print(
                f"Run '{self.name}' has no example results; gather them with "
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

    # ----------------------------------------------------------------- artifact

    @property
    def artifact_path(self) -> Path:
        """The artifact folder of a finished run.

        Raises :class:`RunInProgressError` while the run is ``CREATED`` or ``STARTED``,
        :class:`RunFailedError` when it failed, and :class:`RunError` if the folder is missing.
        """
        status = self.status()
        state = status["status"]
        if state in (RunStatus.CREATED.value, RunStatus.STARTED.value):
            raise RunInProgressError(
                f"run '{self.name}' is {state}; its artifact exists once it finishes; "
                "wait with run.stream_logs()."
            )
        if state == RunStatus.FAILED.value:
            where = ""
            if status.get("plugin"):
                hook = f" in {status['hook']}" if status.get("hook") else ""
                where = f" (plugin '{status['plugin']}'{hook})"
            reason = status.get("reason") or "no reason was recorded"
            raise RunFailedError(
                f"run '{self.name}' failed{where}: {reason}. It has no artifact; "
                "see run.logs() for details."
            )
        if not self.artifact_dir.is_dir():
            raise RunError(
                f"run '{self.name}' is {state} but its artifact folder {self.artifact_dir} "
                "is missing; was it moved or deleted?"
            )
        return self.artifact_dir

    @property
    def artifact_id(self) -> str:
        """The artifact folder as a string, for code written for the classic API
        (``finetuner.get_model(run.artifact_id)``). Raises like :attr:`artifact_path`."""
        return str(self.artifact_path)

    def save_artifact(self, directory: str | os.PathLike[str] = "artifacts/") -> Path:
        """Zip the artifact into ``<directory>/<run name>.zip`` and return that path.

        Entries are stored under a top folder named after the run (``<run name>/...``). The zip
        is written under a temporary name and renamed, so it is never seen half written.
        """
        source = self.artifact_path
        directory = Path(directory).expanduser()
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"{self.name}.zip"
        with (
            atomic_open(target) as handle,
            zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive,
        ):
            for file in sorted(p for p in source.rglob("*") if p.is_file()):
                archive.write(file, f"{self.name}/{file.relative_to(source).as_posix()}")
        return target

    # ----------------------------------------------------------------- writing (trainer)

    def _set_status(self, status: RunStatus | str, **fields: Any) -> dict[str, Any]:
        """Move the run to *status* and merge *fields* (``reason``, ``plugin``, ``hook``...)
        into ``status.json``, written atomically; returns the new content.

        Sets ``updated_at``; ``STARTED`` sets ``started_at``, the current ``pid`` and ``host``
        and clears the end fields of an earlier attempt; ``FINISHED`` and ``FAILED`` set
        ``finished_at``. Fields given explicitly win over these.
        """
        try:
            state = RunStatus(status)
        except ValueError:
            raise RunError(
                f"unknown run status {status!r}; use one of "
                f"{', '.join(s.value for s in RunStatus)}."
            ) from None
        content = self.status()
        now = _now()
        content["status"] = state.value
        content["updated_at"] = now
        if state is RunStatus.STARTED:
            content.update(
                started_at=now,
                finished_at=None,
                pid=os.getpid(),
                host=socket.gethostname(),
                reason=None,
                plugin=None,
                hook=None,
                phase=None,
            )
        elif state in (RunStatus.FINISHED, RunStatus.FAILED):
            content["finished_at"] = now
        content.update(fields)
        atomic_write_json(self._path / STATUS_FILE, content)
        return content

    def _append_metrics(
        self,
        stage: str,
        epoch: int,
        step: int,
        metrics: Mapping[str, float],
        skipped: Mapping[str, int] | None = None,
    ) -> dict[str, Any]:
        """Append one metrics record (flushed and synced to disk) and return it.

        *stage* is ``"before"``, ``"epoch"``, ``"step"`` or ``"after"``; *skipped* counts, per
        key, the queries that could not be scored.
        """
        if stage not in METRIC_STAGES:
            raise RunError(
                f"unknown metrics stage {stage!r}; use one of {', '.join(METRIC_STAGES)}."
            )
        record: dict[str, Any] = {
            "stage": stage,
            "epoch": int(epoch),
            "step": int(step),
            "metrics": {str(key): float(value) for key, value in metrics.items()},
            "timestamp": _now(),
        }
        if skipped:
            record["skipped"] = {str(key): int(value) for key, value in skipped.items()}
        line = json.dumps(record) + "\n"
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        return record

    def _write_examples(self, examples: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace ``examples.json`` atomically with ``{stage: {query: [match, ...]}}``."""
        content: dict[str, dict[str, list[str]]] = {}
        for stage, queries in examples.items():
            if not isinstance(queries, Mapping):
                raise RunError(
                    f"examples for stage {stage!r} must map each query to its matches, "
                    f"not {type(queries).__name__}."
                )
            content[str(stage)] = {
                str(query): [str(match) for match in matches] for query, matches in queries.items()
            }
        atomic_write_json(self._path / EXAMPLES_FILE, content)

    # ----------------------------------------------------------------- identity

    def __repr__(self) -> str:
        try:
            status = self._status_value()
        except RunError:
            status = "?"
        return f"Run(name={self.name!r}, experiment={self.experiment_name!r}, status={status!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Run):
            return NotImplemented
        return self._path == other._path

    def __hash__(self) -> int:
        return hash(self._path)


# --------------------------------------------------------------------------- Experiment


class Experiment:
    """A named group of runs: a folder in the run store holding ``experiment.json``."""

    __slots__ = ("_path",)

    def __init__(self, path: str | os.PathLike[str]):
        path = Path(path).expanduser().absolute()
        if not (path / EXPERIMENT_FILE).is_file():
            raise ExperimentNotFoundError(
                f"no experiment at {path}: the folder has no {EXPERIMENT_FILE}."
            )
        self._path = path

    @property
    def name(self) -> str:
        return self._path.name

    @property
    def path(self) -> Path:
        return self._path

    @property
    def created_at(self) -> str | None:
        try:
            return _read_json(self._path / EXPERIMENT_FILE, "experiment").get("created_at")
        except (FileNotFoundError, AttributeError, RunError):
            return None

    def list_runs(self) -> list[Run]:
        """The runs of this experiment, oldest first."""
        return _sorted_runs(_runs_in(self._path))

    def get_run(self, name: str) -> Run:
        """The run *name* of this experiment."""
        return get_run(name, experiment_name=self.name, runs_dir=self._path.parent)

    def delete_run(self, name: str) -> None:
        """Delete the run *name* of this experiment (refused while it is running here)."""
        delete_run(name, experiment_name=self.name, runs_dir=self._path.parent)

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r}, path='{self._path}')"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Experiment):
            return NotImplemented
        return self._path == other._path

    def __hash__(self) -> int:
        return hash(self._path)


def _runs_in(experiment_path: Path) -> list[Run]:
    """Every complete run folder directly under *experiment_path*."""
    try:
        entries = list(experiment_path.iterdir())
    except FileNotFoundError:
        return []
    runs = []
    for entry in entries:
        if _NAME_PATTERN.fullmatch(entry.name) and (entry / STATUS_FILE).is_file():
            runs.append(Run(entry))
    return runs


def _created_at(run: Run) -> str:
    try:
        return str(run.status().get("created_at") or "")
    except RunError:
        return ""


def _sorted_runs(runs: list[Run]) -> list[Run]:
    return sorted(runs, key=lambda r: (_created_at(r), r.experiment_name, r.name))


def _experiments_in(root: Path) -> list[Experiment]:
    try:
        entries = list(root.iterdir())
    except FileNotFoundError:
        return []
    found = [
        Experiment(entry)
        for entry in entries
        if _NAME_PATTERN.fullmatch(entry.name) and (entry / EXPERIMENT_FILE).is_file()
    ]
    return sorted(found, key=lambda e: e.name)


# --------------------------------------------------------------------------- experiments


def create_experiment(
    name: str = DEFAULT_EXPERIMENT, runs_dir: str | os.PathLike[str] | None = None
) -> Experiment:
    """Create the experiment *name*; raises ConfigError if it already exists."""
    validate_name(name, "experiment")
    root = resolve_runs_dir(runs_dir)
    path = root / name
    if (path / EXPERIMENT_FILE).is_file():
        raise ConfigError(
            f"an experiment named '{name}' already exists in {root}; open it with "
            f"finetuner.get_experiment('{name}') or choose another name."
        )
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path / EXPERIMENT_FILE, {"name": name, "created_at": _now()})
    return Experiment(path)


def ensure_experiment(name: str, runs_dir: str | os.PathLike[str] | None = None) -> Experiment:
    """The experiment *name*, created if it does not exist yet."""
    validate_name(name, "experiment")
    path = resolve_runs_dir(runs_dir) / name
    if (path / EXPERIMENT_FILE).is_file():
        return Experiment(path)
    try:
        return create_experiment(name, runs_dir=path.parent)
    except ConfigError:  # another process created it meanwhile
        return Experiment(path)


def get_experiment(name: str, runs_dir: str | os.PathLike[str] | None = None) -> Experiment:
    """The experiment *name*; raises ExperimentNotFoundError listing close matches."""
    validate_name(name, "experiment")
    root = resolve_runs_dir(runs_dir)
    path = root / name
    if (path / EXPERIMENT_FILE).is_file():
        return Experiment(path)
    existing = [e.name for e in _experiments_in(root)]
    known = f"existing experiments: {', '.join(existing)}" if existing else "it has no experiments"
    raise ExperimentNotFoundError(
        f"no experiment named '{name}' in {_describe_root(root)}; {known}."
        f"{close_matches_hint(name, existing)}"
    )


def list_experiments(runs_dir: str | os.PathLike[str] | None = None) -> list[Experiment]:
    """Every experiment in the store, sorted by name."""
    return _experiments_in(resolve_runs_dir(runs_dir))


def delete_experiment(name: str, runs_dir: str | os.PathLike[str] | None = None) -> None:
    """Delete the experiment *name* and all its runs.

    Refused with RunInProgressError, deleting nothing, if one of its runs is running on this
    machine.
    """
    experiment = get_experiment(name, runs_dir=runs_dir)
    live = []
    for run in experiment.list_runs():
        try:
            pid = _live_pid(run.status())
        except RunError:
            continue
        if pid is not None:
            live.append(f"'{run.name}' (pid {pid})")
    if live:
        raise RunInProgressError(
            f"cannot delete experiment '{name}': run(s) {', '.join(live)} are still running "
            "on this machine; wait for them to finish or stop those processes first."
        )
    _remove_tree(experiment.path)


# --------------------------------------------------------------------------- runs


def create_run(
    config: Mapping[str, Any],
    *,
    run_name: str | None = None,
    experiment_name: str | None = None,
    runs_dir: str | os.PathLike[str] | None = None,
) -> Run:
    """Create a run folder holding *config*, with status ``CREATED``, and return the Run.

    The experiment defaults to ``"default"`` and is created if missing; without *run_name*
    a readable random name is chosen. An explicit *run_name* that is taken is a ConfigError.
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"a run's config must be a mapping, not {type(config).__name__}.")
    experiment = ensure_experiment(experiment_name or DEFAULT_EXPERIMENT, runs_dir=runs_dir)
    if run_name is not None:
        validate_name(run_name, "run")
        path = experiment.path / run_name
        try:
            path.mkdir()
        except FileExistsError:
            raise ConfigError(
                f"a run named '{run_name}' already exists in experiment '{experiment.name}' "
                f"({path}); choose another run_name or delete it with "
                f"finetuner.delete_run('{run_name}', experiment_name='{experiment.name}')."
            ) from None
    else:
        for _ in range(100):
            path = experiment.path / generate_run_name()
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover - 1.3 million names
            raise RunError(
                f"could not find a free run name in {experiment.path}; pass run_name=..."
            )
    try:
        recorded = dict(config)
        if "run_name" in recorded:
            recorded["run_name"] = path.name
        if "experiment_name" in recorded:
            recorded["experiment_name"] = experiment.name
        atomic_write_json(path / CONFIG_FILE, recorded)
        now = _now()
        status = {
            "status": RunStatus.CREATED.value,
            "created_at": now,
            "updated_at": now,
            "started_at": None,
            "finished_at": None,
            "pid": None,
            "reason": None,
            "plugin": None,
            "hook": None,
        }
        atomic_write_json(path / STATUS_FILE, status)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return Run(path)


def get_run(
    run_name: str,
    experiment_name: str | None = None,
    runs_dir: str | os.PathLike[str] | None = None,
) -> Run:
    """The run *run_name*, in *experiment_name* or, without one, in any experiment.

    Raises RunNotFoundError (with close matches and the folder searched) when there is no such
    run, and RunError when several experiments have a run of that name.
    """
    validate_name(run_name, "run")
    root = resolve_runs_dir(runs_dir)
    if experiment_name is not None:
        experiment = get_experiment(experiment_name, runs_dir=root)
        path = experiment.path / run_name
        if (path / STATUS_FILE).is_file():
            return Run(path)
        in_experiment = [run.name for run in _runs_in(experiment.path)]
        raise RunNotFoundError(
            f"no run named '{run_name}' in experiment '{experiment.name}' ({experiment.path})."
            f"{close_matches_hint(run_name, in_experiment)}"
        )
    experiments = _experiments_in(root)
    found = [
        Run(e.path / run_name) for e in experiments if (e.path / run_name / STATUS_FILE).is_file()
    ]
    if len(found) == 1:
        return found[0]
    if found:
        holders = ", ".join(f"'{run.experiment_name}'" for run in found)
        raise RunError(
            f"runs named '{run_name}' exist in several experiments ({holders}); pass "
            f"experiment_name=... to choose one, e.g. "
            f"get_run('{run_name}', experiment_name='{found[0].experiment_name}')."
        )
    names = sorted({run.name for e in experiments for run in _runs_in(e.path)})
    if experiments:
        where = f"looked in the experiments {', '.join(e.name for e in experiments)} of"
    else:
        where = "there are no experiments in"
    raise RunNotFoundError(
        f"no run named '{run_name}'; {where} {_describe_root(root)}."
        f"{close_matches_hint(run_name, names)}"
    )


def list_runs(
    experiment_name: str | None = None, runs_dir: str | os.PathLike[str] | None = None
) -> list[Run]:
    """The runs of *experiment_name*, or of every experiment, oldest first."""
    if experiment_name is not None:
        return get_experiment(experiment_name, runs_dir=runs_dir).list_runs()
    root = resolve_runs_dir(runs_dir)
    return _sorted_runs([run for e in _experiments_in(root) for run in _runs_in(e.path)])


def delete_run(
    run_name: str,
    experiment_name: str | None = None,
    runs_dir: str | os.PathLike[str] | None = None,
) -> None:
    """Delete the run's folder: config, logs, metrics, checkpoints and artifact.

    Refused with RunInProgressError while the run is ``STARTED`` by a process that is still
    alive on this machine.
    """
    run = get_run(run_name, experiment_name=experiment_name, runs_dir=runs_dir)
    pid = _live_pid(run.status())
    if pid is not None:
        raise RunInProgressError(
            f"cannot delete run '{run.name}' of experiment '{run.experiment_name}': it is "
            f"STARTED and its process (pid {pid}) is still running; wait for it to finish "
            "(run.stream_logs()) or stop that process first."
        )
    _remove_tree(run.path)
