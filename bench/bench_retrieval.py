"""Benchmark: retrieval quality of fine-tuning recipes on the built-in product-search task.

Not a test, and not a timing: every recipe fine-tunes the bundled
``sentence-transformers/all-MiniLM-L6-v2`` on the same ``products-train`` pairs for the same
number of optimizer steps (one epoch of batches of ``--batch-size`` rows, AdamW at 5e-5, seed
``--seed``), then the evaluation plugin measures nDCG at 10 (and MRR at 10, recall at 10) of the
300 held-back ``products-queries`` searching the 3,000 ``products-corpus`` listings (1,500 of
them distractors). Held-back products never occur in the training pairs.

    python bench/bench_retrieval.py [--batch-size 32] [--seeds 0 1] [--num-negatives 1]

The recipes:

- ``untrained``: the pretrained model, no fine-tuning;
Every recipe trains on the queries that mining kept (those with enough candidates left after
its filters), so all of them take the same number of steps.

- ``SupConLoss``: the pairs as labelled rows (a query and its listing share a label), SupConLoss
  (temperature 0.05) over the batch's texts, random batches;
- ``MNRL``: ``MultipleNegativesRankingLoss`` (scale 20), duplicate-free batches;
- ``MNRL + mined``: the same loss on the pairs with ``--num-negatives`` hard negatives per query
  mined by the untrained model from the training listings (``finetuner.mine_hard_negatives``,
  ranks 10 to 100, ``margin=0.05`` below the positive's score dropped as likely false negatives).

Each recipe's figures are the means over ``--seeds``; the table shows every seed too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
KEYS = ("ndcg_at_k", "reciprocal_rank", "recall_at_k")


def _evaluation():
    from finetuner_evaluation import EvaluationCallback

    return EvaluationCallback(
        query_data="products-queries", index_data="products-corpus", limit=10, caption="m"
    )


def _fit(train_data, loss: str, options: dict, args: argparse.Namespace, seed: int, **extra):
    import finetuner

    started = time.perf_counter()
    run = finetuner.fit(
        MINILM,
        train_data,
        loss=loss,
        loss_options=options,
        optimizer="AdamW",
        learning_rate=5e-5,
        epochs=1,
        batch_size=args.batch_size,
        callbacks=[_evaluation()],
        seed=seed,
        runs_dir=args.runs_dir,
        experiment_name="bench-retrieval",
        **extra,
    )
    metrics = run.metrics()
    steps = len(run.step_history())
    return metrics, steps, time.perf_counter() - started


def _mined(args: argparse.Namespace) -> list[dict]:
    import finetuner
    from finetuner.data.builtin_text import product_task

    pairs = product_task().train_pairs
    return finetuner.mine_hard_negatives(
        MINILM,
        pairs,
        num_negatives=args.num_negatives,
        range_min=10,
        range_max=100,
        margin=0.05,
        sampling="top",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--num-negatives", type=int, default=1)
    parser.add_argument("--runs-dir", default=None)
    args = parser.parse_args()
    args.runs_dir = args.runs_dir or tempfile.mkdtemp(prefix="bench-retrieval-")
    mined = _mined(args)
    # Every recipe trains on the queries mining kept, so all take the same number of steps.
    pairs = [{"query": row["query"], "pos": row["pos"]} for row in mined]
    print(f"mined: {len(mined)} of 1200 queries kept with {args.num_negatives} negatives each")
    recipes = {
        "SupConLoss": (pairs, "SupConLoss", {"temperature": 0.05}, {"sampler": "random"}),
        "MNRL": (pairs, "MultipleNegativesRankingLoss", {}, {}),
        "MNRL + mined": (mined, "MultipleNegativesRankingLoss", {}, {}),
    }  # fmt: skip
    table: dict[str, list[dict[str, float]]] = {"untrained": []}
    for seed in args.seeds:
        for name, (data, loss, options, extra) in recipes.items():
            metrics, steps, seconds = _fit(data, loss, options, args, seed, **extra)
            if not table["untrained"]:
                table["untrained"].append({k: metrics["before"][f"m_{k}"] for k in KEYS})
            row = {k: metrics["after"][f"m_{k}"] for k in KEYS}
            table.setdefault(name, []).append(row)
            print(f"seed {seed} {name}: {steps} steps, {seconds:.0f} s, {row}", flush=True)
    print(f"\nbatch {args.batch_size}, seeds {args.seeds}: mean over seeds (each seed)")
    print("| recipe | nDCG@10 | MRR@10 | recall@10 |")
    print("|---|---|---|---|")
    for name, rows in table.items():
        cells = []
        for key in KEYS:
            values = [r[key] for r in rows]
            each = ", ".join(f"{v:.4f}" for v in values)
            cells.append(f"{statistics.mean(values):.4f} ({each})")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
