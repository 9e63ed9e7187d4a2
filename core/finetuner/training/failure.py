"""What a fit was doing, and what happens when it fails.

The fit loop enters a :class:`Phase` through :meth:`PhaseTracker.enter`, a context manager: a
block that finishes puts the outer phase back, so an evaluation in the middle of an epoch
returns the fit to ``train``; a block that raises leaves its own phase, so the failure is
recorded with the phase it happened in. :func:`record_failure` then marks the run ``FAILED``
with the reason, the plugin and hook that raised (when one did) and the phase, logs it, and
tells the plugins through ``finetuner_on_exception``.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ..context import TrainingContext
from ..errors import PluginError, Terminated
from ..events import ExceptionRaised
from ..plugins import FinetunerPluginManager
from ..runs import RunStatus
from ..runs.writer import RunWriter

__all__ = [
    "Blame",
    "Failure",
    "Phase",
    "PhaseTracker",
    "as_terminated",
    "describe_failure",
    "format_reason",
    "record_failure",
    "terminate_on_sigterm",
]


class Phase(str, Enum):
    """What the trainer is doing; recorded as ``phase`` in ``status.json`` when a fit fails."""

    SETUP = "setup"
    PLUGINS = "plugins"
    CONFIGURE = "configure"
    FIT_BEGIN = "fit_begin"
    EVALUATE = "evaluate"
    PUBLISH = "publish"
    TRAIN = "train"
    VALIDATE = "validate"
    EPOCH_END = "epoch_end"
    TRAIN_END = "train_end"
    ARTIFACT = "artifact"
    FIT_END = "fit_end"

    def __str__(self) -> str:
        return self.value


class PhaseTracker:
    """The current :class:`Phase` of one fit."""

    def __init__(self, phase: Phase = Phase.SETUP) -> None:
        self.current = phase

    @contextmanager
    def enter(self, phase: Phase) -> Iterator[None]:
        """Run a block in *phase*. On success the outer phase is current again; on an error
        *phase* stays current, so the failure names it."""
        outer, self.current = self.current, phase
        yield
        self.current = outer


def format_reason(exc: BaseException) -> str:
    """``Type: message`` (or just ``Type``), the reason recorded for a failed run."""
    if isinstance(exc, Terminated):
        return "terminated (SIGTERM)"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (KeyboardInterrupt)"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class Failure:
    """Why a fit failed: the reason, the plugin and hook that raised (if one did), the phase."""

    reason: str
    plugin: str | None
    hook: str | None
    phase: Phase


def describe_failure(
    exc: BaseException, phase: Phase, plugin_manager: FinetunerPluginManager | None = None
) -> Failure:
    """Attribute *exc* to the plugin whose hook raised it, when one did."""
    plugin, hook = plugin_manager.culprit(exc) if plugin_manager is not None else (None, None)
    if plugin is None and isinstance(exc, PluginError):
        plugin, hook = exc.plugin, exc.hook
    return Failure(format_reason(exc), plugin, hook, phase)


@dataclass(frozen=True)
class Blame:
    """In a distributed fit: the rank that failed first, and its :class:`Failure` (or just a
    reason, for a rank that ended without saying why)."""

    rank: int
    reason: str
    plugin: str | None = None
    hook: str | None = None
    phase: str | None = None


_signalled = threading.Event()
"""Set once SIGTERM arrived inside :func:`terminate_on_sigterm`."""


@contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """A block in which SIGTERM (``kill``, a launcher tearing the job down) raises
    :class:`~finetuner.errors.Terminated` once, so the fit fails as on Ctrl-C: recorded, with
    its plugins told. Outside the main thread signals cannot be caught, and nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False
    _signalled.clear()

    def handler(signum: int, frame: Any) -> None:
        nonlocal raised
        if not raised:  # a second signal must not interrupt the recording of the first
            raised = True
            _signalled.set()
            raise Terminated("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def as_terminated(exc: BaseException) -> BaseException:
    """*exc*, or a :class:`~finetuner.errors.Terminated` when SIGTERM caused it: a library
    that catches the signal's exception midway (torch's file writer does) raises its own."""
    if _signalled.is_set() and not isinstance(exc, Terminated):
        return Terminated("terminated (SIGTERM)")
    return exc


def record_failure(
    exc: BaseException,
    phase: Phase,
    *,
    writer: RunWriter,
    log: Any,
    plugin_manager: FinetunerPluginManager | None = None,
    ctx: TrainingContext | None = None,
    blame: Blame | None = None,
) -> Failure:
    """Record that the fit failed with *exc* in *phase*: the run's status, its log, a note on
    the exception naming the plugin, and ``finetuner_on_exception``. *blame*, in a
    distributed fit, names the rank that failed and its reason, recorded in place of this
    rank's own. Nothing here raises: the original exception is what the caller re-raises."""
    failure = describe_failure(exc, phase, plugin_manager)
    if failure.plugin is not None and hasattr(exc, "add_note"):  # Python 3.11+
        exc.add_note(f"raised by plugin '{failure.plugin}' in {failure.hook}")
    fields: dict[str, Any] = {
        "reason": failure.reason,
        "plugin": failure.plugin,
        "hook": failure.hook,
    }
    phase_name = phase.value
    if blame is not None:
        fields.update(reason=blame.reason, plugin=blame.plugin, hook=blame.hook, rank=blame.rank)
        phase_name = blame.phase or phase_name
    try:
        writer.set_status(RunStatus.FAILED, **fields, phase=phase_name)
    except Exception as status_exc:  # a full disk, a folder gone: the caller still gets exc
        print(
            f"warning: run '{writer.run.name}' could not be marked FAILED ({status_exc}); "
            "its status.json is out of date.",
            file=sys.stderr,
        )
    try:
        log.error("run failed", **fields, phase=phase_name)
    except Exception:
        pass
    if plugin_manager is not None and ctx is not None:
        event = ExceptionRaised(
            exception=exc, plugin=failure.plugin, hook=failure.hook, phase=phase.value
        )
        try:
            plugin_manager.hook.finetuner_on_exception(ctx=ctx, event=event)
        except Exception as hook_exc:
            try:
                log.error("finetuner_on_exception raised", error=format_reason(hook_exc))
            except Exception:
                pass
    return failure
