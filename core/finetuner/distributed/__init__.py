"""Training in several processes: the process group, what ranks share, and negatives gathered
across ranks.

:mod:`.env` finds the ranks that ``torchrun`` (or any launcher setting ``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``) started, joins their process group, and
gives the few collectives the trainer needs: one rank's value for all, and every rank's values
for each. With one process all of them are free and do nothing.
"""

from .env import (
    BACKENDS,
    DistributedEnv,
    all_gather_object,
    barrier,
    broadcast_object,
    current,
    gather_array_rows,
    is_main_process,
    lost_peers,
    report_failure,
    reported_failures,
    run_on_main,
    shard_bounds,
    start,
)

__all__ = [
    "BACKENDS",
    "DistributedEnv",
    "all_gather_object",
    "barrier",
    "broadcast_object",
    "current",
    "gather_array_rows",
    "is_main_process",
    "lost_peers",
    "report_failure",
    "reported_failures",
    "run_on_main",
    "shard_bounds",
    "start",
]
