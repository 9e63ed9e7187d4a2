"""The trainer's writing side of a run: status, metrics, example results and the source file.

A :class:`RunWriter` is what a training process holds to record a run; everyone else reads the
run through :class:`~finetuner.runs.Run`. ``status.json`` and ``examples.json`` are replaced
atomically, and ``metrics.jsonl`` grows by whole, synced lines, so a reader in another process
never sees half a record. ``steps.jsonl`` (one record per optimizer step) is written in blocks
of whole lines: at least every few seconds, and whenever :meth:`RunWriter.flush_steps` is
called (the trainer does at every epoch end, every checkpoint and when the fit ends or fails),
so recording a step costs the step almost nothing.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._io import atomic_write_json, atomic_write_text, dump_yaml, reported_write
from ..errors import RunError
from .layout import (
    EXAMPLE_STAGES,
    EXAMPLES_FILE,
    FINGERPRINT_FILE,
    METRIC_STAGES,
    QUERIES_FILE,
    SOURCE_FILE,
    STATUS_FILE,
    RunStatus,
    utc_now,
)
from .run import Run

__all__ = ["RunWriter", "SilentRunWriter"]


class RunWriter:
    """Writes the records of *run*: one per training process, cheap to create."""

    __slots__ = ("_flushed_at", "_run", "_steps")

    STEPS_BLOCK = 512
    """Step records held in memory at most before they are written."""
    STEPS_INTERVAL_S = 5.0
    """Seconds a step record waits at most before it is written."""

    def __init__(self, run: Run):
        self._run = run
        self._steps: list[str] = []
        self._flushed_at = time.monotonic()

    @property
    def run(self) -> Run:
        """The run this writer records."""
        return self._run

    def set_status(self, status: RunStatus | str, **fields: Any) -> dict[str, Any]:
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
        content = self._run.stored_status()
        now = utc_now()
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
                stop_reason=None,
                stopped_by=None,
            )
        elif state in (RunStatus.FINISHED, RunStatus.FAILED):
            content["finished_at"] = now
        content.update(fields)
        _write_json(self._run.path / STATUS_FILE, content, "status")
        return content

    def append_metrics(
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
            "timestamp": utc_now(),
        }
        if skipped:
            record["skipped"] = {str(key): int(value) for key, value in skipped.items()}
        _append(self._run.metrics_path, json.dumps(record) + "\n", "metrics")
        return record

    def keep_metrics_through(self, epoch: int, step: int | None = None) -> None:
        """Forget the metrics records of epochs after *epoch*, keeping those of ``"before"``,
        and with *step* (a checkpoint within the next epoch) also the ``"step"`` records up to
        that optimizer step.

        A resumed run re-runs what its checkpoint does not cover; those old records, and
        any ``"after"`` record, would otherwise be counted twice. The file is replaced
        atomically, and only when something is dropped.
        """

        def kept(record: Mapping[str, Any]) -> bool:
            stage = record["stage"]
            if stage == "before":
                return True
            if stage not in ("epoch", "step"):
                return False
            if record["epoch"] <= epoch:
                return True
            return stage == "step" and step is not None and record["step"] <= step

        history = self._run.metric_history()
        keep = [r for r in history if kept(r)]
        if len(keep) != len(history):
            text = "".join(json.dumps(r) + "\n" for r in keep)
            with reported_write("write the metrics file", self._run.metrics_path):
                atomic_write_text(self._run.metrics_path, text)

    def record_step(self, record: Mapping[str, Any]) -> None:
        """Add one optimizer step's record to ``steps.jsonl`` (written in blocks)."""
        self._steps.append(json.dumps(record) + "\n")
        if (
            len(self._steps) >= self.STEPS_BLOCK
            or time.monotonic() - self._flushed_at >= self.STEPS_INTERVAL_S
        ):
            self.flush_steps()

    def flush_steps(self) -> None:
        """Write the step records held in memory, flushed and synced."""
        self._flushed_at = time.monotonic()
        if not self._steps:
            return
        text, self._steps = "".join(self._steps), []
        _append(self._run.steps_path, text, "steps")

    def keep_steps_through(self, step: int) -> None:
        """Forget the step records after optimizer step *step* (a resumed run makes them
        again), replacing ``steps.jsonl`` atomically when something is dropped."""
        self.flush_steps()
        history = self._run.step_history()
        keep = [r for r in history if int(r.get("step", 0)) <= step]
        if len(keep) != len(history):
            with reported_write("write the steps file", self._run.steps_path):
                atomic_write_text(self._run.steps_path, "".join(json.dumps(r) + "\n" for r in keep))

    def write_examples(self, examples: Mapping[str, Mapping[str, Any]]) -> None:
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
        _write_json(self._run.path / EXAMPLES_FILE, content, "examples")

    def record_examples(self, stage: str, examples: Mapping[str, Any]) -> None:
        """Set the example results of *stage* (``{query: [match, ...]}``), keeping the other
        stages' results."""
        current = self._run.example_results()
        current[stage] = {str(q): [str(m) for m in matches] for q, matches in examples.items()}
        self.write_examples(current)

    MAX_QUERIES = 2000
    """Queries kept per evaluation and stage in ``queries.json``."""
    MAX_RESULTS = 5
    """Top results kept per query in ``queries.json``."""

    def record_query_results(
        self, stage: str, key: str, metric: str, queries: Sequence[Mapping[str, Any]]
    ) -> None:
        """Set the per-query results of evaluation *key* at *stage* in ``queries.json``
        (``{key: {stage: {"metric", "queries": [...]}}}``), keeping the others; at most
        :attr:`MAX_QUERIES` queries and :attr:`MAX_RESULTS` results each are kept."""
        if stage not in EXAMPLE_STAGES:
            raise RunError(
                f"per-query results are kept for {' and '.join(EXAMPLE_STAGES)}, "
                f"not stage {stage!r}."
            )
        current = self._run.query_results()
        current.setdefault(str(key), {})[stage] = {
            "metric": str(metric),
            "queries": [_query_record(q, self.MAX_RESULTS) for q in queries[: self.MAX_QUERIES]],
        }
        _write_json(self._run.path / QUERIES_FILE, current, "per-query results")

    def write_data_fingerprint(self, fingerprints: Mapping[str, Any]) -> None:
        """Record the data's fingerprints (``data-fingerprint.json``) for resume to compare."""
        _write_json(self._run.path / FINGERPRINT_FILE, dict(fingerprints), "data fingerprint")

    def write_source(self, options: Mapping[str, Any]) -> None:
        """Write the config file's *options* as ``source.yml``, atomically, so that
        ``finetuner resume`` can rebuild the fit from them."""
        path = self._run.path / SOURCE_FILE
        with reported_write("write the source file", path):
            atomic_write_text(path, dump_yaml(options))


class SilentRunWriter(RunWriter):
    """The writer of a rank other than 0 in a distributed fit: it records nothing, since rank 0
    writes the run's records once for all ranks."""

    __slots__ = ()

    def set_status(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {}

    def append_metrics(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {}

    def keep_metrics_through(self, *args: Any, **kwargs: Any) -> None:
        return None

    def record_step(self, *args: Any, **kwargs: Any) -> None:
        return None

    def flush_steps(self) -> None:
        return None

    def keep_steps_through(self, *args: Any, **kwargs: Any) -> None:
        return None

    def write_examples(self, *args: Any, **kwargs: Any) -> None:
        return None

    def record_examples(self, *args: Any, **kwargs: Any) -> None:
        return None

    def record_query_results(self, *args: Any, **kwargs: Any) -> None:
        return None

    def write_source(self, *args: Any, **kwargs: Any) -> None:
        return None

    def write_data_fingerprint(self, *args: Any, **kwargs: Any) -> None:
        return None


def _write_json(path: Path, content: Any, what: str) -> None:
    with reported_write(f"write the {what} file", path):
        atomic_write_json(path, content)


def _append(path: Path, text: str, what: str) -> None:
    """Append whole lines to *path*, flushed and synced."""
    with reported_write(f"append to the {what} file", path):
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


def _query_record(query: Mapping[str, Any], max_results: int) -> dict[str, Any]:
    """One query of ``queries.json``, in JSON types, its results cut to *max_results*."""
    score = query.get("score")
    return {
        "id": str(query.get("id", "")),
        "query": str(query["query"]),
        "score": None if score is None or score != score else float(score),
        "results": [str(r) for r in list(query.get("results") or [])[:max_results]],
        "relevant": [bool(r) for r in list(query.get("relevant") or [])[:max_results]],
    }
