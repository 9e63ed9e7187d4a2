"""Distributed training on this machine: one process against two (torchrun, gloo on the CPU).

Two measurements, each a subcommand:

``throughput``: the pretrained MiniLM (``sentence-transformers/all-MiniLM-L6-v2``, the offline
copy) fine-tuned for one epoch with ``MultipleNegativesRankingLoss`` on the first ``--pairs``
of the built-in ``products-train`` pairs, global batch 32, in three configurations:

* ``1 proc``: one process, ``batch_size=32``, ``OMP_NUM_THREADS=2``;
* ``2 proc``: two ranks (``python -m torch.distributed.run --standalone --nproc-per-node 2``),
  ``batch_size=16`` each, ``OMP_NUM_THREADS=1`` each;
* ``2 proc gather``: the same with ``gather_across_devices=True`` (every rank's queries
  scored against the documents of both ranks, as the one process scores its 32).

Each fit is a fresh process (or launcher and ranks), the configurations taking turns in a
rotating order within each run-set; medians over the run-sets. Timed: *whole*, from starting
the command to its exit (interpreter, imports, launcher, model load, the epoch, the artifact,
the process group's teardown); *epoch*, on rank 0 from the epoch's begin hook to its
train-epoch-end hook (every step of the epoch, the sampler and collation, the per-step records;
nothing before or after); *steady step*, from the run's ``steps.jsonl``: the time between the
first and the last step's record over the steps between them (the first step, slower, left out).

``comm``: the share of a two-rank step spent on synchronising. Run under torchrun with two
ranks of one thread each, it builds the set-up ``fit`` builds (``build_setup``) and the
trainer's own ``TrainingStep`` (the model in ``DistributedDataParallel``, as in a fit), and
times steps on fixed batches of 16 pairs per rank in four variants: with and without
``gather_across_devices``, each with DDP's gradient all-reduce (as in a fit) and inside
``no_sync()`` on the DDP modules (no gradient all-reduce; everything else, the loss's
all-reduce included, stays). The share of the gradient all-reduce is (synced - unsynced) /
synced; the gather's cost is gathered / local, both synced. After each step the two
broadcasts the epoch loop makes (rank 0's evaluation and checkpoint decisions) are timed
apart.

Usage (from the repository root, in the environment the README describes)::

    python bench/bench_distributed.py throughput   # --pairs 1200 --repeats 5
    python bench/bench_distributed.py comm         # --steps 8 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

STARTED = time.time()  # before the heavy imports: the worker's own start-up is in "whole"

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
GLOBAL_BATCH = 32
CONFIGS = {
    "1 proc": {"nproc": 1, "threads": 2, "gather": False},
    "2 proc": {"nproc": 2, "threads": 1, "gather": False},
    "2 proc gather": {"nproc": 2, "threads": 1, "gather": True},
}
VARIANTS = ("local synced", "local no_sync", "gather synced", "gather no_sync")


def _pairs(count: int) -> list[dict]:
    from finetuner.data.builtin_text import product_task

    pairs = product_task().train_pairs
    if count > len(pairs):
        raise SystemExit(f"--pairs: products-train has {len(pairs)} pairs, not {count}")
    return [{"query": q, "pos": [d]} for q, d in pairs[:count]]


def _env(threads: int) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _command(nproc: int, *args: str) -> list[str]:
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    return [sys.executable, *(launcher if nproc > 1 else []), __file__, *args]


def _median(values: list[float]) -> float:
    return statistics.median(values)


# --- throughput: whole fits ----------------------------------------------------------------


def fit_worker(pairs: int, per_rank: int, gather: bool, out: Path) -> None:
    """One rank of a fit; writes ``out/rank-R.json``."""
    import finetuner

    rank = int(os.environ.get("RANK", "0"))
    seen: dict = {"batches": 0}

    class Timer(finetuner.callback.Callback):
        def finetuner_on_epoch_begin(self, ctx, event):
            seen["epoch_begin"] = time.perf_counter()

        def finetuner_on_train_batch_end(self, ctx, event):
            seen["batches"] += 1  # (event.batch_size counts a text batch's tokenizer fields)

        def finetuner_on_train_epoch_end(self, ctx, event):
            seen["epoch_end"] = time.perf_counter()

    fit_called = time.time()
    run = finetuner.fit(
        MINILM,
        _pairs(pairs),
        loss="MultipleNegativesRankingLoss",
        learning_rate=2e-5,
        epochs=1,
        batch_size=per_rank,
        gather_across_devices=gather,
        seed=0,
        runs_dir=str(out / "runs"),
        callbacks=[Timer()],
    )
    result = {
        "rank": rank,
        "started": STARTED,
        "fit_called": fit_called,
        "fit_returned": time.time(),
        "epoch_s": seen["epoch_end"] - seen["epoch_begin"],
        "batches": seen["batches"],
        "run": str(run.path),
    }
    (out / f"rank-{rank}.json").write_text(json.dumps(result))


def _one_fit(name: str, pairs: int, workdir: Path) -> dict:
    config = CONFIGS[name]
    nproc = config["nproc"]
    out = workdir / f"{name.replace(' ', '-')}-{time.monotonic_ns()}"
    out.mkdir()
    args = ["_fit", str(pairs), str(GLOBAL_BATCH // nproc), str(int(config["gather"])), str(out)]
    started_wall = time.time()
    started = time.perf_counter()
    done = subprocess.run(
        _command(nproc, *args),
        env=_env(config["threads"]),
        cwd=out,
        capture_output=True,
        text=True,
        timeout=900,
    )
    whole = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in range(nproc)]
    main = ranks[0]
    steps = [json.loads(line) for line in (Path(main["run"]) / "steps.jsonl").open()]
    status = json.loads((Path(main["run"]) / "status.json").read_text())
    times = [record["time"] for record in steps]
    return {
        "whole_s": whole,
        "epoch_s": main["epoch_s"],
        "steady_step_s": (times[-1] - times[0]) / (len(times) - 1),
        "to_fit_s": main["fit_called"] - started_wall,  # interpreter, imports, launcher
        "after_fit_s": started_wall + whole - main["fit_returned"],  # exit, teardown
        "batches": [r["batches"] for r in ranks],
        "steps": len(steps),
        "status": status["status"],
    }


def throughput(args: argparse.Namespace) -> None:
    names = list(CONFIGS)
    results: dict[str, list[dict]] = {name: [] for name in names}
    print(_machine())
    print(f"MiniLM, MNRL, {args.pairs} pairs, 1 epoch, global batch {GLOBAL_BATCH}")
    with tempfile.TemporaryDirectory(prefix="bench-dist-") as tmp:
        # one untimed fit of each first: file caches, bytecode
        for name in names:
            _one_fit(name, GLOBAL_BATCH * 2, Path(tmp))
        for repeat in range(args.repeats):
            order = names[repeat % len(names) :] + names[: repeat % len(names)]
            for name in order:
                result = _one_fit(name, args.pairs, Path(tmp))
                results[name].append(result)
                print(
                    f"  run-set {repeat + 1} {name:14s} whole {result['whole_s']:6.2f} s  "
                    f"epoch {result['epoch_s']:6.2f} s  steady step "
                    f"{result['steady_step_s'] * 1000:6.1f} ms  load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    _throughput_table(results, names, args.pairs)


def _throughput_table(results: dict[str, list[dict]], names: list[str], pairs: int) -> None:
    base = results[names[0]]
    items, global_batches = pairs, -(-pairs // GLOBAL_BATCH)
    for name in names:  # every rank takes its share of every global batch: all pairs train
        for r in results[name]:
            assert r["status"] == "FINISHED" and r["steps"] == global_batches, r
            assert r["batches"] == [global_batches] * CONFIGS[name]["nproc"], r
    print(
        f"\n{items} pairs per epoch, {base[0]['steps']} optimizer steps, medians of "
        f"{len(base)} run-sets; ratio: throughput / 1 proc's (per-run-set ratios' median)"
    )
    print(
        "| configuration | whole s | pairs/s whole | ratio | epoch s | pairs/s epoch | ratio "
        "| steady step ms | ratio | to fit() s | after fit() s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        rows = results[name]
        cells = [name]
        for key in ("whole_s", "epoch_s", "steady_step_s"):
            median = _median([r[key] for r in rows])
            per_set = _median([b[key] / r[key] for b, r in zip(base, rows)])
            ratio = f"{_median([b[key] for b in base]) / median:.3f} ({per_set:.3f})"
            if key == "steady_step_s":
                cells += [f"{median * 1000:.1f}", ratio]
            else:
                cells += [f"{median:.2f}", f"{items / median:.1f}", ratio]
        cells += [f"{_median([r['to_fit_s'] for r in rows]):.2f}"]
        cells += [f"{_median([r['after_fit_s'] for r in rows]):.2f}"]
        print("| " + " | ".join(cells) + " |")


# --- comm: the share of a step spent synchronising ------------------------------------------


def comm_worker(steps: int, repeats: int, out: Path) -> None:
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from finetuner import distributed
    from finetuner.config import validate_fit_options
    from finetuner.training import TrainingStep, build_setup

    env = distributed.start("gloo", torch.device("cpu"))
    assert env.world_size == 2, "run under torchrun with two processes"
    per_rank = GLOBAL_BATCH // 2
    data = _pairs(GLOBAL_BATCH * steps)
    trainers = {}
    for gather in (False, True):
        config = validate_fit_options(
            {
                "model": MINILM,
                "train_data": data,
                "loss": "MultipleNegativesRankingLoss",
                "learning_rate": 2e-5,
                "batch_size": per_rank,
                "gather_across_devices": gather,
                "seed": 0,
                "device": "cpu",
            }
        )
        setup = build_setup(config, seed=0, dist=env)
        step = TrainingStep(setup)
        step.train_mode()
        ddp = [m for m in step.trained.values() if isinstance(m, DistributedDataParallel)]
        assert ddp, "the trainer wraps the model in DDP"
        batches = [  # this rank's half of each global batch, as the sharded sampler gives
            setup.collate(
                setup.train_data.take(
                    list(
                        range(
                            i * GLOBAL_BATCH + env.rank * per_rank,
                            i * GLOBAL_BATCH + (env.rank + 1) * per_rank,
                        )
                    )
                )
            )
            for i in range(steps)
        ]
        trainers["gather" if gather else "local"] = (step, ddp, batches)

    def timed(variant: str) -> tuple[list[float], list[float]]:
        kind, mode = variant.split()
        step, ddp, batches = trainers[kind]
        step_times, broadcast_times = [], []
        distributed.barrier()
        for batch in batches:
            with ExitStack() as stack:
                if mode == "no_sync":
                    for module in ddp:
                        stack.enter_context(module.no_sync())
                started = time.perf_counter()
                step(batch)
                stepped = time.perf_counter()
            distributed.broadcast_object(None)  # the epoch loop's two decisions per step
            distributed.broadcast_object(None)
            step_times.append(stepped - started)
            broadcast_times.append(time.perf_counter() - stepped)
        return step_times, broadcast_times

    for variant in VARIANTS:  # warm-up, not counted
        timed(variant)
    records = []
    for repeat in range(repeats):
        order = VARIANTS[repeat % 4 :] + VARIANTS[: repeat % 4]
        for variant in order:
            step_times, broadcast_times = timed(variant)
            records.append(
                {
                    "repeat": repeat,
                    "variant": variant,
                    "step_s": _median(step_times),
                    "broadcast_s": _median(broadcast_times),
                }
            )
    (out / f"comm-rank-{env.rank}.json").write_text(json.dumps(records))


def comm(args: argparse.Namespace) -> None:
    print(_machine())
    with tempfile.TemporaryDirectory(prefix="bench-dist-comm-") as tmp:
        started = time.perf_counter()
        done = subprocess.run(
            _command(2, "_comm", str(args.steps), str(args.repeats), tmp),
            env=_env(1),
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if done.returncode != 0:
            raise SystemExit(f"comm failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        ranks = [json.loads((Path(tmp) / f"comm-rank-{r}.json").read_text()) for r in range(2)]
    print(
        f"MiniLM, MNRL, 2 ranks x 1 thread, {GLOBAL_BATCH // 2} pairs per rank per step; "
        f"{args.steps} steps per variant and repeat, {args.repeats} repeats "
        f"({time.perf_counter() - started:.0f} s); ms: median over repeats of each repeat's "
        "median step, rank 0 (rank 1)"
    )
    print("| variant | step ms | epoch loop's broadcasts ms |")
    print("|---|---|---|")
    medians: dict[str, list[float]] = {}
    for variant in VARIANTS:
        cells = []
        for key in ("step_s", "broadcast_s"):
            values = [_median([r[key] for r in rank if r["variant"] == variant]) for rank in ranks]
            cells.append(f"{values[0] * 1000:.1f} ({values[1] * 1000:.1f})")
            if key == "step_s":
                medians[variant] = values
        print(f"| {variant} | " + " | ".join(cells) + " |")

    def per_repeat(rank: list[dict], a: str, b: str) -> float:
        """Median over repeats of (a - b) / a, each repeat's own pair."""
        step = {(r["repeat"], r["variant"]): r["step_s"] for r in rank}
        return _median([(step[n, a] - step[n, b]) / step[n, a] for n in range(args.repeats)])

    for kind in ("local", "gather"):
        synced, unsynced = f"{kind} synced", f"{kind} no_sync"
        shares = [(s - u) / s for s, u in zip(medians[synced], medians[unsynced])]
        repeats = [per_repeat(rank, synced, unsynced) for rank in ranks]
        print(
            f"gradient all-reduce share of a {kind} step: {shares[0]:.1%} ({shares[1]:.1%}); "
            f"per-repeat median {repeats[0]:.1%} ({repeats[1]:.1%})"
        )
    cost = [g / s for g, s in zip(medians["gather synced"], medians["local synced"])]
    repeats = [-per_repeat(rank, "local synced", "gather synced") for rank in ranks]
    print(
        f"gathered / local step (synced): {cost[0]:.3f} ({cost[1]:.3f}); "
        f"per-repeat median of (gathered - local) / local {repeats[0]:+.1%} "
        f"({repeats[1]:+.1%})"
    )


def _machine() -> str:
    import platform

    import torch

    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return (
        f"{os.cpu_count()} CPUs ({model}), torch {torch.__version__}, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_fit":
        pairs, per_rank, gather, out = sys.argv[2:6]
        fit_worker(int(pairs), int(per_rank), gather == "1", Path(out))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_comm":
        steps, repeats, out = sys.argv[2:5]
        comm_worker(int(steps), int(repeats), Path(out))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fits = commands.add_parser("throughput", help="whole fits: 1 process against 2")
    fits.add_argument("--pairs", type=int, default=1200)
    fits.add_argument("--repeats", type=int, default=5)
    steps = commands.add_parser("comm", help="the synchronisation share of a 2-rank step")
    steps.add_argument("--steps", type=int, default=8)
    steps.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    throughput(args) if args.command == "throughput" else comm(args)


if __name__ == "__main__":
    main()
