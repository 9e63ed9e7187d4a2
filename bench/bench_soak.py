"""Benchmark: does a long-lived process that fits again and again keep its memory, and how long
does the run store take to list 10,000 runs.

Not a test. Two parts:

``fits``
    ``--fits`` (default 50) tiny fits in a row in this one process (``mlp`` on 40 tensors, one
    epoch, a fresh run each), the resident memory (RSS) measured after the first fit, after the
    ``--warmup``-th and after the last, with ``gc.collect()`` before each measurement; also the
    number of live torch tensors and of objects the garbage collector tracks. The growth from
    the warm-up to the last fit, per fit, is the figure that a leak would make grow.

``store``
    A run store of ``--runs`` runs (default 10,000) in 10 experiments, written by
    ``create_run`` and ``RunWriter`` as a fit writes them (``config.json``, ``status.json``,
    a third of the runs FINISHED, a third FAILED), then ``list_runs()`` (the API) and
    ``finetuner runs`` / ``finetuner runs --json`` (the command line, a new process each time)
    timed, medians of ``--repeats`` (at least 5), taking turns.

    python bench/bench_soak.py                  # both parts
    python bench/bench_soak.py --part store --runs 10000

What the figures leave out: RSS counts what the allocator keeps after freeing (glibc does not
always give memory back), so it over-states a leak rather than hiding one; the store lives in a
temporary folder on whatever file system ``$TMPDIR`` is (often tmpfs: no disk latency), and the
first listing after writing finds every file in the page cache.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil


def _live() -> tuple[float, int, int]:
    """RSS in MiB, live torch tensors and tracked objects, after a full collection."""
    import torch

    gc.collect()
    objects = gc.get_objects()
    tensors = sum(1 for o in objects if isinstance(o, torch.Tensor))
    return psutil.Process().memory_info().rss / 2**20, tensors, len(objects)


def soak(fits: int, warmup: int, runs_dir: Path) -> dict[str, float]:
    """*fits* tiny fits in a row; memory after the first, the *warmup*-th and the last."""
    import finetuner
    from finetuner.testing import make_tiny_data

    data = make_tiny_data()
    marks: dict[int, tuple[float, int, int]] = {}
    for i in range(1, fits + 1):
        finetuner.fit(
            "mlp",
            data,
            model_options={"hidden_sizes": [16]},
            epochs=1,
            batch_size=8,
            seed=i,
            runs_dir=runs_dir,
        )
        if i in (1, warmup, fits):
            marks[i] = _live()
            rss, tensors, objects = marks[i]
            print(f"  after fit {i:3d}: RSS {rss:8.1f} MiB, {tensors} tensors, {objects} objects")
    first, warm, last = marks[1], marks[warmup], marks[fits]
    per_fit = (last[0] - warm[0]) / max(fits - warmup, 1)
    print(
        f"RSS growth: first->last {last[0] - first[0]:+.1f} MiB, warm-up (fit {warmup})->last "
        f"{last[0] - warm[0]:+.1f} MiB ({per_fit * 1024:+.0f} KiB per fit); tensors "
        f"{first[1]}->{last[1]}, objects {first[2]}->{last[2]}"
    )
    return {"growth_mib": last[0] - warm[0], "per_fit_kib": per_fit * 1024}


def build_store(root: Path, runs: int) -> None:
    """*runs* runs in 10 experiments, written the way a fit writes them."""
    from finetuner.runs import RunWriter, create_run

    statuses = ["FINISHED", "FAILED", None]
    for i in range(runs):
        run = create_run(
            {"model": "mlp", "epochs": 1},
            run_name=f"run-{i:05d}",
            experiment_name=f"exp-{i % 10}",
            runs_dir=root,
        )
        final = statuses[i % 3]
        if final is not None:
            writer = RunWriter(run)
            writer.set_status("STARTED")
            writer.set_status(final, **({"reason": "boom"} if final == "FAILED" else {}))


def _time_cli(args: list[str], root: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "finetuner", *args, "--runs-dir", str(root)],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "FINETUNER_RUNS_DIR": str(root)},
    )
    return time.perf_counter() - start


def time_listing(root: Path, repeats: int) -> dict[str, float]:
    from finetuner.runs import list_runs

    times: dict[str, list[float]] = {"list_runs()": [], "finetuner runs": [], "--json": []}
    for _ in range(repeats):
        start = time.perf_counter()
        count = len(list_runs(runs_dir=root))
        times["list_runs()"].append(time.perf_counter() - start)
        times["finetuner runs"].append(_time_cli(["runs"], root))
        times["--json"].append(_time_cli(["runs", "--json"], root))
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(f"listing {count} runs, medians of {repeats}:")
    for key, value in medians.items():
        print(f"  {key:15s} {value:7.3f} s")
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["fits", "store", "both"], default="both")
    parser.add_argument("--fits", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--store", type=Path, help="list this existing run store instead")
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error("--repeats must be at least 5")
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("fits", "both"):
            print(f"{args.fits} tiny fits in one process:")
            soak(args.fits, args.warmup, Path(tmp) / "soak")
        if args.store is not None:
            time_listing(args.store, args.repeats)
        elif args.part in ("store", "both"):
            root = Path(tmp) / "store"
            start = time.perf_counter()
            build_store(root, args.runs)
            print(f"wrote {args.runs} runs in {time.perf_counter() - start:.1f} s")
            time_listing(root, args.repeats)


if __name__ == "__main__":
    main()
