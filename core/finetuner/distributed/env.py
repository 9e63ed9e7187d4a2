"""The ranks of a distributed fit: joining their process group and sharing values between them.

``torchrun`` (or any launcher) starts one process per rank with ``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`start` joins the process group
they describe, unless the user's script joined one already. Every collective here returns at
once, communicating nothing, when there is a single process.
"""

from __future__ import annotations

import atexit
import gc
import os
import pickle
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from ..errors import ConfigError, FinetunerError

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

BACKENDS = ("auto", "gloo", "nccl")
TIMEOUT_ENV = "FINETUNER_DISTRIBUTED_TIMEOUT"
"""Seconds a collective waits for the other ranks before it fails (default 1800)."""
_FAILED_KEY = "finetuner/failed/{rank}"
T = TypeVar("T")


@dataclass(frozen=True)
class DistributedEnv:
    """This process's place among the ranks of a fit."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    peers: tuple[tuple[str, int], ...] = ()
    """``(host, pid)`` of every rank, in rank order (empty with one process)."""

    @property
    def enabled(self) -> bool:
        """Whether there is more than one rank."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the run's records, checkpoints and artifact."""
        return self.rank == 0

    def device_for(self, device: torch.device) -> torch.device:
        """*device*, on CUDA pinned to this rank's local GPU when no index is given."""
        if self.enabled and device.type == "cuda" and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device


_PEERS: tuple[tuple[str, int], ...] = ()


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def current() -> DistributedEnv:
    """The ranks of the joined process group; a single rank when there is none."""
    if not _initialized():
        return DistributedEnv()
    rank = dist.get_rank()
    return DistributedEnv(
        rank=rank,
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", rank)),
        backend=str(dist.get_backend()),
        peers=_PEERS,
    )


def is_main_process() -> bool:
    """Rank 0 of the process group, or of the launcher's ``RANK`` before it is joined."""
    if _initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


def _timeout() -> timedelta:
    raw = os.environ.get(TIMEOUT_ENV, "1800")
    try:
        seconds = float(raw)
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds.") from None
    if not seconds > 0:
        raise ConfigError(f"{TIMEOUT_ENV} must be a positive number of seconds, not {raw}.")
    return timedelta(seconds=seconds)


def start(backend: str, device: torch.device) -> DistributedEnv:
    """Join the process group a launcher described (``WORLD_SIZE`` > 1), with *backend*
    (``'auto'``: nccl on CUDA, gloo otherwise); a process group the caller joined already is
    used as it is. With one process nothing happens."""
    global _PEERS
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r} is not one of {', '.join(map(repr, BACKENDS))}.")
    if not _initialized():
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world <= 1:
            return DistributedEnv()
        missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
        if missing:
            raise ConfigError(
                f"WORLD_SIZE={world} but {', '.join(missing)} is not set; start the fit with "
                "torchrun (or `finetuner fit --nproc N`), which sets them all."
            )
        chosen = backend if backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
        if chosen == "nccl" and device.type != "cuda":
            raise ConfigError(
                f"backend='nccl' needs CUDA devices, and this fit runs on '{device}'; use "
                "backend='gloo' (or 'auto')."
            )
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(chosen, timeout=_timeout())
        atexit.register(_leave)
    if dist.get_world_size() > 1 and not _PEERS:
        _PEERS = tuple(all_gather_object((socket.gethostname(), os.getpid())))
    return current()


def _leave() -> None:
    if _initialized():
        gc.collect()  # DDP wrappers still alive in a cycle would use the group as it goes
        try:
            dist.destroy_process_group()
        except Exception:  # the other ranks may be gone; nothing is left to tidy
            pass


def broadcast_object(value: T) -> T:
    """Rank 0's *value*, on every rank."""
    if not _initialized() or dist.get_world_size() == 1:
        return value
    box = [value if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[return-value]


def all_gather_object(value: T) -> list[T]:
    """Every rank's *value*, in rank order."""
    if not _initialized() or dist.get_world_size() == 1:
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def barrier() -> None:
    """Wait until every rank is here."""
    if _initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return FinetunerError(f"{type(exc).__name__}: {exc}")


def run_on_main(fn: Callable[[], T]) -> T:
    """``fn()`` run on rank 0 only, its result (or its error, raised again) on every rank."""
    if not _initialized() or dist.get_world_size() == 1:
        return fn()
    outcome: tuple[bool, Any] = (True, None)
    if dist.get_rank() == 0:
        try:
            outcome = (True, fn())
        except Exception as exc:
            outcome = (False, _picklable(exc))
    ok, value = broadcast_object(outcome)
    if not ok:
        raise value
    return value


def shard_bounds(size: int, rank: int, world_size: int) -> tuple[int, int]:
    """The rows ``[start, stop)`` of *size* that *rank* takes: contiguous, the first ranks one
    more when *size* does not divide evenly."""
    base, extra = divmod(size, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def gather_array_rows(array: np.ndarray) -> np.ndarray:
    """The rows of every rank's *array* (same columns and dtype), concatenated in rank order."""
    if not _initialized() or dist.get_world_size() == 1:
        return array
    world = dist.get_world_size()
    local = torch.from_numpy(np.ascontiguousarray(array))
    sizes = [torch.zeros(1, dtype=torch.long) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([local.shape[0]], dtype=torch.long))
    counts = [int(s.item()) for s in sizes]
    padded = torch.zeros((max(counts), *local.shape[1:]), dtype=local.dtype)
    padded[: local.shape[0]] = local
    if dist.get_backend() == "nccl":
        padded = padded.cuda()
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n].cpu() for p, n in zip(parts, counts)]).numpy()


def _store() -> Any:
    try:
        from torch.distributed import distributed_c10d

        return distributed_c10d._get_default_store()
    except Exception:
        return None


def report_failure(reason: str) -> None:
    """Tell the other ranks why this one fails (best effort: the store may be gone too)."""
    store = _store()
    if store is None:
        return
    try:
        store.set(_FAILED_KEY.format(rank=dist.get_rank()), reason)
    except Exception:
        pass


def reported_failures() -> dict[int, str]:
    """The reasons ranks reported with :func:`report_failure`, by rank."""
    store = _store()
    if store is None or not _initialized():
        return {}
    found: dict[int, str] = {}
    for rank in range(dist.get_world_size()):
        key = _FAILED_KEY.format(rank=rank)
        try:
            if store.check([key]):
                found[rank] = store.get(key).decode("utf-8", "replace")
        except Exception:
            break
    return found


def _gone(pid: int) -> bool:
    """Whether process *pid* of this host has ended (a zombie counts as ended)."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return fields[0] in ("Z", "X")
    except FileNotFoundError:
        return True
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False


def lost_peers(env: DistributedEnv) -> list[int]:
    """The ranks on this host, other than this one, whose process has ended."""
    host = socket.gethostname()
    return [
        rank
        for rank, (peer_host, pid) in enumerate(env.peers)
        if rank != env.rank and peer_host == host and _gone(pid)
    ]
