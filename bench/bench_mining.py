"""Benchmark: ``mine_from_embeddings`` (the search and filters of ``finetuner.mine_hard_negatives``)
against sentence-transformers' ``util.mine_hard_negatives``, on the same embeddings.

Not a test. The data: ``--queries`` distinct queries, each with one positive, and a corpus of
``--corpus`` documents (the positives first, then other documents), dimension ``--dim``: Gaussian
cluster centres plus noise, a query and its positive from the same cluster, every vector
L2-normalised. Both sides mine ``--num-negatives`` negatives per query from ranks 0 to
``--range-max`` with ``top`` sampling and no margin, by exact cosine search.

    python bench/bench_mining.py [--queries 10000] [--corpus 100000] [--repeats 5]

sentence-transformers needs the ``datasets`` package. What is timed, per call, in one process,
the two sides alternating (which goes first alternates every repeat):

- both sides start from the same two ``.npy`` files on disk (query and corpus embeddings),
  written once before the first repeat, and end with their rows of negatives;
- finetuner: ``np.load`` of both files, ``group_pairs(pairs)`` and ``mine_from_embeddings``;
- sentence-transformers: ``mine_hard_negatives(dataset, stub, corpus=corpus,
  cache_folder=folder, num_negatives=..., range_max=..., output_format="n-tuple",
  verbose=False)``. The files are its embedding cache (named by its own hash of the texts), so
  it loads them instead of encoding; ``stub`` is a model stand-in that never encodes, with
  sentence-transformers' own ``cos_sim`` and ``pairwise_cos_sim`` as ``similarity`` and
  ``similarity_pairwise``. Building the ``Dataset`` of pairs is set-up, outside the timing.

Extra peak memory is ``VmHWM`` (reset just before the call through ``/proc/self/clear_refs``)
minus the resident set before it, as in ``bench_eval_st.py``. The script checks that both sides
chose the same negatives for every query and prints the medians and the ratios.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from bench_eval_st import reset_peak, status_kib

SIDES = ("finetuner", "sentence-transformers")
STUB_NAME = "bench-mining-stub"


def make_data(args: argparse.Namespace) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((max(args.queries // 10, 1), args.dim), dtype=np.float32)
    query_labels = rng.integers(0, centres.shape[0], args.queries)
    other_labels = rng.integers(0, centres.shape[0], args.corpus - args.queries)
    labels = np.concatenate([query_labels, other_labels])
    noise = np.float32(args.noise)
    queries = centres[query_labels] + noise * rng.standard_normal(
        (args.queries, args.dim), dtype=np.float32
    )
    corpus = centres[labels] + noise * rng.standard_normal(
        (args.corpus, args.dim), dtype=np.float32
    )
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    query_texts = [f"query {i:06d}" for i in range(args.queries)]
    documents = [f"document {i:07d}" for i in range(args.corpus)]  # 0..queries-1: the positives
    return query_texts, documents, queries, corpus


def cache_file(folder: Path, kind: str, texts: list[str]) -> Path:
    """The file sentence-transformers' mine_hard_negatives reads its cached embeddings from."""
    digest = hashlib.sha256(repr((STUB_NAME, None, None, texts)).encode()).hexdigest()
    return folder / f"{kind}_embeddings_{digest}.npy"


def run_finetuner(pairs, documents, files, args):
    from finetuner.mining import group_pairs, mine_from_embeddings

    query_emb, corpus_emb = np.load(files[0]), np.load(files[1])
    rows, _ = mine_from_embeddings(
        group_pairs(pairs),
        documents,
        query_emb,
        corpus_emb,
        num_negatives=args.num_negatives,
        range_max=args.range_max,
        search="exact",
    )
    return {row["query"]: row["neg"] for row in rows}


def run_st(dataset, stub, documents, folder, args):
    from sentence_transformers.util import mine_hard_negatives

    mined = mine_hard_negatives(
        dataset,
        stub,
        corpus=documents,
        cache_folder=str(folder),
        num_negatives=args.num_negatives,
        range_max=args.range_max,
        sampling_strategy="top",
        output_format="n-tuple",
        verbose=False,
    )
    columns = [f"negative_{i + 1}" for i in range(args.num_negatives)]
    negatives = zip(*(mined[c] for c in columns))
    return {query: list(neg) for query, neg in zip(mined["query"], negatives)}


def measure(call):
    gc.collect()
    before = status_kib("VmRSS")
    if not reset_peak():
        raise SystemExit("this benchmark needs /proc/self/clear_refs to measure peak memory")
    start = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - start
    return seconds, (status_kib("VmHWM") - before) / 1024, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--corpus", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--num-negatives", type=int, default=5)
    parser.add_argument("--range-max", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from datasets import Dataset
    from sentence_transformers.util import cos_sim, pairwise_cos_sim

    query_texts, documents, queries, corpus = make_data(args)
    pairs = list(zip(query_texts, documents))
    dataset = Dataset.from_dict({"query": query_texts, "positive": documents[: args.queries]})
    stub = SimpleNamespace(
        device=torch.device("cpu"),
        model_card_data=SimpleNamespace(base_model=STUB_NAME),
        similarity=cos_sim,
        similarity_pairwise=pairwise_cos_sim,
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = (cache_file(folder, "query", query_texts), cache_file(folder, "corpus", documents))
        np.save(files[0], queries)
        np.save(files[1], corpus)
        del queries, corpus
        calls = {
            "finetuner": lambda: run_finetuner(pairs, documents, files, args),
            "sentence-transformers": lambda: run_st(dataset, stub, documents, folder, args),
        }
        times = {side: [] for side in SIDES}
        memory = {side: [] for side in SIDES}
        for repeat in range(args.repeats):
            results = {}
            for side in SIDES if repeat % 2 == 0 else SIDES[::-1]:
                seconds, mib, results[side] = measure(calls[side])
                times[side].append(seconds)
                memory[side].append(mib)
                print(f"repeat {repeat}: {side:22s} {seconds:8.2f} s  {mib:8.0f} MiB", flush=True)
            same = results["finetuner"] == results["sentence-transformers"]
            print(f"repeat {repeat}: same negatives for every query: {same}", flush=True)
    print(
        f"\n{args.queries} queries x {args.corpus} documents x {args.dim}, "
        f"{args.num_negatives} negatives from the top {args.range_max}, "
        f"{args.threads} threads, {args.repeats} repeats"
    )
    for side in SIDES:
        print(
            f"{side:22s} median {statistics.median(times[side]):8.2f} s, "
            f"extra peak memory {statistics.median(memory[side]):8.0f} MiB"
        )
    ratios = [s / f for s, f in zip(times["sentence-transformers"], times["finetuner"])]
    print(
        "sentence-transformers / finetuner: time "
        f"{statistics.median(times['sentence-transformers']) / statistics.median(times['finetuner']):.2f} "
        f"(median of per-repeat ratios {statistics.median(ratios):.2f}), memory "
        f"{statistics.median(memory['sentence-transformers']) / max(statistics.median(memory['finetuner']), 1):.1f}x"
    )


if __name__ == "__main__":
    main()
