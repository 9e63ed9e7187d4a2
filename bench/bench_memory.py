"""Benchmark: the memory of a MiniLM training step, plain, with gradient checkpointing, with
LoRA, and with both.

Not a test. Each configuration runs in a fresh Python process (so no run inherits another's
allocations or high-water mark), ``--repeats`` times (5), the configurations taking turns in a
rotating order; the table shows medians, with the range of the peak.

    python bench/bench_memory.py [--batch-size 128] [--steps 2] [--repeats 5] [--threads N]

The configurations: ``plain`` (every weight trains), ``checkpointing``
(``gradient_checkpointing=True``), ``lora`` (``model_options={'lora': {'r': 8}}``: alpha 16,
dropout 0.05, the query and value projections) and ``lora+checkpointing``.

The step is finetuner's own: each process builds the set-up ``finetuner.fit`` builds
(``build_setup`` on the validated options: the offline ``sentence-transformers/all-MiniLM-L6-v2``,
``max_length=128``, NT-Xent loss, AdamW at 5e-5, CPU) and calls the trainer's
:class:`~finetuner.training.TrainingStep` (zero the gradients, forward, loss, backward, optimizer
step) on one batch of ``--batch-size`` texts, ``--steps`` times. The texts are synthetic
sentences of 70 to 110 words (80 to 128 tokens after truncation; the batch pads to its
longest), in pairs (each pair a class), built and tokenized before anything is measured.

What is measured, per process:

- **peak RSS growth**: the process's resident set size sampled every 2 ms (psutil) from just
  before the first step to the end of the last, minus the resident size just before the first
  step. It holds what the steps need on top of the loaded model and the batch: the activations
  autograd keeps, the temporaries of forward and backward, the gradients, AdamW's two moment
  buffers (created in the first step), and whatever memory the C allocator keeps instead of
  returning it to the system (glibc keeps much of it: the resident size after a step stays high).
- **ru_maxrss growth**: ``getrusage(RUSAGE_SELF).ru_maxrss`` after the steps minus the resident
  size before them: the kernel's exact high-water mark, a check on the sampled peak (they agree
  when the steps, not the model loading, set the process's high-water mark).
- **saved by autograd**: the bytes of the tensors autograd keeps for the backward pass in the
  first step's forward (``torch.autograd.graph.saved_tensors_hooks``), independent of the
  allocator: what checkpointing is meant to cut.
- **s/step**: the wall time of the last step (the first also allocates the optimizer's state).
  The machine's cores are shared, so time is indicative; memory is the figure that matters.

Left out: the model's own weights and the tokenizer (loaded before the baseline), Python's and
torch's imports, the data loader (the batch is built once, beforehand), evaluation, logging and
the artifact. Peaks on a GPU would differ: there the caching allocator, not glibc, holds memory.
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
import threading
import time

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
CONFIGS = {
    "plain": {"lora": False, "checkpointing": False},
    "checkpointing": {"lora": False, "checkpointing": True},
    "lora": {"lora": True, "checkpointing": False},
    "lora+checkpointing": {"lora": True, "checkpointing": True},
}
WORDS = (
    "the a search engine finds documents that answer questions about cities rivers music "
    "history science sport food travel weather markets software models vectors users write "
    "short and long queries while an index keeps every embedding close to its neighbours in "
    "one shared space so that similar texts land near each other and far from the rest"
).split()
MIB = 2**20


def _texts(count: int, seed: int = 0) -> list[tuple[str, int]]:
    """*count* texts of 70 to 110 words, in pairs labelled by their pair."""
    rng = random.Random(seed)
    return [
        (" ".join(rng.choice(WORDS) for _ in range(rng.randint(70, 110))) + ".", i // 2)
        for i in range(count)
    ]


class _PeakSampler:
    """Samples the resident set size every 2 ms in a thread; keeps the largest."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.002)

    def __enter__(self) -> _PeakSampler:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def child(name: str, batch_size: int, steps: int) -> dict[str, float]:
    """One configuration in this (fresh) process; returns its figures."""
    import torch

    from finetuner.config import validate_fit_options
    from finetuner.models.lora import count_parameters
    from finetuner.training import TrainingStep, build_setup

    config = CONFIGS[name]
    options: dict = {"max_length": 128}
    if config["lora"]:
        options["lora"] = {"r": 8}
    fit_config = validate_fit_options(
        {
            "model": MINILM,
            "train_data": _texts(batch_size),
            "model_options": options,
            "loss": "NTXentLoss",
            "optimizer": "AdamW",
            "learning_rate": 5e-5,
            "batch_size": batch_size,
            "gradient_checkpointing": config["checkpointing"],
            "seed": 0,
            "device": "cpu",
        }
    )
    setup = build_setup(fit_config, seed=0)
    step = TrainingStep(setup)
    step.train_mode()
    batch = setup.collate(setup.train_data.take(list(range(batch_size))))
    tokens = int(batch.items[0]["input_ids"].shape[1])
    saved = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    times = []
    sampler = _PeakSampler()
    before = sampler.rss()
    with sampler:
        for i in range(steps):
            started = time.perf_counter()
            if i == 0:
                with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                    step(batch)
            else:
                step(batch)
            times.append(time.perf_counter() - started)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    trainable, total = count_parameters(setup.models.first)
    return {
        "peak_mib": (sampler.peak - before) / MIB,
        "maxrss_mib": (maxrss - before) / MIB,
        "saved_mib": saved / MIB,
        "seconds": times[-1],
        "tokens": tokens,
        "trainable": trainable,
        "total": total,
    }


def _run_child(name: str, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", name, "--batch-size", str(args.batch_size)]
    command += ["--steps", str(args.steps)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--child", choices=list(CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.batch_size, args.steps)))
        return
    names = list(CONFIGS)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in order:
            figures = _run_child(name, args)
            results[name].append(figures)
            print(
                f"repeat {repeat + 1} {name:>18}: peak {figures['peak_mib']:7.0f} MiB, "
                f"ru_maxrss {figures['maxrss_mib']:7.0f} MiB, saved {figures['saved_mib']:6.0f} "
                f"MiB, {figures['seconds']:6.2f} s/step",
                flush=True,
            )
    _table(results, args)


def _table(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    first = results["plain"][0]
    print(
        f"\nMiniLM, batch {args.batch_size} x {int(first['tokens'])} tokens, {args.steps} steps "
        f"per process, medians of {args.repeats} processes each\n"
    )
    print(
        "| configuration | peak RSS growth (range) | / plain | ru_maxrss growth | saved by "
        "autograd | trainable / total parameters | s/step |"
    )
    print("|---|---|---|---|---|---|---|")
    plain = median("plain", "peak_mib")
    for name, runs in results.items():
        peaks = [r["peak_mib"] for r in runs]
        print(
            f"| {name} | {median(name, 'peak_mib'):.0f} MiB ({min(peaks):.0f}-{max(peaks):.0f}) "
            f"| {median(name, 'peak_mib') / plain:.2f} | {median(name, 'maxrss_mib'):.0f} MiB "
            f"| {median(name, 'saved_mib'):.0f} MiB | {int(runs[0]['trainable']):,} / "
            f"{int(runs[0]['total']):,} | {median(name, 'seconds'):.1f} |"
        )


if __name__ == "__main__":
    main()
