"""Benchmark: framework overhead per training step, against a hand-written loop and Lightning.

Not a test. The same model trains on the same batches in four kinds of run, interleaved in one
process (the order rotates every repeat); the script prints each side's median time per step,
the ratios to the hand-written loop and the overhead in percent. Targets: finetuner at most 5%
over the loop on the tiny size, at most 1% on MiniLM, and below Lightning's overhead on both.

    python bench/bench_overhead.py [--size mlp] [--epochs 20] [--repeats 8] [--threads 1]
    python bench/bench_overhead.py --size minilm [--epochs 3] [--repeats 5]

The sizes: ``mlp`` (the default), finetuner's ``mlp`` (64 -> 128 -> 64) on scikit-learn's
digits, where the framework's per-step work is a visible share of a step; ``minilm``, the
bundled, pretrained ``sentence-transformers/all-MiniLM-L6-v2`` on 256 short templated texts in
8 classes (``MiniLMSetup``), where compute dominates. The runs, on either size:

- ``finetuner``: ``finetuner.fit`` with ``EvaluationCallback`` (never mid-epoch; queries:
  ``digits-eval``, or 64 texts of two other templates, searched among themselves),
  ``EarlyStopping`` (patience above the number of epochs, so it never stops),
  ``BestModelCheckpoint``, ``TrainingCheckpoint``, the always-on console reporter, and the
  bench's ``StepTimer``.
- ``loop``: a hand-written PyTorch loop.
- ``lightning``: a ``LightningModule`` fit by ``lightning.Trainer`` with its logger,
  checkpointing, progress bar, model summary and sanity check disabled (and no validation loop).
- ``paired``: the ``finetuner`` fit again, with a second, independent hand-written loop that
  runs one epoch between each two of finetuner's epochs (``PairedLoop``). Both are timed in the
  same process a few hundred milliseconds apart, so changes in the machine's load (other
  processes on its cores) hit both alike: the tightest finetuner/loop ratio. Where the loop's
  epoch runs alternates (see ``PairedLoop``), so neither side always follows the other's
  epoch-end work.

All of them build the model after ``torch.manual_seed(seed)`` as ``fit`` does (``MLP``; or
MiniLM and its tokenizer from finetuner's registry), use the same pytorch-metric-learning loss,
Adam with the same learning rate, and the batches of ``finetuner.data.ClassBalancedBatchSampler``
(same seed, ``set_epoch`` every epoch) gathered as finetuner's trainer gathers them
(``Dataset.batch``; for texts ``Dataset.take`` and the tokenizer); Lightning reads them through
a ``DataLoader`` with that batch sampler. MiniLM trains with dropout on every side, and each side
draws the same masks: the loops draw from a random stream of their own (``HandLoop``), Lightning's
``DataLoader`` seeds from a generator of its own. The script checks that the work is the same:
per-epoch train losses equal between finetuner and the loops, final weights equal between
Lightning and the loop.

What is timed: ``time.perf_counter()`` when each training batch begins (finetuner's
``finetuner_on_train_batch_begin``, Lightning's ``on_train_batch_start``, the top of the loop's
body: each after the batch was gathered and before the forward pass). The interval from one
batch begin to the next is one whole step: zeroing the gradients, forward, loss, backward,
optimizer step, reading the loss, the framework's per-step work and hooks, gathering the next
batch. Time per step is the mean of these intervals within epochs 2 and later, leaving out each
epoch's first interval. Start-up, the first epoch (warm-up) and everything between epochs
(evaluation, checkpoints, early-stopping and best-model bookkeeping, the console's epoch line)
are outside every interval, on every side. The first step after an epoch boundary is left out
because any work between epochs, even a pure-Python busy wait in the bare loop, slows that one
step by about 1 ms on the development machine (cold caches); its median is printed separately.
The "median interval" columns are a cross-check that shrugs off stalls from other load.

With ``--phases`` (the default for ``minilm``) hooks on the model, the loss and the optimizer
split every timed step into *compute* (the model's forward, the loss's forward, the backward
pass, the optimizer's update) and *glue* (the rest of the interval: zeroing gradients, moving
the batch, dispatching the loss, reading it, events and hooks, gathering the next batch). The
compute is the same work on every side, and on MiniLM it is 98% of a step; a whole-step ratio
carries the machine's noise in the compute, which on a shared 2-core machine swings by more
than the 1% target. The overhead is then also reported as each side's glue beyond the loop's,
as a share of the loop's step (``StepClock.attach``, ``report_phases``). For Lightning, whose
``optimizer.step(closure)`` runs forward and backward inside the step, the update is timed from
the end of the backward pass, so its own work between backward and update counts as compute:
its glue figure is, if anything, low.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import logging
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from typing import NamedTuple

import lightning as L
import torch
from pytorch_metric_learning import losses

import finetuner
from finetuner.callback import (
    BestModelCheckpoint,
    Callback,
    EarlyStopping,
    EvaluationCallback,
    TrainingCheckpoint,
)
from finetuner.data import ClassBalancedBatchSampler, Dataset, load_dataset
from finetuner.models import MLP

RUNS = ("finetuner", "loop", "lightning", "paired")
SIDES = ("finetuner", "loop", "lightning")
LOSS_OPTIONS = {"SupConLoss": {"temperature": 0.1}, "TripletMarginLoss": {}}
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


class StepClock:
    """Batch-begin timestamps per epoch; the same instrument on every side.

    With ``attach`` it also splits each step by hooks on the model, the loss and the
    optimizer: *compute* is the model's forward, the loss's forward, the backward pass (from
    the loss's gradient to the last parameter's accumulated gradient) and the optimizer's
    update; the rest of the interval is *glue*: what the framework or loop does around them
    (zeroing gradients, moving the batch, dispatching the loss, reading it, events and hooks,
    gathering the next batch)."""

    STAMPS = ("fwd0", "fwd1", "loss0", "loss1", "bw0", "bw1", "step0")

    def __init__(self) -> None:
        self.starts: dict[int, list[float]] = {}
        self.compute: dict[int, list[float]] = {}
        self._epoch = -1
        self._marks: dict[str, float] = {}

    def tick(self, epoch: int) -> None:
        self.starts.setdefault(epoch, []).append(time.perf_counter())
        self._epoch, self._marks = epoch, {}

    def _stamp(self, name: str) -> None:
        self._marks[name] = time.perf_counter()

    def attach(self, model: torch.nn.Module, loss_fn: torch.nn.Module, optimizer) -> None:
        stamp = self._stamp
        model.register_forward_pre_hook(lambda module, args: stamp("fwd0"))
        model.register_forward_hook(lambda module, args, out: stamp("fwd1"))
        loss_fn.register_forward_pre_hook(lambda module, args: stamp("loss0"))

        def loss_done(module, args, out) -> None:
            stamp("loss1")
            if out.requires_grad:  # fires first in the backward pass
                out.register_hook(lambda grad: stamp("bw0"))

        loss_fn.register_forward_hook(loss_done)
        for param in model.parameters():
            if param.requires_grad:  # the last one to fire ends the backward pass
                param.register_post_accumulate_grad_hook(lambda param: stamp("bw1"))
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: stamp("step0"))
        optimizer.register_step_post_hook(self._step_done)

    def _step_done(self, optimizer, args, kwargs) -> None:
        end, marks = time.perf_counter(), self._marks
        if not all(name in marks for name in self.STAMPS):
            return
        # Lightning calls optimizer.step(closure) and runs forward and backward inside it: its
        # update starts when the backward pass ends, not at the step's pre-hook.
        update = end - max(marks["step0"], marks["bw1"])
        self.compute.setdefault(self._epoch, []).append(
            (marks["fwd1"] - marks["fwd0"])
            + (marks["loss1"] - marks["loss0"])
            + (marks["bw1"] - marks["bw0"])
            + update
        )

    def _timed_gaps(self) -> Iterator[tuple[int, list[float]]]:
        """(epoch, batch-begin to batch-begin intervals) of epochs 2 and later."""
        for epoch, stamps in self.starts.items():
            gaps = [b - a for a, b in itertools.pairwise(stamps)]
            if epoch >= 1 and gaps:
                yield epoch, gaps

    def intervals(self) -> tuple[list[float], list[float]]:
        """Batch-begin to batch-begin intervals of epochs 2 and later: (steady, first), where
        *first* holds each epoch's first interval (its first step, right after the epoch
        boundary) and *steady* all the others."""
        steady: list[float] = []
        first: list[float] = []
        for _, gaps in self._timed_gaps():
            first.append(gaps[0])
            steady.extend(gaps[1:])
        if not steady:
            raise SystemExit("bench_overhead: nothing was timed; use more epochs or items.")
        return steady, first

    def split(self) -> tuple[float, float] | None:
        """Mean compute and mean glue over the steady intervals (seconds), or None when the
        clock was not attached. Interval i of an epoch holds step i's compute."""
        compute: list[float] = []
        glue: list[float] = []
        for epoch, gaps in self._timed_gaps():
            steps = self.compute.get(epoch, [])
            if len(steps) < len(gaps):
                return None
            for gap, work in list(zip(gaps, steps))[1:]:
                compute.append(work)
                glue.append(gap - work)
        if not compute:
            return None
        return statistics.fmean(compute), statistics.fmean(glue)


def summarize(clock: StepClock) -> tuple[float, float, float]:
    """Mean and median steady interval, median first interval of an epoch (seconds)."""
    steady, first = clock.intervals()
    return statistics.fmean(steady), statistics.median(steady), statistics.median(first)


class StepTimer(Callback):
    """The finetuner side's instrument: one timestamp per training batch."""

    def __init__(self, clock: StepClock, phases: bool) -> None:
        self._clock, self._phases = clock, phases
        self.plugins: list[str] = []

    def finetuner_on_fit_begin(self, ctx) -> None:
        self.plugins = [name for name, _ in ctx.plugin_manager.list_name_plugin()]
        if self._phases:
            (model,) = ctx.models.values()
            self._clock.attach(model, ctx.loss, ctx.optimizer)

    def finetuner_on_train_batch_begin(self, event) -> None:
        self._clock.tick(event.epoch)


class LightningStepTimer(L.Callback):
    def __init__(self, clock: StepClock, phases: bool) -> None:
        self.clock, self.phases = clock, phases

    def on_train_start(self, trainer, pl_module) -> None:
        if self.phases:
            self.clock.attach(pl_module.model, pl_module.loss_fn, trainer.optimizers[0])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.clock.tick(trainer.current_epoch)


class Embedder(L.LightningModule):
    def __init__(
        self, model: torch.nn.Module, loss_fn: torch.nn.Module, lr: float, sampler
    ) -> None:
        super().__init__()
        self.model, self.loss_fn, self.lr, self.sampler = model, loss_fn, lr, sampler

    def on_train_epoch_start(self) -> None:
        # Lightning calls set_epoch on a DataLoader's sampler and batch_sampler.sampler, not on
        # the batch sampler itself: without this every epoch would repeat the first's batches.
        self.sampler.set_epoch(self.current_epoch)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.loss_fn(self.model(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.model.parameters(), lr=self.lr, fused=True)  # as fit builds it


class Gathered(torch.utils.data.Dataset):
    """Lets a ``DataLoader`` fetch whole batches the way the other sides gather them."""

    def __init__(self, setup: Setup) -> None:
        self.size, self.gather = len(setup.data), setup.gather

    def __len__(self) -> int:
        return self.size

    def __getitems__(self, indices):
        return self.gather(indices)


def as_is(batch):
    return batch


class HandLoop:
    """The hand-written loop, one epoch at a time.

    It draws dropout masks from a random stream of its own (the global torch generator's
    state right after it built its model, swapped in for its epochs and out again): the paired
    run's loop then leaves finetuner's stream alone, so both see the masks a run of their own
    would, and the losses stay comparable. Without dropout (``mlp``) nothing is drawn.
    """

    def __init__(self, setup: Setup) -> None:
        self.gather, self.model, self.loss_fn = setup.gather, setup.model(), setup.loss()
        self.rng = torch.get_rng_state()
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=setup.args.lr, fused=True
        )  # as fit
        self.sampler = setup.sampler()
        self.clock = StepClock()
        if setup.args.phases:
            self.clock.attach(self.model, self.loss_fn, self.optimizer)
        self.epoch_losses: list[float] = []

    def epoch(self, epoch: int) -> None:
        outer = torch.get_rng_state()
        torch.set_rng_state(self.rng)
        try:
            self._epoch(epoch)
        finally:
            self.rng = torch.get_rng_state()
            torch.set_rng_state(outer)

    def _epoch(self, epoch: int) -> None:
        gather, model, loss_fn, optimizer, clock = (
            self.gather,
            self.model,
            self.loss_fn,
            self.optimizer,
            self.clock,
        )
        self.sampler.set_epoch(epoch)
        model.train()
        total, count = 0.0, 0
        for indices in self.sampler:
            x, y = gather(indices)
            clock.tick(epoch)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            total += float(loss.item())
            count += 1
        self.epoch_losses.append(total / count)


class PairedLoop(Callback):
    """Runs one epoch of an independent hand-written loop between each two of finetuner's
    epochs (outside finetuner's timed intervals).

    Whatever runs between epochs leaves the next few steps colder, so the loop's epoch takes
    turns between two places: on even epochs right after finetuner's training steps (the loop
    starts warm, finetuner's next epoch after its own epoch-end work), on odd epochs after all
    of finetuner's epoch-end work, checkpoint included (the other way round).
    """

    def __init__(self, loop: HandLoop) -> None:
        self._loop = loop

    def finetuner_on_train_epoch_end(self, event) -> None:
        if event.epoch % 2 == 0:
            self._loop.epoch(event.epoch)

    @finetuner.hookimpl(trylast=True)
    def finetuner_on_epoch_end(self, event) -> None:
        if event.epoch % 2 == 1:
            self._loop.epoch(event.epoch)


class Result(NamedTuple):
    clock: StepClock
    epoch_losses: list[float] | None = None
    weights: dict[str, torch.Tensor] | None = None
    plugins: list[str] | None = None
    loop: HandLoop | None = None  # the paired run's loop


class Setup:
    """One size of the comparison: its data, model and batches; the runs are the same for
    every size. A size provides ``describe``, ``model``, ``gather`` and what ``fit`` gets."""

    fit_model: str
    fit_data: object
    model_options: dict
    query_data: object
    data: Dataset

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loss_options = LOSS_OPTIONS[args.loss]

    def describe(self) -> str:
        raise NotImplementedError

    def model(self) -> torch.nn.Module:
        raise NotImplementedError

    def gather(self, indices) -> tuple[object, torch.Tensor]:
        """The model's input and the labels of one batch, as finetuner's trainer gathers them."""
        raise NotImplementedError

    def loss(self) -> torch.nn.Module:
        return getattr(losses, self.args.loss)(**self.loss_options)

    def sampler(self) -> ClassBalancedBatchSampler:
        args = self.args
        return ClassBalancedBatchSampler(
            self.data.labels, args.batch_size, args.items_per_class, args.seed
        )

    # --- the runs ----------------------------------------------------------------------------

    def run_finetuner(self, paired: bool = False) -> Result:
        args, clock = self.args, StepClock()
        timer = StepTimer(clock, args.phases)
        loop = HandLoop(self) if paired else None
        callbacks = [
            EvaluationCallback(query_data=self.query_data, limit=20),
            EarlyStopping(monitor="precision_at_k", patience=args.epochs + 1),
            BestModelCheckpoint(monitor="precision_at_k"),
            TrainingCheckpoint(),
            timer,
            *([PairedLoop(loop)] if loop is not None else []),
        ]
        # stdout is not a terminal here, so the console reporter prints one line per epoch
        # (outside the timed intervals) instead of a progress bar; the lines are dropped.
        with tempfile.TemporaryDirectory() as runs_dir, contextlib.redirect_stdout(io.StringIO()):
            run = finetuner.fit(
                self.fit_model,
                self.fit_data,
                model_options=self.model_options,
                loss=args.loss,
                loss_options=self.loss_options,
                optimizer="Adam",
                learning_rate=args.lr,
                epochs=args.epochs,
                batch_size=args.batch_size,
                num_items_per_class=args.items_per_class,
                callbacks=callbacks,
                device="cpu",
                seed=args.seed,
                runs_dir=runs_dir,
            )
            epoch_losses = [
                record["metrics"]["train_loss"]
                for record in run.metric_history()
                if record["stage"] == "epoch"
            ]
        # best-model restores the best epoch's weights: compare the losses only
        return Result(clock, epoch_losses, plugins=timer.plugins, loop=loop)

    def run_paired(self) -> Result:
        return self.run_finetuner(paired=True)

    def run_loop(self) -> Result:
        loop = HandLoop(self)
        for epoch in range(self.args.epochs):
            loop.epoch(epoch)
        return Result(loop.clock, loop.epoch_losses, loop.model.state_dict())

    def run_lightning(self) -> Result:
        args, clock = self.args, StepClock()
        sampler = self.sampler()
        module = Embedder(self.model(), self.loss(), args.lr, sampler)
        # Lightning keeps the modes it finds (from_pretrained leaves a transformer in eval
        # mode); the other sides call train() themselves, so dropout is on everywhere.
        module.train()
        # A generator of its own: a DataLoader draws a base seed for its workers from the
        # global generator each epoch, which would shift the dropout masks against the loop's.
        loader = torch.utils.data.DataLoader(
            Gathered(self), batch_sampler=sampler, collate_fn=as_is, generator=torch.Generator()
        )
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            max_epochs=args.epochs,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=[LightningStepTimer(clock, args.phases)],
        )
        trainer.fit(module, train_dataloaders=loader)
        return Result(clock, weights=module.model.state_dict())


class MlpSetup(Setup):
    """The tiny size: ``mlp`` (64 -> 128 -> 64) on ``digits-train``."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.data = load_dataset("digits-train")
        self.hidden_sizes = [128, 64]
        self.fit_model, self.fit_data, self.query_data = "mlp", "digits-train", "digits-eval"
        self.model_options = {"hidden_sizes": self.hidden_sizes}

    def describe(self) -> str:
        return f"mlp {self.hidden_sizes} on digits-train ({len(self.data):,} items)"

    def model(self) -> torch.nn.Module:
        torch.manual_seed(self.args.seed)  # what fit's seed does before it builds the model
        item = self.data.batch([0])[0][0]
        return MLP(input_size=int(item.numel()), hidden_sizes=self.hidden_sizes)

    def gather(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data.batch(indices)


# Short templated texts in 8 classes: each class names four things, each training template
# mentions one (8 templates x 4 = 32 texts per class, 256 in all); the queries of the
# evaluation come from two other templates (64 texts).
TOPICS = {
    "sports": ("the football match", "the tennis final", "the marathon", "the basketball game"),
    "weather": ("the heavy rain", "the snowstorm", "the heat wave", "the strong wind"),
    "cooking": ("the pasta recipe", "the bread dough", "the curry", "the chocolate cake"),
    "music": ("the jazz concert", "the new album", "the violin solo", "the piano lesson"),
    "finance": ("the stock market", "the interest rates", "the bank loan", "the tax return"),
    "travel": ("the train to Rome", "the flight delay", "the hotel booking", "the beach trip"),
    "health": ("the flu vaccine", "the back pain", "the dentist visit", "the sleep study"),
    "technology": ("the new laptop", "the phone update", "the software bug", "the cloud server"),
}
TRAIN_TEMPLATES = (
    "Everyone was talking about {} today.",
    "I read a short article on {}.",
    "My neighbour asked me about {}.",
    "There was a long report on {} last night.",
    "We argued about {} over lunch.",
    "She sent me a photo of {}.",
    "Nobody expected {} to matter so much.",
    "The radio kept mentioning {}.",
)
QUERY_TEMPLATES = ("What do you think of {}?", "Tell me more about {}.")


def templated_texts(templates: tuple[str, ...]) -> list[tuple[str, str]]:
    return [
        (template.format(thing), topic)
        for topic, things in TOPICS.items()
        for thing in things
        for template in templates
    ]


class MiniLMSetup(Setup):
    """The small text size: the bundled, pretrained ``all-MiniLM-L6-v2`` (mean pooling,
    normalised) on short labelled texts. The loop and Lightning build the module and the
    tokenizer from finetuner's registry, as ``fit`` does, and gather batches as its trainer
    does (``Dataset.take``, then the preprocessor on the texts), so the weights, the tokens and
    the work are the same on every side."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.fit_model, self.model_options = MINILM, {}
        self.fit_data = templated_texts(TRAIN_TEMPLATES)
        self.query_data = templated_texts(QUERY_TEMPLATES)
        self.data = load_dataset(self.fit_data)
        self.spec = finetuner.models.get_spec(MINILM)
        self.options = self.spec.resolve_options(self.model_options, None)
        assert self.spec.preprocessor is not None
        self.preprocess = self.spec.preprocessor(self.options, None, None)

    def describe(self) -> str:
        return (
            f"{MINILM} (pretrained, pooling {self.options['pooling']}, normalize "
            f"{self.options['normalize']}) on {len(self.data)} templated texts in "
            f"{self.data.num_classes} classes"
        )

    def model(self) -> torch.nn.Module:
        torch.manual_seed(self.args.seed)  # what fit's seed does before it builds the model
        return self.spec.build(self.options)

    def gather(self, indices) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        batch = self.data.take(indices)
        assert batch.labels is not None
        return self.preprocess(batch.items[0]), batch.labels


class Size(NamedTuple):
    setup: type[Setup]
    defaults: dict[str, int | float | bool]
    target: float  # finetuner / loop, at most


SIZES = {
    "mlp": Size(
        MlpSetup,
        {
            "epochs": 20,
            "repeats": 8,
            "lr": 1e-3,
            "batch_size": 64,
            "items_per_class": 8,
            "phases": False,
        },
        1.05,
    ),
    # A MiniLM step takes about a second on one thread, so the runs are short: 3 epochs of 8
    # steps (epoch 1 warm-up), 5 repeats; 8 to 15 minutes on the development machine.
    "minilm": Size(
        MiniLMSetup,
        {
            "epochs": 3,
            "repeats": 5,
            "lr": 2e-5,
            "batch_size": 32,
            "items_per_class": 4,
            "phases": True,
        },
        1.01,
    ),
}


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="mlp")
    parser.add_argument("--epochs", type=int, help="default: 20 (mlp), 3 (minilm)")
    parser.add_argument("--repeats", type=int, help="default: 8 (mlp), 5 (minilm)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads, all runs")
    parser.add_argument("--loss", choices=sorted(LOSS_OPTIONS), default="SupConLoss")
    parser.add_argument("--lr", type=float, help="default: 1e-3 (mlp), 2e-5 (minilm)")
    parser.add_argument("--batch-size", type=int, help="default: 64 (mlp), 32 (minilm)")
    parser.add_argument("--items-per-class", type=int, help="default: 8 (mlp), 4 (minilm)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--phases",
        action=argparse.BooleanOptionalAction,
        help="split each step into compute and glue by hooks (default: on for minilm only)",
    )
    args = parser.parse_args()
    size = SIZES[args.size]
    for name, value in size.defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.epochs < 2 or args.repeats < 1:
        parser.error("--epochs must be at least 2 (the first is warm-up) and --repeats at least 1")

    torch.set_num_threads(args.threads)
    # Lightning's start-up notices ("GPU available: False", tips) and a deprecation warning of
    # its own code; a warning about the bench's set-up would still show.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")

    setup = size.setup(args)
    steps = len(setup.sampler())
    print(
        f"{setup.describe()}, {args.loss}, Adam lr {args.lr}, batch {args.batch_size} "
        f"({args.items_per_class} per class), {steps} steps x {args.epochs} epochs; timed: "
        f"epochs 2-{args.epochs}, {(steps - 2) * (args.epochs - 1)} steady intervals per run"
    )
    print(
        f"torch {torch.__version__}, lightning {L.__version__}, finetuner "
        f"{finetuner.__version__}, {args.threads} torch thread(s), python "
        f"{sys.version.split()[0]}"
    )
    runners = {
        "finetuner": setup.run_finetuner,
        "loop": setup.run_loop,
        "lightning": setup.run_lightning,
        "paired": setup.run_paired,
    }
    # Per run: (mean steady interval, median steady interval, median first interval).
    figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in SIDES}
    paired: list[tuple[float, float]] = []  # finetuner / loop in the paired run: mean, median
    # Per run, with --phases: (mean compute, mean glue, mean step) in seconds.
    splits: dict[str, list[tuple[float, float, float]]] = {name: [] for name in SIDES}
    paired_glue: list[tuple[float, float]] = []  # finetuner's glue - its loop's, loop's step
    same = {"finetuner": True, "paired loop": True, "lightning": True}
    plugins: list[str] = []
    for repeat in range(args.repeats):
        order = RUNS[repeat % 4 :] + RUNS[: repeat % 4]
        results: dict[str, Result] = {}
        for name in order:
            result = results[name] = runners[name]()
            if torch.get_num_threads() != args.threads:
                raise SystemExit(f"bench_overhead: {name} changed the number of torch threads")
            ours = summarize(result.clock)
            split = result.clock.split() if args.phases else None
            if name != "paired":
                figures[name].append(ours)
                if split is not None:
                    splits[name].append((*split, ours[0]))
                print(
                    f"  run {repeat + 1} {name:<10} {ours[0] * 1e3:6.3f} ms/step  (median "
                    f"interval {ours[1] * 1e3:6.3f}, first step of an epoch {ours[2] * 1e3:6.3f})"
                )
                continue
            assert result.loop is not None
            theirs = summarize(result.loop.clock)
            paired.append((ours[0] / theirs[0], ours[1] / theirs[1]))
            their_split = result.loop.clock.split() if args.phases else None
            if split is not None and their_split is not None:
                paired_glue.append((split[1] - their_split[1], theirs[0]))
            print(
                f"  run {repeat + 1} paired     finetuner {ours[0] * 1e3:6.3f}, loop "
                f"{theirs[0] * 1e3:6.3f} ms/step: {paired[-1][0]:.3f}  (median intervals "
                f"{ours[1] * 1e3:6.3f}, {theirs[1] * 1e3:6.3f}: {paired[-1][1]:.3f})"
            )
        loop = results["loop"]
        plugins = results["finetuner"].plugins or []
        same["finetuner"] &= results["finetuner"].epoch_losses == loop.epoch_losses
        same["finetuner"] &= results["paired"].epoch_losses == loop.epoch_losses
        same["paired loop"] &= results["paired"].loop.epoch_losses == loop.epoch_losses
        same["lightning"] &= same_weights(results["lightning"].weights, loop.weights)

    print(f"finetuner's plugins: {', '.join(plugins)}")
    print(
        "same work: per-epoch train losses of finetuner "
        f"{'equal' if same['finetuner'] else 'DIFFER FROM'} the loop's, of the paired loop "
        f"{'equal' if same['paired loop'] else 'DIFFER FROM'} them; Lightning's final weights "
        f"{'equal' if same['lightning'] else 'DIFFER FROM'} the loop's"
    )
    medians = {
        name: [statistics.median(run[i] for run in figures[name]) for i in range(3)]
        for name in SIDES
    }
    loop = medians["loop"]
    print(
        f"medians of {args.repeats} runs (ms)      per step   /loop  overhead  per-run /loop "
        "(min-max)  median interval  /loop  first step of an epoch"
    )
    for name in SIDES:
        mean, median, first = medians[name]
        per_run = [run[0] / base[0] for run, base in zip(figures[name], figures["loop"])]
        print(
            f"  {name:<32} {mean * 1e3:7.3f}  {mean / loop[0]:6.3f}  "
            f"{(mean / loop[0] - 1) * 100:+7.1f}%  {statistics.median(per_run):6.3f} "
            f"({min(per_run):.3f}-{max(per_run):.3f})  {median * 1e3:15.3f}  "
            f"{median / loop[1]:5.3f}  {first * 1e3:22.3f}"
        )
    pair = [statistics.median(run[i] for run in paired) for i in range(2)]
    print(
        f"  {'paired: finetuner / loop, one fit':<32} {'':7}  {pair[0]:6.3f}  "
        f"{(pair[0] - 1) * 100:+7.1f}%  {'':6} ({min(r[0] for r in paired):.3f}-"
        f"{max(r[0] for r in paired):.3f})  {'':15}  {pair[1]:5.3f}"
    )
    if args.phases:
        report_phases(splits, paired_glue, size.target)
    ratio, lightning = medians["finetuner"][0] / loop[0], medians["lightning"][0] / loop[0]
    target = size.target
    print(
        f"finetuner overhead per step {(ratio - 1) * 100:+.1f}% "
        f"({(medians['finetuner'][0] - loop[0]) * 1e6:+.0f} us), paired {(pair[0] - 1) * 100:+.1f}%"
        f"; target <= {(target - 1) * 100:+.0f}%: {'met' if ratio <= target else 'MISSED'}, "
        f"paired {'met' if pair[0] <= target else 'MISSED'}. "
        f"Lightning {(lightning - 1) * 100:+.1f}% "
        f"({(medians['lightning'][0] - loop[0]) * 1e6:+.0f} us); finetuner below Lightning: "
        f"{'met' if ratio < lightning else 'MISSED'}"
    )


def report_phases(
    splits: dict[str, list[tuple[float, float, float]]],
    paired_glue: list[tuple[float, float]],
    target: float,
) -> None:
    """The overhead as the time a side spends outside the shared compute, beyond the loop's:
    the compute is the same work on every side, and timing the rest alone keeps the
    machine's noise in the compute (most of a step) out of the figure."""
    if any(len(splits[name]) == 0 for name in SIDES):
        print("phases: some runs were not split (a side ran steps the hooks did not see)")
        return
    med = {
        name: [statistics.median(run[i] for run in splits[name]) for i in range(3)]
        for name in SIDES
    }
    step, compute, glue = med["loop"][2], med["loop"][0], med["loop"][1]
    print(
        f"split of a step, medians of {len(splits['loop'])} runs (ms): compute (forward, loss, "
        "backward, update) and glue (the rest); extra glue = glue - the loop's, % of its step"
    )
    extra: dict[str, float] = {}
    for name in SIDES:
        c, g, total = med[name]
        extra[name] = (g - glue) / step
        runs = sorted(run[1] * 1e3 for run in splits[name])
        print(
            f"  {name:<10} step {total * 1e3:9.3f}  compute {c * 1e3:9.3f} ({c / compute:.3f} "
            f"of the loop's)  glue {g * 1e3:7.3f} (runs {runs[0]:.3f}-{runs[-1]:.3f})  extra "
            f"glue {(g - glue) * 1e3:+7.3f} ms ({extra[name] * 100:+.3f}%)"
        )
    if paired_glue:
        gaps = sorted(gap / base for gap, base in paired_glue)
        pair = statistics.median(gaps)
        print(
            f"  paired: finetuner's glue - its loop's, one fit: "
            f"{statistics.median(g for g, _ in paired_glue) * 1e3:+.3f} ms ({pair * 100:+.3f}% "
            f"of the loop's step; runs {gaps[0] * 100:+.3f}% to {gaps[-1] * 100:+.3f}%)"
        )
    limit = (target - 1) * 100
    print(
        f"finetuner extra glue {extra['finetuner'] * 100:+.3f}% of a step; target <= "
        f"{limit:+.0f}%: {'met' if extra['finetuner'] <= target - 1 else 'MISSED'}. Lightning "
        f"{extra['lightning'] * 100:+.3f}%; finetuner below Lightning: "
        f"{'met' if extra['finetuner'] < extra['lightning'] else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
