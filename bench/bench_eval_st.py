"""Benchmark: ``evaluate_embeddings`` against sentence-transformers' InformationRetrievalEvaluator.

Not a test. Both sides evaluate the same precomputed embeddings and the same relevance: the
clustered data of ``bench_evaluation.py`` (10,000 queries, 100,000 index vectors, dimension
384, 1,000 labels), where a query's relevant documents are the index documents with its label.
Cosine similarity, top ``--limit`` (20) results on both sides.

    python bench/bench_eval_st.py [--repeats 5] [--limit 20]

The parent process draws the data once and saves it to a temporary folder. Every run is a fresh
subprocess that loads the arrays and prepares its side's inputs, then times one call; the sides
alternate (and which goes first alternates every repeat). Each run reports its wall time and its
extra peak memory: the peak resident set during the call minus the resident set just before
it, read from /proc/self/status. As ``plugins/evaluation/tests/test_memory.py`` does, each run
is a fresh process; but where that test reads ``ru_maxrss``, this reads ``VmHWM`` after resetting
it (``/proc/self/clear_refs``) right before the call, because a child's ``ru_maxrss`` starts at
its parent's resident set (falling back to ``ru_maxrss`` where the reset is not allowed). The script prints the medians, the
ratio sentence-transformers / finetuner of time and of memory, and both sides' metrics.

What is timed:

- finetuner: ``evaluate_embeddings(queries, query_labels, index, index_labels, limit=k)``, which
  searches exactly and computes all eight metrics of METRICS.md.
- sentence-transformers: ``evaluator.compute_all_metrics(model, corpus_embeddings=index)``, the
  evaluator's own search and metrics path with ``score_functions={"cosine": cos_sim}`` and every
  ``*_at_k`` list set to ``[k]``. The corpus embeddings go in as a tensor (the evaluator's own
  parameter for that); the queries come from ``model.encode_query``, where ``model`` is a stub
  that returns the rows of the precomputed query tensor for the given query ids (a gather of
  10,000 rows, a few milliseconds). Building the evaluator (its query, corpus and relevance
  dicts, ids ``q00000``/``d000000`` whose string order is their position order) is set-up,
  outside the timing, as preparing the label arrays is on the other side.

The six metrics with one definition on both sides are compared: accuracy@k = hit_at_k,
precision@k, recall@k (both divide by ``R``, every relevant document of the query), MRR@k =
reciprocal_rank, NDCG@k (ideal list of ``min(R, k)`` relevant results) and MAP@k =
average_precision (divided by ``min(R, k)``). finetuner also reports f1_score_at_k and dcg_at_k,
which the evaluator does not compute.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SIDES = ("finetuner", "sentence-transformers")

#: sentence-transformers' metric name -> finetuner's key with the same definition.
SAME_METRICS = {
    "accuracy@k": "hit_at_k",
    "precision@k": "precision_at_k",
    "recall@k": "recall_at_k",
    "mrr@k": "reciprocal_rank",
    "ndcg@k": "ndcg_at_k",
    "map@k": "average_precision",
}


def status_kib(field: str) -> int:
    """A size from /proc/self/status (``VmRSS``: resident set, ``VmHWM``: its peak), in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> bool:
    """Reset this process's peak resident set (VmHWM) to its current resident set (Linux 4.0+)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


class PrecomputedEncoder:
    """Stands in for a SentenceTransformer: ``encode_query`` returns the precomputed rows of
    the given query ids (``q`` + position), so the evaluator scores the embeddings it is given."""

    def __init__(self, embeddings) -> None:
        self.embeddings = embeddings

    def encode_query(self, inputs, **kwargs):
        return self.embeddings[[int(query_id[1:]) for query_id in inputs]]


def run_finetuner(data: dict, limit: int):
    import torch

    from finetuner_evaluation import evaluate_embeddings

    queries = torch.from_numpy(data["queries"])
    index = torch.from_numpy(data["index"])
    query_labels, index_labels = data["query_labels"], data["index_labels"]

    def call() -> dict[str, float]:
        return evaluate_embeddings(queries, query_labels, index, index_labels, limit=limit)

    return call


def run_sentence_transformers(data: dict, limit: int):
    import torch
    from sentence_transformers.sentence_transformer.evaluation import (
        InformationRetrievalEvaluator,
    )
    from sentence_transformers.util import cos_sim

    queries = torch.from_numpy(data["queries"])
    index = torch.from_numpy(data["index"])
    query_ids = [f"q{i:05d}" for i in range(len(queries))]
    corpus_ids = [f"d{i:06d}" for i in range(len(index))]
    by_label: dict[int, set[str]] = {}
    for doc_id, label in zip(corpus_ids, data["index_labels"].tolist()):
        by_label.setdefault(label, set()).add(doc_id)
    relevant = {
        query_id: by_label[label]
        for query_id, label in zip(query_ids, data["query_labels"].tolist())
        if label in by_label
    }
    evaluator = InformationRetrievalEvaluator(
        queries={query_id: query_id for query_id in query_ids},
        corpus={doc_id: doc_id for doc_id in corpus_ids},
        relevant_docs=relevant,
        accuracy_at_k=[limit],
        precision_recall_at_k=[limit],
        mrr_at_k=[limit],
        ndcg_at_k=[limit],
        map_at_k=[limit],
        score_functions={"cosine": cos_sim},
        show_progress_bar=False,
        write_csv=False,
    )
    model = PrecomputedEncoder(queries)

    def call() -> dict[str, float]:
        scores = evaluator.compute_all_metrics(model, corpus_embeddings=index)["cosine"]
        return {name: float(scores[name][limit]) for name in SAME_METRICS}

    return call


def worker(side: str, folder: Path, limit: int, threads: int | None) -> None:
    """One timed call in this (fresh) process; prints a JSON line."""
    import resource
    import time

    import torch

    if threads:
        torch.set_num_threads(threads)
    data = {name: np.load(folder / f"{name}.npy") for name in DATA_NAMES}
    start = time.perf_counter()
    call = (run_finetuner if side == "finetuner" else run_sentence_transformers)(data, limit)
    setup = time.perf_counter() - start
    exact_peak = reset_peak()
    before = status_kib("VmRSS")
    start = time.perf_counter()
    metrics = call()
    seconds = time.perf_counter() - start
    # ru_maxrss starts at the parent's resident set (fork and exec keep its high-water mark),
    # so it over-reports here; VmHWM, reset just above, is this call's own peak.
    peak = (
        status_kib("VmHWM")
        if exact_peak
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    )
    print(
        json.dumps(
            {
                "seconds": seconds,
                "setup_seconds": setup,
                "extra_mib": (peak - before) / 1024,
                "threads": torch.get_num_threads(),
                "peak_from": "VmHWM" if exact_peak else "ru_maxrss",
                "metrics": {k: float(v) for k, v in metrics.items()},
            }
        )
    )


DATA_NAMES = ("queries", "query_labels", "index", "index_labels")


def run_side(side: str, folder: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", side, "--data", str(folder)]
    command += ["--limit", str(args.limit)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    out = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    if out.returncode != 0:
        raise SystemExit(f"bench_eval_st: the {side} run failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(title: str, ours: dict, theirs: dict) -> float:
    """Print the metrics with one definition side by side; return the largest difference."""
    print(f"{title} (sentence-transformers = finetuner):")
    for st_name, our_name in SAME_METRICS.items():
        gap = abs(theirs[st_name] - ours[our_name])
        print(
            f"  {st_name:<12} {theirs[st_name]:.6f}  {our_name:<18} {ours[our_name]:.6f}  "
            f"difference {gap:.1e}"
        )
    largest = max(abs(theirs[s] - ours[o]) for s, o in SAME_METRICS.items())
    print(f"  largest difference: {largest:.2e}")
    return largest


def harder_agreement(args: argparse.Namespace) -> None:
    """The timed data are so well separated that most metrics are 1.0 on both sides; this
    compares the metrics (untimed, in this process) where they are not: 2,000 queries, 20,000
    index vectors, 200 labels, with ``--check-noise`` more Gaussian noise per dimension."""
    import torch
    from bench_evaluation import clustered

    queries, query_labels, index, index_labels = clustered(2_000, 20_000, args.dim, 200, seed=1)
    g = torch.Generator().manual_seed(2)
    queries = queries + args.check_noise * torch.randn(queries.shape, generator=g)
    index = index + args.check_noise * torch.randn(index.shape, generator=g)
    data = {
        "queries": queries.numpy(),
        "query_labels": query_labels,
        "index": index.numpy(),
        "index_labels": index_labels,
    }
    ours = run_finetuner(data, args.limit)()
    theirs = run_sentence_transformers(data, args.limit)()
    compare(
        f"check on harder data: 2,000 x 20,000, 200 labels, extra noise {args.check_noise}",
        ours,
        theirs,
    )


def main() -> None:
    from bench_evaluation import add_data_arguments, clustered

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument(
        "--check-noise",
        type=float,
        default=3.0,
        help="extra noise of the untimed metric check on harder data (0: skip the check)",
    )
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.data, args.limit, args.threads)
        return

    from importlib.metadata import version

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    queries, query_labels, index, index_labels = clustered(
        args.queries, args.index, args.dim, args.labels
    )
    print(
        f"{args.queries:,} queries x {args.index:,} index x {args.dim}, {args.labels:,} labels, "
        f"top {args.limit}, cosine; torch {torch.__version__}, sentence-transformers "
        f"{version('sentence-transformers')}; one subprocess per run"
    )
    times: dict[str, list[float]] = {side: [] for side in SIDES}
    extras: dict[str, list[float]] = {side: [] for side in SIDES}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-eval-st-") as tmp:
        folder = Path(tmp)
        arrays = (queries.numpy(), query_labels, index.numpy(), index_labels)
        for name, array in zip(DATA_NAMES, arrays):
            np.save(folder / f"{name}.npy", array)
        del queries, index, arrays
        for repeat in range(args.repeats):
            order = SIDES if repeat % 2 == 0 else tuple(reversed(SIDES))
            for side in order:
                result = results[side] = run_side(side, folder, args)
                times[side].append(result["seconds"])
                extras[side].append(result["extra_mib"])
                print(
                    f"  run {repeat + 1} {side:<21} {result['seconds']:7.2f} s  "
                    f"{result['extra_mib']:7.0f} MiB  (set-up {result['setup_seconds']:.2f} s, "
                    f"{result['threads']} threads, peak from {result['peak_from']})"
                )

    compare(
        f"metrics at k={args.limit}",
        results["finetuner"]["metrics"],
        results["sentence-transformers"]["metrics"],
    )
    if args.check_noise > 0:
        harder_agreement(args)
    for side in SIDES:
        print(
            f"{side:<21} median {statistics.median(times[side]):7.2f} s, "
            f"extra peak memory median {statistics.median(extras[side]):6.0f} MiB "
            f"(max {max(extras[side]):.0f})"
        )
    time_ratio = statistics.median(times["sentence-transformers"]) / statistics.median(
        times["finetuner"]
    )
    per_repeat = statistics.median(
        theirs / ours for theirs, ours in zip(times["sentence-transformers"], times["finetuner"])
    )
    memory_ratio = statistics.median(extras["sentence-transformers"]) / statistics.median(
        extras["finetuner"]
    )
    print(
        f"ratio sentence-transformers / finetuner: time {time_ratio:.2f} (median of the "
        f"per-repeat ratios {per_repeat:.2f}), extra peak memory {memory_ratio:.1f}"
    )


if __name__ == "__main__":
    main()
