"""The local run store: experiments and runs as folders on disk.

A run folder holds the resolved config, the status, the log, the metrics, example results,
checkpoints and the artifact (the file names are in :mod:`~finetuner.runs.layout`). Everything
is re-read from disk on each call, so a :class:`Run` opened in another process sees the run as
the trainer writes it. Reading runs imports neither torch nor pydantic.

Which module does what:

- ``layout``: where the store is, its file names, run and experiment names, :class:`RunStatus`.
- ``run``: :class:`Run`, the reading side (status, config, logs, metrics, examples, artifact).
- ``writer``: :class:`RunWriter`, the trainer's writing side.
- ``experiments``: :class:`Experiment` and the experiment functions.
- ``store``: creating, finding, listing and deleting runs.
- ``folders``: scanning and removing run folders; ``processes``: whether a run's process lives.
- ``jsonfiles``: reading JSON and JSON-lines files; ``render``: log lines and tables for people.
- ``log``: the run's JSON-lines log (:class:`~finetuner.runs.log.RunLog`).
- ``checkpoints``: training checkpoints on disk (torch is imported only when one is used).
- ``report``: the run report, one self-contained HTML file; ``figures``: its plotly plots;
  ``html``: HTML tables and thumbnails; ``notebook``: how runs and their results show in Jupyter.
"""

from __future__ import annotations

from .experiments import (
    Experiment,
    create_experiment,
    delete_experiment,
    ensure_experiment,
    get_experiment,
    list_experiments,
)
from .layout import (
    DEFAULT_EXPERIMENT,
    RUNS_DIR_ENV,
    RunStatus,
    generate_run_name,
    resolve_runs_dir,
    validate_name,
)
from .run import Run
from .store import create_run, delete_run, get_run, list_runs
from .writer import RunWriter

__all__ = [
    "DEFAULT_EXPERIMENT",
    "RUNS_DIR_ENV",
    "Experiment",
    "Run",
    "RunStatus",
    "RunWriter",
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
