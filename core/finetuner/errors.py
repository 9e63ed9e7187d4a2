"""The exceptions finetuner raises: one hierarchy rooted at :class:`FinetunerError`.

Every message says what is wrong, where, and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "ConfigError",
    "DataError",
    "DataWarning",
    "DistributedError",
    "ExperimentNotFoundError",
    "FinetunerError",
    "PluginError",
    "PluginWarning",
    "RunError",
    "RunFailedError",
    "RunInProgressError",
    "RunNotFoundError",
    "Terminated",
    "TrainingDivergedError",
    "close_matches_hint",
]

import difflib
from collections.abc import Iterable


class FinetunerError(Exception):
    """Base class of every error finetuner raises on purpose."""


class ConfigError(FinetunerError, ValueError):
    """An option of ``fit``, a config file or a callback is invalid."""


class DataError(FinetunerError, ValueError):
    """Training, evaluation or inference data cannot be used as given."""


class DataWarning(UserWarning):
    """Data that can be used, but probably not as meant (the warning says how to fix it)."""


class PluginError(FinetunerError):
    """A plugin is missing, broken, or misbehaved during a run."""

    def __init__(self, message: str, *, plugin: str | None = None, hook: str | None = None):
        super().__init__(message)
        self.plugin = plugin
        self.hook = hook


class PluginWarning(UserWarning):
    """A plugin or backbone entry point could not be loaded, or was skipped."""


class RunError(FinetunerError):
    """A run or experiment cannot be found, read or changed."""


class ArtifactError(RunError):
    """An artifact (a folder or zip written by a fit) is damaged, tampered with or unsafe to load."""


class RunNotFoundError(RunError, LookupError):
    """No run of that name exists in the run store."""


class ExperimentNotFoundError(RunError, LookupError):
    """No experiment of that name exists in the run store."""


class RunInProgressError(RunError):
    """The operation needs a finished run, and this one is still going."""


class RunFailedError(RunError):
    """The operation needs a finished run, and this one failed."""


class DistributedError(FinetunerError):
    """A rank of a distributed fit failed, and with it the fit on every rank."""

    def __init__(self, message: str, *, rank: int | None = None):
        super().__init__(message)
        self.rank = rank


class Terminated(KeyboardInterrupt):
    """The process was asked to end (SIGTERM): a fit stops as it would on Ctrl-C."""


def close_matches_hint(name: str, choices: Iterable[str], *, n: int = 3) -> str:
    """Return ``" Did you mean 'a' or 'b'?"`` for a misspelt *name*, or ``""``.

    Matching ignores case, so ``tripletmarginloss`` suggests ``TripletMarginLoss``.
    """
    choices = list(choices)
    by_lower: dict[str, str] = {}
    for choice in choices:
        by_lower.setdefault(choice.lower(), choice)
    matches = difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=0.6)
    if not matches:
        return ""
    quoted = [f"'{by_lower[m]}'" for m in matches]
    if len(quoted) == 1:
        return f" Did you mean {quoted[0]}?"
    return f" Did you mean {', '.join(quoted[:-1])} or {quoted[-1]}?"


class TrainingDivergedError(RunError):
    """The fit diverged: its loss, a metric or the model's weights became NaN or infinite, and
    the run failed rather than finish with a model whose embeddings are NaN."""
