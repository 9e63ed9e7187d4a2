"""Benchmark: GradCache. One MiniLM training step on a large batch of (query, document) pairs,
with the loss cached in mini-batches and without, against sentence-transformers'
``CachedMultipleNegativesRankingLoss`` at the same settings.

Not a test. Each configuration runs in a fresh Python process, ``--repeats`` times (5), the
configurations taking turns in a rotating order; the table shows medians.

    python bench/bench_gradcache.py [--batch-size 256] [--mini-batch-size 32] [--repeats 5]
                                    [--max-length 32] [--threads N]

The configurations (``B`` = ``--batch-size`` pairs, ``m`` = ``--mini-batch-size``):

- ``finetuner uncached B``: ``MultipleNegativesRankingLoss`` on all ``2B`` texts at once;
- ``finetuner cached B/m``: ``CachedMultipleNegativesRankingLoss(mini_batch_size=m)``;
- ``finetuner uncached m``: the uncached loss on a batch of ``m`` pairs, the memory the cached
  step should stay near (target: cached B/m at most this plus the embeddings of the batch);
- ``ST cached B/m``: sentence-transformers' ``CachedMultipleNegativesRankingLoss`` with
  ``mini_batch_size=m`` (target: finetuner's cached step within 1.1x of its time).

Both libraries use the offline ``sentence-transformers/all-MiniLM-L6-v2``, scale 20, AdamW at
5e-5, texts truncated to ``--max-length`` tokens, the same tokenized batch of synthetic pairs of
15 to 25 words. finetuner's step is its :class:`~finetuner.training.TrainingStep` (zero the
gradients, the forwards, the loss, the backward, the optimizer step) on the set-up ``fit``
builds; sentence-transformers' is ``loss(features, None).backward()`` and ``optimizer.step()``
on a ``SentenceTransformer``. Each process runs ``--steps`` steps (2); the time is that of the
last (the first also creates AdamW's state), memory the peak RSS growth over all steps (see
``bench_memory.py``, whose sampler this uses). Left out: loading the model, tokenizing, the data
loader, evaluation, logging and the artifact.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time

from bench_memory import MIB, _PeakSampler

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
WORDS = (
    "hikers ask which boots keep feet dry on long wet trails while shops answer with leather "
    "uppers vibram soles gaiters and wool socks rated for cold mornings in the mountains near "
    "lakes rivers forests and snowy passes where the weather turns quickly"
).split()


def _pairs(count: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)

    def text() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(15, 25)))

    return [(f"{i} {text()}", f"{text()} {i}") for i in range(count)]


def _finetuner_step(name: str, args: argparse.Namespace):
    import numpy as np

    from finetuner.config import validate_fit_options
    from finetuner.data import Column, Dataset
    from finetuner.training import TrainingStep, build_setup

    cached = "cached" in name and "uncached" not in name
    size = (
        args.mini_batch_size
        if name.endswith(f"uncached {args.mini_batch_size}")
        else args.batch_size
    )
    pairs = _pairs(size)
    data = Dataset(
        [Column("text", [q for q, _ in pairs]), Column("text", [d for _, d in pairs])],
        np.arange(size),  # every query is its own group
        [str(i) for i in range(size)],
        [str(i) for i in range(size)],
        kind="retrieval",
        source="bench",
    )
    loss = "CachedMultipleNegativesRankingLoss" if cached else "MultipleNegativesRankingLoss"
    config = validate_fit_options(
        {
            "model": MINILM,
            "train_data": data,
            "model_options": {"max_length": args.max_length},
            "loss": loss,
            "loss_options": {"mini_batch_size": args.mini_batch_size} if cached else {},
            "optimizer": "AdamW",
            "learning_rate": 5e-5,
            "batch_size": size,
            "seed": 0,
            "device": "cpu",
        }
    )
    setup = build_setup(config, seed=0)
    step = TrainingStep(setup)
    step.train_mode()
    batch = setup.collate(setup.train_data.take(list(range(size))))
    return lambda: step(batch)


def _st_step(args: argparse.Namespace):
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.losses import CachedMultipleNegativesRankingLoss

    sys.path.insert(0, os.path.dirname(__file__))
    from bench_text import minilm_path

    model = SentenceTransformer(minilm_path(), device="cpu")
    model.max_seq_length = args.max_length
    loss = CachedMultipleNegativesRankingLoss(
        model, scale=20.0, mini_batch_size=args.mini_batch_size, show_progress_bar=False
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.0)
    pairs = _pairs(args.batch_size)
    features = [model.tokenize([q for q, _ in pairs]), model.tokenize([d for _, d in pairs])]
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss(features, None).backward()
        optimizer.step()

    return step


def child(name: str, args: argparse.Namespace) -> dict[str, float]:
    step = _st_step(args) if name.startswith("ST") else _finetuner_step(name, args)
    sampler = _PeakSampler()
    before = sampler.rss()
    times = []
    with sampler:
        for _ in range(args.steps):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "peak_mib": (sampler.peak - before) / MIB,
        "maxrss_mib": (maxrss - before) / MIB,
        "seconds": times[-1],
    }


def _names(args: argparse.Namespace) -> list[str]:
    b, m = args.batch_size, args.mini_batch_size
    return [f"finetuner uncached {b}", f"finetuner cached {b}/{m}", f"finetuner uncached {m}",
            f"ST cached {b}/{m}"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--mini-batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    names = _names(args)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    for repeat in range(args.repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            command = [sys.executable, __file__, "--child", name]
            for flag in ("batch_size", "mini_batch_size", "max_length", "steps"):
                command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if out.returncode != 0:
                raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"repeat {repeat + 1} {name}: {results[name][-1]}", flush=True)
    _table(results, args)


def _table(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    med = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in results.items()}  # fmt: skip
    names = _names(args)
    embeddings_mib = 2 * args.batch_size * 384 * 4 * 2 / MIB  # the cached vectors and their grads
    print(
        f"\nmedians of {args.repeats}; batch {args.batch_size} pairs, max_length {args.max_length}"
    )
    print("| configuration | peak RSS growth MiB | ru_maxrss growth MiB | s/step |")
    print("|---|---|---|---|")
    for name in names:
        m = med[name]
        print(f"| {name} | {m['peak_mib']:.0f} | {m['maxrss_mib']:.0f} | {m['seconds']:.2f} |")
    cached, small, st = med[names[1]], med[names[2]], med[names[3]]
    print(
        f"\ncached / uncached {args.batch_size}: memory {cached['peak_mib'] / med[names[0]]['peak_mib']:.2f}, "
        f"time {cached['seconds'] / med[names[0]]['seconds']:.2f}"
    )
    print(
        f"cached {args.batch_size}/{args.mini_batch_size} against uncached {args.mini_batch_size} "
        f"+ embeddings ({small['peak_mib']:.0f} + {embeddings_mib:.0f} MiB): "
        f"{cached['peak_mib'] / (small['peak_mib'] + embeddings_mib):.2f}"
    )
    print(
        f"finetuner / ST cached: time {cached['seconds'] / st['seconds']:.2f}, "
        f"memory {cached['peak_mib'] / st['peak_mib']:.2f}"
    )


if __name__ == "__main__":
    main()
