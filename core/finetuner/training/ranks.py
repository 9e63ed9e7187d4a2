"""Which rank a distributed fit failed on, and why, as rank 0 records it.

A rank that raises tells the others through the process group's store before it exits. Its
peers then fail too: a collective with a rank that is gone raises, or the launcher ends them
with SIGTERM. Rank 0 records the first rank that failed of its own accord; a rank that ended
without a word (SIGKILL, the out-of-memory killer) is found by its process being gone. When
rank 0 itself is the one gone, the next rank on its host records the failure in its place.
"""

from __future__ import annotations

import json

import torch

from .. import distributed
from ..distributed import DistributedEnv
from ..errors import Terminated
from ..runs import Run, RunStatus
from ..runs.writer import RunWriter
from .failure import Blame, Failure

__all__ = ["is_peer_failure", "record_rank_failure"]


def is_peer_failure(exc: BaseException) -> bool:
    """Whether *exc* only follows from another rank's end: the launcher's SIGTERM, or a
    collective whose peer is gone."""
    if isinstance(exc, Terminated):
        return True
    backend_error = getattr(torch.distributed, "DistBackendError", ())
    if backend_error and isinstance(exc, backend_error):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        words in text for words in ("connection closed by peer", "connection reset", "gloo")
    )


def _lost(env: DistributedEnv, rank: int) -> str:
    pid = env.peers[rank][1] if rank < len(env.peers) else "?"
    return (
        f"rank {rank} (pid {pid}) ended without reporting an error: it was killed (SIGKILL, "
        "or the out-of-memory killer) or crashed"
    )


def _own(env: DistributedEnv, failure: Failure) -> Blame:
    return Blame(env.rank, failure.reason, failure.plugin, failure.hook, failure.phase.value)


def _reported(rank: int, text: str) -> Blame | None:
    """A rank's report, unless it only echoes another rank's failure."""
    try:
        report = json.loads(text)
    except ValueError:
        return None
    if not isinstance(report, dict) or report.get("peer"):
        return None
    return Blame(
        rank,
        str(report.get("reason")),
        report.get("plugin"),
        report.get("hook"),
        report.get("phase"),
    )


def _blame(env: DistributedEnv, failure: Failure, exc: BaseException) -> Blame:
    """The first rank that failed of its own accord, else one that is gone, else this one."""
    if not is_peer_failure(exc):
        return _own(env, failure)
    for rank, text in sorted(distributed.reported_failures().items()):
        found = _reported(rank, text) if rank != env.rank else None
        if found is not None:
            return found
    gone = distributed.lost_peers(env)
    if gone:
        return Blame(gone[0], _lost(env, gone[0]))
    own = _own(env, failure)
    return Blame(
        env.rank,
        f"{own.reason} (another rank may have failed first)",
        own.plugin,
        own.hook,
        own.phase,
    )


def record_rank_failure(
    exc: BaseException, failure: Failure, env: DistributedEnv, run: Run
) -> Blame | None:
    """In a distributed fit: tell the other ranks why this one fails (*failure*), and return
    whom rank 0 records as the cause. A rank other than 0 records the failure in the run
    itself only when rank 0's process is gone. With one process: ``None``."""
    if not env.enabled:
        return None
    report = {
        "reason": failure.reason,
        "plugin": failure.plugin,
        "hook": failure.hook,
        "phase": failure.phase.value,
        "peer": is_peer_failure(exc),
    }
    distributed.report_failure(json.dumps(report))
    blame = _blame(env, failure, exc)
    if env.is_main:
        return blame
    gone = distributed.lost_peers(env)
    survivors = [r for r in range(env.world_size) if r not in gone]
    if 0 in gone and survivors and survivors[0] == env.rank and run.path.is_dir():
        try:
            RunWriter(run).set_status(
                RunStatus.FAILED,
                reason=blame.reason,
                plugin=blame.plugin,
                hook=blame.hook,
                phase=blame.phase,
                rank=blame.rank,
            )
        except Exception:  # recording is best effort; the error itself still propagates
            pass
    return blame
