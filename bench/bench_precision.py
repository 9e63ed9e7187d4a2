"""Benchmark: bf16 mixed precision against float32 on CPU, training and encoding MiniLM, finetuner
and sentence-transformers side by side.

Not a test. Four sides run interleaved in one process, each repeat in a rotated order (every side
takes every place in turn), with the same torch threads: finetuner in float32 and in bf16, and
sentence-transformers in float32 and in bf16. The script prints each run, the medians, and the
ratios bf16 / 32 of each library, finetuner bf16 / sentence-transformers bf16 and finetuner 32 /
sentence-transformers 32, each as the ratio of the medians and the median of the per-repeat
ratios (a repeat's runs are close in time, so the latter shrugs off load that drifts over
minutes). Model loading is never timed. Nothing is downloaded (``HF_HUB_OFFLINE=1``).

    python bench/bench_precision.py train  [--pairs 512] [--held-out 512]
    python bench/bench_precision.py encode [--texts 1000]

Both take ``--batch-size`` (texts per batch, 32), ``--max-length`` (tokens per text, 128),
``--repeats`` (5) and ``--threads`` (1; with two on a shared two-core machine, any other process
slows steps several times). First the script says what the CPU offers for bf16: torch's CPU
capability, whether torch finds AMX tiles and AVX-512 BF16, the flags of ``/proc/cpuinfo``, and
the instruction set oneDNN reports (``ONEDNN_VERBOSE``) for one bf16 matrix product, in a
subprocess of its own.

What "bf16" is on each side (the weights, their gradients and the optimizer state stay float32
everywhere; only the compute inside autocast is bfloat16):

- finetuner: ``finetuner.fit(..., precision="bf16")`` and ``finetuner.encode(...,
  precision="bf16")``.
- sentence-transformers: training with ``SentenceTransformerTrainingArguments(bf16=True,
  use_cpu=True)``, which accelerate turns into ``torch.autocast("cpu", torch.bfloat16)`` around
  the model's ``forward`` (the loss's similarity matrix is computed outside it, in float32);
  encoding inside ``torch.autocast("cpu", torch.bfloat16)``, which is what a user writes: its
  ``encode(precision=...)`` quantizes the returned vectors and leaves the compute in float32.

``train``: the training functions of ``bench_text.py`` (its docstring says exactly what is
timed: from the first step's begin hook to the last step's end hook, so every step's forward,
loss, backward and optimizer step, the framework's per-step work and the gathering and
tokenizing of every batch but the first; model loading, the fit's set-up and its artifact are
outside), one epoch on ``--pairs`` synthetic (query, product listing) pairs, ``--batch-size``
texts (half as many pairs) per step, AdamW (both fused) at a constant 5e-5, NT-Xent
(temperature 0.05) against MultipleNegativesRankingLoss (scale 20, every text against every
other). Before the repeats, each side runs once on ``--batch-size`` pairs, not counted (the
process's first steps of each kind are slow). Each run also reports the dtype that the
transformer's first linear layer computed in at its first training step, so a flag that did
not autocast shows ``float32``.

After each run (not timed) the trained transformer's weights are loaded into one float32
finetuner model and it encodes ``--held-out`` queries and their listings, none of them in the
training data, the same way for every side (``finetuner.encode``, float32, max length as in
training); so does the untrained model, once. Quality: each query ranks all held-out listings
by cosine; MRR@10, recall@1 and recall@10 of its own listing (a tie counts against it).

The data (``product_pairs``): a query such as "cheap red hiking boots for women by Norvik" and
its listing "Norvik trekking footwear. Colour: crimson. Women's cut, budget range.": the
listing names the brand as the query does, but the category, the colour, the price band and
the fit in other words (12 x 8 x 3 x 3 word pairs, 8 brands, 3 query templates). Training and
held-out pairs are disjoint combinations of the same vocabulary, so what fine-tuning can learn
is which listing words answer which query words, and that the colour, price and fit matter:
many held-out listings share the query's brand and category and differ only there.

``encode``: the timed call of ``bench_text.encoders`` on ``--texts`` texts of ``bench_text``
(one to four templated sentences, 14 to 74 tokens), each side in its precision: finetuner's
model from ``build_model``, sentence-transformers' from its folder, both longest first in
batches (finetuner by tokens, sentence-transformers by characters). The vectors of each library
in bf16 are compared with its float32 ones: the largest absolute difference of a component and
the smallest cosine over the texts (and finetuner's float32 against sentence-transformers').
Each side encodes the texts once before the repeats, not counted.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import random
import statistics
import subprocess
import sys
import time

import bench_text
import numpy as np
import torch

LIBRARIES = ("finetuner", "sentence-transformers")
SIDES = tuple(itertools.product(LIBRARIES, bench_text.PRECISIONS))  # (library, precision)
SHORT = {"finetuner": "finetuner", "sentence-transformers": "ST"}

# (query words, listing words): the listing never repeats the query's words
CATEGORIES = (
    ("hiking boots", "trekking footwear"), ("running shoes", "jogging trainers"),
    ("rain jacket", "waterproof shell"), ("backpack", "rucksack"), ("tent", "camping shelter"),
    ("sleeping bag", "sleep sack"), ("wool socks", "merino hosiery"), ("sunglasses", "UV eyewear"),
    ("water bottle", "hydration flask"), ("headlamp", "head torch"), ("gloves", "mittens"),
    ("fleece", "pullover"),
)  # fmt: skip
COLOURS = (
    ("red", "crimson"), ("blue", "navy"), ("green", "olive"), ("black", "charcoal"),
    ("white", "ivory"), ("yellow", "mustard"), ("grey", "slate"), ("orange", "amber"),
)  # fmt: skip
PRICES = (
    ("cheap", "budget range"),
    ("mid-priced", "standard range"),
    ("expensive", "luxury range"),
)
FITS = (("for men", "men's cut"), ("for women", "women's cut"), ("for kids", "junior sizing"))
BRANDS = ("Norvik", "Altura", "Kestrel", "Bramble", "Fjelda", "Solano", "Tundra Co", "Vireo")
QUERY_TEMPLATES = (
    "{price} {colour} {category} {fit} by {brand}",
    "{brand} {category} in {colour}, {price}, {fit}",
    "looking for {colour} {category} {fit}, {brand}, {price}",
)


def product_pairs(
    train: int, held_out: int, seed: int = 0
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(query, listing) pairs for training and held-out ones, of disjoint combinations."""
    rng = random.Random(seed)
    combos = list(itertools.product(BRANDS, CATEGORIES, COLOURS, PRICES, FITS))
    if train + held_out > len(combos):
        raise SystemExit(f"bench_precision: at most {len(combos):,} pairs in all.")
    rng.shuffle(combos)

    def pair(combo: tuple) -> tuple[str, str]:
        brand, (category, kind), (colour, shade), (price, band), (fit, cut) = combo
        query = rng.choice(QUERY_TEMPLATES).format(
            price=price, colour=colour, category=category, fit=fit, brand=brand
        )
        return query, f"{brand} {kind}. Colour: {shade}. {cut.capitalize()}, {band}."

    pairs = [pair(combo) for combo in combos[: train + held_out]]
    return pairs[:train], pairs[train:]


def label(side: tuple[str, str]) -> str:
    return f"{side[0]} {side[1]}"


def rotated(repeat: int) -> tuple[tuple[str, str], ...]:
    shift = repeat % len(SIDES)
    return SIDES[shift:] + SIDES[:shift]


# --- what the CPU offers ----------------------------------------------------------------------

ONEDNN_PROBE = """
import torch
torch.set_num_threads(1)
x, layer = torch.randn(64, 384), torch.nn.Linear(384, 384)
with torch.autocast("cpu", dtype=torch.bfloat16):
    layer(x)
"""


def describe_cpu() -> None:
    flags: set[str] = set()
    model = "?"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            key, _, value = line.partition(":")
            if key.strip() == "flags" and not flags:
                flags = set(value.split())
            elif key.strip() == "model name" and model == "?":
                model = value.strip()
    wanted = ("amx_tile", "amx_bf16", "amx_int8", "amx_fp16", "avx512_bf16", "avx512_fp16")

    def torch_says(name: str) -> str:
        probe = getattr(torch.cpu, name, None)
        return str(probe()) if callable(probe) else "n/a"

    print(
        f"cpu: {model}; torch {torch.__version__}, capability "
        f"{torch.backends.cpu.get_cpu_capability()}; torch finds AMX tiles "
        f"{torch_says('_is_amx_tile_supported')}, AVX-512 BF16 "
        f"{torch_says('_is_avx512_bf16_supported')}; cpuinfo flags: "
        + ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in wanted)
    )
    out = subprocess.run(
        [sys.executable, "-c", ONEDNN_PROBE],
        capture_output=True,
        text=True,
        env={**os.environ, "ONEDNN_VERBOSE": "1"},
    )
    lines = out.stdout.splitlines() + out.stderr.splitlines()
    isa = next((line.split("isa:", 1)[1] for line in lines if "isa:" in line), "not reported")
    kernel = next(
        (line.split(",")[6] for line in lines if ",exec,cpu,matmul," in line), "no matmul seen"
    )
    print(f"oneDNN: isa {isa}; a bf16 linear layer runs {kernel}")


# --- train ------------------------------------------------------------------------------------


def retrieval_quality(queries: np.ndarray, listings: np.ndarray) -> dict[str, float]:
    """Query i's own listing is listing i; all listings are the candidates."""
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    listings = listings / np.linalg.norm(listings, axis=1, keepdims=True)
    scores = queries @ listings.T
    own = np.diag(scores)[:, None]
    rank = (scores >= own).sum(axis=1) - 1  # 0 = first; a tie counts against the query
    return {
        "mrr@10": float(np.where(rank < 10, 1.0 / (rank + 1), 0.0).mean()),
        "recall@1": float((rank < 1).mean()),
        "recall@10": float((rank < 10).mean()),
    }


class HeldOut:
    """Encodes the held-out pairs with a transformer's weights, the same way for every side."""

    def __init__(self, pairs: list[tuple[str, str]], args: argparse.Namespace) -> None:
        import finetuner

        self.queries = [query for query, _ in pairs]
        self.listings = [listing for _, listing in pairs]
        self.batch_size = args.batch_size
        with bench_text.silenced():
            self.model = finetuner.build_model(
                bench_text.MINILM, {"max_length": args.max_length}, batch_size=args.batch_size
            )

    def quality(self, transformer: torch.nn.Module | None = None) -> dict[str, float]:
        """Of *transformer*'s weights, or of the untrained model's before any is loaded."""
        import finetuner

        if transformer is not None:
            self.model.module.body.transformer.load_state_dict(transformer.state_dict())
        queries, listings = (
            finetuner.encode(self.model, texts, batch_size=self.batch_size, precision="32")
            for texts in (self.queries, self.listings)
        )
        return retrieval_quality(queries, listings)


def bench_train(args: argparse.Namespace) -> None:
    if args.batch_size % 2:
        raise SystemExit("bench_precision train: --batch-size counts texts of pairs; make it even.")
    train, held_out = product_pairs(args.pairs, args.held_out)
    print(
        f"train: {len(train):,} (query, listing) pairs, {args.batch_size} texts per step, 1 epoch, "
        f"max length {args.max_length}; quality on {len(held_out):,} held-out pairs; "
        f"{torch.get_num_threads()} torch threads; four sides in one process"
    )
    held = HeldOut(held_out, args)
    before = held.quality()
    print(f"  untrained: {format_quality(before)}")
    functions = {
        "finetuner": bench_text.train_finetuner,
        "sentence-transformers": bench_text.train_sentence_transformers,
    }
    # the process's first steps of each kind are slow (allocations, kernels' first calls)
    for library, precision in SIDES:
        warm_args = argparse.Namespace(**vars(args), adamw="defaults", precision=precision)
        functions[library](train[: args.batch_size], warm_args)
    print(f"  warm-up: one run of {args.batch_size} pairs per side, not counted")
    rates: dict[tuple[str, str], list[float]] = {side: [] for side in SIDES}
    quality: dict[tuple[str, str], list[dict[str, float]]] = {side: [] for side in SIDES}
    dtypes: dict[tuple[str, str], set[str]] = {side: set() for side in SIDES}
    for repeat in range(args.repeats):
        for side in rotated(repeat):
            library, precision = side
            side_args = argparse.Namespace(**vars(args), adamw="defaults", precision=precision)
            gc.collect()
            trained = functions[library](train, side_args)
            interval = trained.interval
            steps_per_s = interval.steps / interval.seconds
            rates[side].append(steps_per_s)
            dtypes[side].add(trained.compute_dtype)
            quality[side].append(held.quality(trained.transformer))
            print(
                f"  run {repeat + 1} {label(side):<26} {interval.steps} steps in "
                f"{interval.seconds:6.2f} s  {steps_per_s:5.3f} steps/s  "
                f"{steps_per_s * args.batch_size:6.1f} texts/s  computed in "
                f"{trained.compute_dtype}; {format_quality(quality[side][-1])}"
            )
            del trained
    print()
    for side in SIDES:
        print(
            f"{label(side):<26} median {statistics.median(rates[side]):6.3f} steps/s, "
            f"{statistics.median(rates[side]) * args.batch_size:6.1f} texts/s "
            f"(min {min(rates[side]):.3f}, max {max(rates[side]):.3f}); computed in "
            f"{', '.join(sorted(dtypes[side]))}"
        )
    report_ratios(rates, "steps/s")
    print(f"quality after 1 epoch (median over runs, min-max), untrained {format_quality(before)}:")
    for side in SIDES:
        runs = quality[side]
        print(
            f"  {label(side):<26} "
            + ", ".join(
                f"{name} {statistics.median(q[name] for q in runs):.4f} "
                f"({min(q[name] for q in runs):.4f}-{max(q[name] for q in runs):.4f})"
                for name in before
            )
        )


def format_quality(quality: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in quality.items())


# --- encode -----------------------------------------------------------------------------------


def bench_encode(args: argparse.Namespace) -> None:
    from sentence_transformers import SentenceTransformer

    import finetuner

    texts = bench_text.texts_to_encode(args.texts)
    print(
        f"encode: {len(texts):,} texts (mean {bench_text.mean_words(texts):.1f} words), batch "
        f"size {args.batch_size}, max length {args.max_length}; {torch.get_num_threads()} "
        f"torch threads; four sides in one process"
    )
    with bench_text.silenced():
        ours = finetuner.build_model(
            bench_text.MINILM, {"max_length": args.max_length}, batch_size=args.batch_size
        )
        theirs = SentenceTransformer(bench_text.minilm_path(), device="cpu")
    theirs.max_seq_length = args.max_length
    calls = {
        (library, precision): call
        for precision in bench_text.PRECISIONS
        for library, call in bench_text.encoders(
            ours, theirs, texts, args.batch_size, precision
        ).items()
    }
    for call in calls.values():  # warm-up, not counted
        call()
    rates: dict[tuple[str, str], list[float]] = {side: [] for side in SIDES}
    vectors: dict[tuple[str, str], np.ndarray] = {}
    for repeat in range(args.repeats):
        for side in rotated(repeat):
            gc.collect()
            start = time.perf_counter()
            vectors[side] = calls[side]()
            seconds = time.perf_counter() - start
            rates[side].append(len(texts) / seconds)
            print(
                f"  run {repeat + 1} {label(side):<26} {seconds:6.2f} s  "
                f"{len(texts) / seconds:6.1f} texts/s"
            )
    print()
    for side in SIDES:
        print(
            f"{label(side):<26} median {statistics.median(rates[side]):6.1f} texts/s "
            f"(min {min(rates[side]):.1f}, max {max(rates[side]):.1f})"
        )
    report_ratios(rates, "texts/s")
    print("vectors, bf16 against float32 (dtype of the returned vectors in brackets):")
    for a, b in [((library, "32"), (library, "bf16")) for library in LIBRARIES] + [
        (("finetuner", "32"), ("sentence-transformers", "32")),
        (("finetuner", "bf16"), ("sentence-transformers", "bf16")),
    ]:
        gap, cosine = compare(vectors[a], vectors[b])
        print(
            f"  {label(a)} [{vectors[a].dtype}] vs {label(b)} [{vectors[b].dtype}]: largest "
            f"absolute difference {gap:.2e}, smallest cosine {cosine:.7f} (1 - it {1 - cosine:.1e})"
        )


def compare(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """The largest absolute difference of a component, and the smallest cosine of two rows."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cosines = (a64 * b64).sum(axis=1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
    return float(np.abs(a64 - b64).max()), float(cosines.min())


# --- shared -----------------------------------------------------------------------------------


def report_ratios(rates: dict[tuple[str, str], list[float]], unit: str) -> None:
    """Each ratio of throughputs as the ratio of the medians and the median per-repeat ratio."""
    for top, bottom in (
        (("finetuner", "bf16"), ("finetuner", "32")),
        (("sentence-transformers", "bf16"), ("sentence-transformers", "32")),
        (("finetuner", "bf16"), ("sentence-transformers", "bf16")),
        (("finetuner", "32"), ("sentence-transformers", "32")),
    ):
        ratio = statistics.median(rates[top]) / statistics.median(rates[bottom])
        per_repeat = [a / b for a, b in zip(rates[top], rates[bottom])]
        print(
            f"{unit} {SHORT[top[0]]} {top[1]} / {SHORT[bottom[0]]} {bottom[1]}: {ratio:.3f}; "
            f"median of the per-repeat ratios {statistics.median(per_repeat):.3f} "
            f"({', '.join(f'{r:.3f}' for r in per_repeat)})"
        )


def main() -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--repeats", type=int, default=5)
    common.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    common.add_argument("--batch-size", type=int, default=32, help="texts per batch")
    common.add_argument("--max-length", type=int, default=128, help="tokens per text")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", parents=[common], help="training throughput, quality")
    train.add_argument("--pairs", type=int, default=512, help="training pairs")
    train.add_argument("--held-out", type=int, default=512, help="held-out pairs for quality")
    encode = commands.add_parser("encode", parents=[common], help="encoding throughput")
    encode.add_argument("--texts", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bench_text.quiet()
    describe_cpu()
    if args.command == "train":
        bench_train(args)
    else:
        bench_encode(args)


if __name__ == "__main__":
    main()
