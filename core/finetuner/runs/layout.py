"""The run store's layout: where it is, what its files are called, and what names may be.

Layout (the root is ``runs_dir``, else ``$FINETUNER_RUNS_DIR``, else ``./finetuner-runs``)::

    <root>/<experiment>/experiment.json          {"name", "created_at"}
    <root>/<experiment>/<run>/config.json        the resolved config, written once
    <root>/<experiment>/<run>/status.json        status, timestamps, pid, failure reason
    <root>/<experiment>/<run>/logs.jsonl         JSON lines written by the trainer's logger
    <root>/<experiment>/<run>/metrics.jsonl      one record per metrics publish
    <root>/<experiment>/<run>/steps.jsonl        one record per optimizer step (loss, grad norm)
    <root>/<experiment>/<run>/examples.json      {stage: {query: [match, ...]}}
    <root>/<experiment>/<run>/queries.json       per-query scores and top results, before/after
    <root>/<experiment>/<run>/source.yml         a config file's options (``finetuner fit``)
    <root>/<experiment>/<run>/run.lock           locked by the process training the run
    <root>/<experiment>/<run>/data-fingerprint.json  what resume checks the data against
    <root>/<experiment>/<run>/checkpoints/       written by checkpointing plugins
    <root>/<experiment>/<run>/artifact/          written when the run finishes

Run and experiment names are single, visible folder names, so a name never reaches outside its
folder. This module reads and writes nothing; it only names things.
"""

from __future__ import annotations

import os
import random
import re
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path

from ..errors import ConfigError

__all__ = [
    "ARTIFACT_DIR",
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "DEFAULT_EXPERIMENT",
    "DEFAULT_RUNS_DIR",
    "EXAMPLES_FILE",
    "EXAMPLE_STAGES",
    "EXPERIMENT_FILE",
    "FINAL_STATUSES",
    "FINGERPRINT_FILE",
    "LOCK_FILE",
    "LOG_FILE",
    "METRICS_FILE",
    "METRIC_STAGES",
    "NAME_PATTERN",
    "QUERIES_FILE",
    "RUNS_DIR_ENV",
    "SOURCE_FILE",
    "STATUS_FILE",
    "STEPS_FILE",
    "RunStatus",
    "describe_root",
    "generate_run_name",
    "resolve_runs_dir",
    "utc_now",
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
STEPS_FILE = "steps.jsonl"
EXAMPLES_FILE = "examples.json"
QUERIES_FILE = "queries.json"
SOURCE_FILE = "source.yml"
LOCK_FILE = "run.lock"
FINGERPRINT_FILE = "data-fingerprint.json"
CHECKPOINT_DIR = "checkpoints"
ARTIFACT_DIR = "artifact"

METRIC_STAGES = ("before", "epoch", "step", "after")
EXAMPLE_STAGES = ("before", "after")

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
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


FINAL_STATUSES = frozenset({RunStatus.FINISHED.value, RunStatus.FAILED.value})
"""The statuses after which a run writes nothing more."""


def utc_now() -> str:
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


def describe_root(root: Path) -> str:
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
    if NAME_PATTERN.fullmatch(name):
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
