"""``--nproc N``: a command run in N processes on this machine by torch's own elastic launcher
(what ``torchrun --standalone --nproc-per-node N`` runs), each process one rank of the fit.

The ranks inherit the terminal: rank 0 prints the progress and the one-line error, if any, and
the others stay quiet. The launcher's own log is shown with ``--debug`` only.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import uuid
from collections.abc import Sequence

from ..errors import ConfigError

__all__ = ["launch", "under_launcher"]


def under_launcher() -> bool:
    """Whether this process is one rank of a launched job (torchrun sets ``WORLD_SIZE``)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def check_nproc(nproc: int) -> None:
    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, not {nproc}.")
    if nproc > 1 and under_launcher():
        raise ConfigError(
            "--nproc was given to a process that torchrun started already; give the number of "
            "processes to one of them: torchrun's --nproc-per-node, or --nproc without torchrun."
        )


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def launch(nproc: int, argv: Sequence[str], *, debug: bool = False) -> int:
    """Run ``python -m finetuner ARGV`` as *nproc* ranks; returns the exit status (0 when every
    rank succeeded)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if not debug:
        logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    # Each rank gets its share of the cores, as torchrun does (unless the user chose).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.5,
    )
    args = ["-m", "finetuner", *(["--debug"] if debug else []), *argv]
    try:
        elastic_launch(config, sys.executable)(*args)
    except ChildFailedError as exc:
        killed = [
            f"rank {rank} was ended by {_signal_name(failure.exitcode)}"
            for rank, failure in sorted(exc.failures.items())
            if failure.exitcode < 0
        ]
        if killed:  # a rank that was killed printed nothing itself
            print(f"error: {'; '.join(killed)}", file=sys.stderr)
        return 1
    return 0
