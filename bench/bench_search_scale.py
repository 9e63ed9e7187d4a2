"""Benchmark: finetuner's exact search at scale against a bare chunked top-k and sentence-transformers.

Not a test. 10,000 queries against 1,000,000 index vectors of dimension 384 (float32, random
normal, seed 0), cosine, top 20. Each run is a fresh subprocess that draws the data itself (same
seed, same arrays), then times one call; the sides take turns in a rotating order. Sides:

- ``finetuner``: ``finetuner.search.exact_top_k`` at its default memory budget (512 MiB): query
  blocks and index chunks sized from the budget, tie-break by lower position.
- ``bare``: the chunked top-k a user writes in torch: for each block of 1,024 queries, for each
  chunk of 16,384 index rows, normalise, multiply, ``torch.topk``, and merge with the running
  top-k by ``torch.topk`` over the concatenation (no tie rule).
- ``st-search``: ``sentence_transformers.util.semantic_search(q, x, top_k=20)`` at its defaults
  (query chunks of 100, corpus chunks of 500,000, cosine).
- ``st-evaluator`` (only with ``--evaluator``): ``InformationRetrievalEvaluator.compute_all_metrics``
  on the same embeddings, as in ``bench_eval_st.py`` (1,000 random labels; a query's relevant
  documents share its label): its own search (every query against corpus chunks of 50,000)
  plus its metrics. Its set-up (id, corpus and relevance dicts) is not timed.

Memory: the extra peak resident set of the call, ``VmHWM`` reset through ``/proc/self/clear_refs``
just before the call, minus ``VmRSS`` at that moment; so it covers everything the call allocates
(torch, numpy and Python objects, the allocator's retained pages) beyond the inputs already in
memory, and includes the ``(queries, 20)`` result. The parent compares the result positions.

    python bench/bench_search_scale.py                                 # 10k x 1M, 1 run per side
    python bench/bench_search_scale.py --index 100000 --repeats 5 --evaluator
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
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_eval_st import run_sentence_transformers, status_kib

SIDES = ("finetuner", "bare", "st-search")


def bare_top_k(queries, index, k, query_rows=1_024, index_rows=16_384):
    """The plain chunked top-k: normalise each chunk, multiply, keep a running top-k."""
    import torch
    import torch.nn.functional as F

    positions = torch.empty((queries.shape[0], k), dtype=torch.int64)
    for b0 in range(0, queries.shape[0], query_rows):
        block = F.normalize(queries[b0 : b0 + query_rows], dim=1)
        best = torch.full((block.shape[0], k), float("-inf"))
        where = torch.full((block.shape[0], k), -1, dtype=torch.int64)
        for c0 in range(0, index.shape[0], index_rows):
            chunk = F.normalize(index[c0 : c0 + index_rows], dim=1)
            values, columns = torch.topk(block @ chunk.T, min(k, chunk.shape[0]), dim=1)
            merged, pick = torch.topk(torch.cat([best, values], dim=1), k, dim=1)
            where = torch.cat([where, columns + c0], dim=1).gather(1, pick)
            best = merged
        positions[b0 : b0 + block.shape[0]] = where
    return positions.numpy()


def make_call(side: str, queries: np.ndarray, index: np.ndarray, k: int):
    import torch

    q, x = torch.from_numpy(queries), torch.from_numpy(index)
    if side == "finetuner":
        from finetuner.search import Embeddings, empty_exclusions, exact_top_k

        qe, xe, none = Embeddings(q, "queries"), Embeddings(x, "index"), empty_exclusions()
        return lambda: exact_top_k(qe, xe, k, "cosine", none)[1]
    if side == "bare":
        return lambda: bare_top_k(q, x, k)
    if side == "st-search":
        from sentence_transformers.util import semantic_search

        def search():
            hits = semantic_search(q, x, top_k=k)
            return np.array([[hit["corpus_id"] for hit in row] for row in hits], dtype=np.int64)

        return search
    rng = np.random.default_rng(1)
    labels = {
        "queries": queries,
        "index": index,
        "query_labels": rng.integers(0, 1_000, queries.shape[0]),
        "index_labels": rng.integers(0, 1_000, index.shape[0]),
    }
    call = run_sentence_transformers(labels, k)
    return lambda: call() and None


def child(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    index = rng.standard_normal((args.index, args.dim), dtype=np.float32)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    call = make_call(args.child, queries, index, args.limit)
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    before = status_kib("VmRSS")
    start = time.perf_counter()
    positions = call()
    seconds = time.perf_counter() - start
    extra = (status_kib("VmHWM") - before) / 1024
    if positions is not None:
        np.save(args.out, positions)
    print(json.dumps({"seconds": seconds, "extra_mib": extra}))


def run_side(side: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", side, "--out", str(out)]
    for name in ("queries", "index", "dim", "limit"):
        command += [f"--{name}", str(getattr(args, name))]
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=os.environ)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--index", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--evaluator", action="store_true", help="also time the ST evaluator")
    parser.add_argument("--child", choices=[*SIDES, "st-evaluator"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    sides = [*SIDES, "st-evaluator"] if args.evaluator else list(SIDES)
    print(f"{args.queries:,} queries x {args.index:,} index x {args.dim}, k={args.limit}")
    runs: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            shift = repeat % len(sides)
            for side in sides[shift:] + sides[:shift]:
                report = run_side(side, args, Path(folder) / f"{side}.npy")
                runs[side].append(report)
                print(
                    f"  run {repeat + 1} {side:<13} {report['seconds']:8.2f} s "
                    f"{report['extra_mib']:8.0f} MiB",
                    flush=True,
                )
        ours = np.load(Path(folder) / "finetuner.npy")
        for side in ("bare", "st-search"):
            theirs = np.load(Path(folder) / f"{side}.npy")
            same = np.mean([set(a) == set(b) for a, b in zip(ours, theirs, strict=True)])
            print(f"rows with the same 20 results as finetuner: {side} {same:.4f}")
    base = statistics.median(r["seconds"] for r in runs["finetuner"])
    for side in sides:
        seconds = statistics.median(r["seconds"] for r in runs[side])
        extra = statistics.median(r["extra_mib"] for r in runs[side])
        print(
            f"{side:<13} median {seconds:8.2f} s ({seconds / base:.3f} of finetuner), "
            f"extra peak {extra:7.0f} MiB (max {max(r['extra_mib'] for r in runs[side]):.0f})"
        )


if __name__ == "__main__":
    main()
