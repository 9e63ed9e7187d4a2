"""Benchmark: ``evaluate_embeddings`` against a bare chunked torch top-k with numpy metrics.

Not a test. Builds clustered data (10,000 queries, 100,000 index vectors, dimension 384, 1,000
labels: a Gaussian centre per label plus noise of 0.6 per dimension), then times both sides
interleaved in one process, alternating which goes first, and prints medians, their ratio and
each side's extra peak memory (resident set sampled every 2 ms from /proc, minus the resident
set when the call starts). The target is a ratio of at most 1.3.

    PYTHONPATH=plugins/evaluation python bench/bench_evaluation.py [--annoy]

``--annoy`` also runs ``search="annoy"`` at its defaults once and prints its recall_at_k as a
fraction of exact search's.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np
import torch
import torch.nn.functional as F

from finetuner_evaluation import evaluate_embeddings


def bare_metrics(queries, query_labels, index, index_labels, k=20, block=1024):
    """The straightforward version: normalise, top-k per query block, metrics with numpy."""
    queries = F.normalize(queries, dim=1)
    index = F.normalize(index, dim=1)
    top = torch.empty((queries.shape[0], k), dtype=torch.int64)
    for start in range(0, queries.shape[0], block):
        scores = queries[start : start + block] @ index.T
        top[start : start + block] = torch.topk(scores, k, dim=1).indices
    rel = (index_labels[top.numpy()] == query_labels[:, None]).astype(np.float64)
    r = np.bincount(index_labels, minlength=query_labels.max() + 1)[query_labels]
    keep = r > 0
    rel, r = rel[keep], r[keep]
    ranks = np.arange(1, k + 1)
    hits = rel.sum(axis=1)
    precision, recall = hits / k, hits / r
    with np.errstate(invalid="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    discounts = 1 / np.log2(ranks + 1)
    dcg = rel @ discounts
    ideal = np.cumsum(discounts)[np.minimum(r, k) - 1]
    first = np.argmax(rel, axis=1) + 1
    return {
        "precision_at_k": precision.mean(),
        "recall_at_k": recall.mean(),
        "f1_score_at_k": f1.mean(),
        "hit_at_k": (hits > 0).mean(),
        "average_precision": (
            (rel * np.cumsum(rel, axis=1) / ranks).sum(1) / np.minimum(r, k)
        ).mean(),
        "reciprocal_rank": np.where(hits > 0, 1 / first, 0).mean(),
        "dcg_at_k": dcg.mean(),
        "ndcg_at_k": (dcg / ideal).mean(),
    }


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def measure(fn):
    """Run ``fn()``; return (seconds, extra peak resident bytes, result)."""
    start_rss = resident_bytes()
    peak = start_rss
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, resident_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    return seconds, max(peak, resident_bytes()) - start_rss, result


def clustered(num_queries, num_index, dim, num_labels, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_labels, dim, generator=g)
    query_labels = torch.randint(0, num_labels, (num_queries,), generator=g)
    index_labels = torch.randint(0, num_labels, (num_index,), generator=g)
    queries = centres[query_labels] + 0.6 * torch.randn(num_queries, dim, generator=g)
    index = centres[index_labels] + 0.6 * torch.randn(num_index, dim, generator=g)
    return queries, query_labels.numpy(), index, index_labels.numpy()


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The size of the ``clustered`` data and the number of repeats, shared with
    ``bench_eval_st.py``."""
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--index", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--labels", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--annoy", action="store_true")
    args = parser.parse_args()

    data = clustered(args.queries, args.index, args.dim, args.labels)
    print(
        f"{args.queries:,} queries x {args.index:,} index x {args.dim}, {args.labels:,} labels; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    sides = {
        "evaluate_embeddings": lambda: evaluate_embeddings(*data),
        "bare torch + numpy": lambda: bare_metrics(*data),
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    peaks: dict[str, list[int]] = {name: [] for name in sides}
    results = {}
    for repeat in range(args.repeats):
        order = list(sides) if repeat % 2 == 0 else list(reversed(sides))
        for name in order:
            seconds, extra, results[name] = measure(sides[name])
            times[name].append(seconds)
            peaks[name].append(extra)
            print(f"  run {repeat + 1} {name:<20} {seconds:7.2f} s  {extra / 2**20:7.0f} MiB")

    ours, bare = (results[name] for name in sides)
    gap = max(abs(ours[key] - bare[key]) for key in ours)
    print(f"largest metric difference between the two: {gap:.2e}")
    for name in sides:
        print(
            f"{name:<20} median {statistics.median(times[name]):7.2f} s, "
            f"extra peak memory {max(peaks[name]) / 2**20:6.0f} MiB"
        )
    ratio = statistics.median(times["evaluate_embeddings"]) / statistics.median(
        times["bare torch + numpy"]
    )
    print(f"ratio evaluate_embeddings / bare: {ratio:.3f} (target <= 1.3)")

    if args.annoy:
        exact_seconds, _, exact = measure(lambda: evaluate_embeddings(*data))
        annoy_seconds, annoy_extra, approx = measure(
            lambda: evaluate_embeddings(*data, search="annoy")
        )
        print(
            f"annoy at defaults: {annoy_seconds:.2f} s (exact {exact_seconds:.2f} s), "
            f"extra peak memory {annoy_extra / 2**20:.0f} MiB, recall_at_k "
            f"{approx['recall_at_k']:.4f} vs exact {exact['recall_at_k']:.4f} "
            f"= {approx['recall_at_k'] / exact['recall_at_k']:.4f} of exact"
        )


if __name__ == "__main__":
    main()
