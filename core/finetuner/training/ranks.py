"""Which rank a distributed fit failed on, and why, as rank 0 records it.

A rank that raises tells the others through the process group's store before it exits. Its
peers then fail too: a collective with a rank that is gone raises, or the launcher ends them
with SIGTERM. Rank 0 records the first rank that failed of its own accord; a rank that ended
without a word (SIGKILL, the out-of-memory killer) is found by its process being gone. When
rank 0 itself is the one gone, the next rank on its host records the failure in its place.
"""

from __future__ import annotations

import torch

from .. import distributed
from ..distributed import DistributedEnv
from ..errors import Terminated
from ..runs import Run, RunStatus
from ..runs.writer import RunWriter
from .failure import Blame, format_reason

__all__ = ["is_peer_failure", "record_rank_failure"]

_PEER = "peer: "
"""Prefix of a reported reason that only echoes another rank's failure."""


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


def _blame(env: DistributedEnv, own: str, exc: BaseException) -> Blame:
    """The first rank that failed of its own accord, else one that is gone, else this one."""
    if not is_peer_failure(exc):
        return Blame(env.rank, own)
    for rank, reason in sorted(distributed.reported_failures().items()):
        if rank != env.rank and not reason.startswith(_PEER):
            return Blame(rank, reason)
    gone = distributed.lost_peers(env)
    if gone:
        return Blame(gone[0], _lost(env, gone[0]))
    return Blame(env.rank, f"{own} (another rank may have failed first)")


def record_rank_failure(exc: BaseException, env: DistributedEnv, run: Run) -> Blame | None:
    """In a distributed fit: tell the other ranks why this one fails, and return whom rank 0
    records as the cause. A rank other than 0 records the failure in the run itself only when
    rank 0's process is gone. With one process: ``None``."""
    if not env.enabled:
        return None
    own = format_reason(exc)
    distributed.report_failure((_PEER if is_peer_failure(exc) else "") + own)
    blame = _blame(env, own, exc)
    if env.is_main:
        return blame
    gone = distributed.lost_peers(env)
    survivors = [r for r in range(env.world_size) if r not in gone]
    if 0 in gone and survivors and survivors[0] == env.rank and run.path.is_dir():
        try:
            RunWriter(run).set_status(RunStatus.FAILED, reason=blame.reason, rank=blame.rank)
        except Exception:  # recording is best effort; the error itself still propagates
            pass
    return blame
