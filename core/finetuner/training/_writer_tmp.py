"""TEMPORARY: the RunWriter interface over today's Run; replaced by finetuner.runs.writer."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .._io import atomic_write_text
from ..runs import Run


class RunWriter:
    def __init__(self, run: Run) -> None:
        self.run = run

    def set_status(self, status: Any, **fields: Any) -> dict[str, Any]:
        return self.run._set_status(status, **fields)

    def append_metrics(self, stage, epoch, step, metrics, skipped=None):
        return self.run._append_metrics(stage, epoch, step, metrics, skipped=skipped)

    def record_examples(self, stage: str, examples: Mapping[str, Any]) -> None:
        current = self.run.example_results()
        current[stage] = {str(q): [str(m) for m in matches] for q, matches in examples.items()}
        self.run._write_examples(current)

    def keep_metrics_through(self, epoch: int) -> None:
        run = self.run
        history = run.metric_history()
        keep = [
            r
            for r in history
            if r["stage"] == "before" or (r["stage"] in ("epoch", "step") and r["epoch"] <= epoch)
        ]
        if len(keep) != len(history):
            atomic_write_text(run.metrics_path, "".join(json.dumps(r) + "\n" for r in keep))

    def write_source(self, options: Mapping[str, Any]) -> None:
        from ..models.artifact import dump_yaml

        atomic_write_text(self.run.path / "source.yml", dump_yaml(options))
