"""A run, read: its status, config, logs, metrics, example results and artifact.

Everything is re-read from disk on each call, so a :class:`Run` opened in another process
sees the status and metrics as the trainer writes them. The trainer's writing side is
:class:`~finetuner.runs.writer.RunWriter`.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._io import atomic_open, regular_files, reported_write
from ..errors import ConfigError, RunError, RunFailedError, RunInProgressError, RunNotFoundError
from .jsonfiles import jsonl_records, read_json
from .layout import (
    ARTIFACT_DIR,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    EXAMPLE_STAGES,
    EXAMPLES_FILE,
    LOG_FILE,
    METRICS_FILE,
    QUERIES_FILE,
    STATUS_FILE,
    STEPS_FILE,
    RunStatus,
)
from .notebook import ExampleResults, MetricsTable, run_html
from .processes import is_stale
from .render import follow_log, print_examples, print_metrics, render_record

__all__ = ["Run"]

_STATUSES = frozenset(s.value for s in RunStatus)


class Run:
    """One run: a folder in the run store. Cheap to create; every read goes to disk.

    Open one with :func:`get_run` (or ``Run(path)`` for a run folder); :func:`create_run`
    makes new ones. The trainer writes through a :class:`~finetuner.runs.RunWriter`.
    """

    __slots__ = ("_path",)

    def __init__(self, path: str | os.PathLike[str]):
        path = Path(path).expanduser().absolute()
        if not (path / STATUS_FILE).is_file():
            raise RunNotFoundError(f"no run at {path}: the folder has no {STATUS_FILE}.")
        self._path = path

    @classmethod
    def reference(cls, path: str | os.PathLike[str]) -> Run:
        """The run at *path* without looking there: in a distributed fit, what a rank other
        than 0 holds of the run rank 0 writes, which may be on another machine."""
        run = cls.__new__(cls)
        given = path if isinstance(path, Path) else Path(path)
        # an absolute path is kept as it is: the run store lists thousands of them
        run._path = given if given.is_absolute() else given.expanduser().absolute()
        return run

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
    def steps_path(self) -> Path:
        """The JSON-lines file with one record per optimizer step."""
        return self._path / STEPS_FILE

    @property
    def checkpoint_dir(self) -> Path:
        """Where checkpointing plugins keep their state (created by them when needed)."""
        return self._path / CHECKPOINT_DIR

    @property
    def artifact_dir(self) -> Path:
        """Where the artifact is built. Unlike :attr:`artifact_path`, this never checks status."""
        return self._path / ARTIFACT_DIR

    @property
    def config(self) -> dict[str, Any]:
        """The resolved config the run was created with."""
        path = self._path / CONFIG_FILE
        try:
            config = read_json(path, "config")
        except FileNotFoundError:
            raise RunError(f"run '{self.name}' has no {CONFIG_FILE} at {path}.") from None
        if not isinstance(config, dict):
            raise RunError(f"the config file {path} does not hold a JSON object.")
        return config

    # ----------------------------------------------------------------- reading

    def status(self) -> dict[str, Any]:
        """The content of ``status.json``, read now: ``status`` (``CREATED``, ``STARTED``,
        ``FINISHED``, ``FAILED``), ``created_at``, ``updated_at``, ``started_at``,
        ``finished_at``, ``pid``, ``host``, ``reason``, ``plugin``, ``hook`` and any extra
        fields; a finished run adds ``duration_s``, ``epochs_completed`` and, when a plugin
        stopped it early, ``stop_reason`` and ``stopped_by`` (the ``source`` given to
        ``ctx.control.request_stop``), both ``None`` otherwise; and ``"stale": True`` for a
        ``STARTED`` run whose process on this machine is gone (killed without warning), which
        no process will finish: resume or delete it."""
        status = self.stored_status()
        if is_stale(status):
            status["stale"] = True
        return status

    def stored_status(self) -> dict[str, Any]:
        """``status.json`` as written, without the ``stale`` field :meth:`status` derives."""
        path = self._path / STATUS_FILE
        try:
            status = read_json(path, "status")
        except FileNotFoundError:
            raise RunNotFoundError(
                f"run '{self.name}' no longer exists: {path} is gone (was it deleted?)."
            ) from None
        if not isinstance(status, dict) or "status" not in status:
            raise RunError(f"the status file {path} does not hold a run status.")
        if status["status"] not in _STATUSES:
            raise RunError(
                f"the status file {path} holds the unknown status {status['status']!r} (one of "
                f"{', '.join(sorted(_STATUSES))} was expected); it was changed outside finetuner."
            )
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
            render_record(record) if record is not None else raw
            for _, record, raw in jsonl_records(self.log_path)
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
        return follow_log(self, float(interval), None if timeout is None else float(timeout))

    def metric_history(self) -> list[dict[str, Any]]:
        """Every metrics record, oldest first: ``{"stage", "epoch", "step", "metrics",
        "timestamp"}`` (and ``"skipped"`` where queries could not be scored)."""
        return _records(self.metrics_path, "a metrics record")

    def step_history(self) -> list[dict[str, Any]]:
        """Every optimizer step's record, oldest first: ``{"epoch", "step", "loss",
        "grad_norm", "learning_rates", "time"}``; ``loss`` is the mean over the step's
        batches, ``grad_norm`` the gradients' norm before clipping, ``time`` seconds since
        the epoch (Unix time). The trainer writes them in blocks, at least every few seconds
        and at every epoch end and checkpoint."""
        return _records(self.steps_path, "a step record")

    def metrics(self) -> MetricsTable:
        """``{"before": {...}, "after": {...}}``: the last record of each of those stages.
        A stage with no record yet is left out. A dict, shown in a notebook as a table."""
        result: dict[str, dict[str, float]] = {}
        for number, record in enumerate(self.metric_history(), start=1):
            stage, values = record.get("stage"), record.get("metrics") or {}
            if stage in EXAMPLE_STAGES:
                if not isinstance(values, dict):
                    raise RunError(
                        f"record {number} of {self.metrics_path} has metrics that are not an "
                        "object; the file was changed outside finetuner."
                    )
                result[stage] = dict(values)
        return MetricsTable({stage: result[stage] for stage in EXAMPLE_STAGES if stage in result})

    def display_metrics(self) -> None:
        """Print the before/after retrieval metrics as rich tables."""
        print_metrics(self.name, self.metrics())

    def example_results(self) -> ExampleResults:
        """``{stage: {query: [match, ...]}}`` gathered by evaluation, ``{}`` if none. A dict,
        shown in a notebook as tables."""
        return ExampleResults(self._json_object(EXAMPLES_FILE, "examples"))

    def query_results(self) -> dict[str, dict[str, Any]]:
        """Per-query results of each evaluation, ``{}`` if none: ``{key: {stage: {"metric",
        "queries": [{"id", "query", "score", "results", "relevant"}, ...]}}}`` for the stages
        ``before`` and ``after``; *key* is the evaluation's caption."""
        return self._json_object(QUERIES_FILE, "per-query results")

    def _json_object(self, name: str, what: str) -> dict[str, Any]:
        path = self._path / name
        try:
            content = read_json(path, what)
        except FileNotFoundError:
            return {}
        if not isinstance(content, dict):
            raise RunError(f"the {what} file {path} does not hold a JSON object.")
        return content

    def display_examples(self, k: int = 5) -> None:
        """Print one rich table per stage: each query, then its first *k* matches."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"display_examples(k=...) must be an integer >= 1, not {k!r}.")
        print_examples(self.name, self.example_results(), k)

    # ----------------------------------------------------------------- for people

    def report(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write the run report, one self-contained HTML file (plots, before/after table,
        the queries that changed most, config, plugins, durations, artifact), to *path*
        (default: ``report.html`` in the run's folder) and return its path. Needs plotly
        (``pip install 'finetuner[report]'``)."""
        from .report import write_report

        return write_report(self, path)

    def _repr_html_(self) -> str:
        """The run in a notebook: summary, before/after metrics and plots."""
        return run_html(self)

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

    def save_artifact(
        self,
        directory: str | os.PathLike[str] = "artifacts/",
        format: str | None = None,
        **export_options: Any,
    ) -> Path:
        """Zip the artifact into ``<directory>/<run name>.zip`` and return that path; or, with
        *format*, export its model to the folder ``<directory>/<run name>-<format>``.

        Entries of the zip are stored under a top folder named after the run
        (``<run name>/...``). The zip is written under a temporary name and renamed, so it is
        never seen half written.

        *format* is ``'sentence-transformers'``, ``'transformers'`` or ``'onnx'`` (see
        :func:`finetuner.models.export.export_artifact`, which takes the *export_options*:
        ``select_model``, ``truncate_dim``, ``quantize='int8'``, ``eval_data``).
        """
        if not isinstance(directory, (str, os.PathLike)):
            raise ConfigError(
                f"save_artifact takes the folder to write into (a path), not "
                f"{type(directory).__name__}: for example run.save_artifact('artifacts/')."
            )
        source = self.artifact_path
        directory = Path(directory).expanduser()
        if format is not None:
            # The run reader sits below the models in the core's layers; the export is the
            # one place it reaches up, and only when asked to (see .importlinter).
            from ..models.export import export_artifact

            target = directory / f"{self.name}-{format}"
            return export_artifact(source, target, to=format, **export_options)
        if export_options:
            raise ConfigError(
                f"save_artifact: {', '.join(sorted(export_options))} apply to an export; give "
                "format='sentence-transformers', 'transformers' or 'onnx' with them."
            )
        target = directory / f"{self.name}.zip"
        with reported_write("write the artifact's zip", target):
            directory.mkdir(parents=True, exist_ok=True)
            with (
                atomic_open(target) as handle,
                zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive,
            ):
                for file in regular_files(source):
                    archive.write(file, f"{self.name}/{file.relative_to(source).as_posix()}")
        return target

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


def _records(path: Path, what: str) -> list[dict[str, Any]]:
    """The JSON objects of the JSON-lines file *path*, each one *what* or a RunError."""
    history = []
    for number, record, _raw in jsonl_records(path):
        if not isinstance(record, dict):
            raise RunError(
                f"{path}:{number} is not {what}; the file was changed outside finetuner."
            )
        history.append(record)
    return history
