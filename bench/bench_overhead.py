"""Benchmark: framework overhead per training step, against a hand-written loop and Lightning.

Not a test. The same model trains on the same batches in four kinds of run, interleaved in one
process (the order rotates every repeat); the script prints each side's median time per step,
the ratios to the hand-written loop and the overhead in percent. Targets: finetuner at most 5%
over the loop, and below Lightning's overhead.

    python bench/bench_overhead.py [--epochs 20] [--repeats 8] [--threads 1]

The runs (``--size mlp``, the default: finetuner's ``mlp``, 64 -> 128 -> 64, on scikit-learn's
digits):

- ``finetuner``: ``finetuner.fit`` with ``EvaluationCallback`` (never mid-epoch; queries:
  ``digits-eval`` searched among themselves), ``EarlyStopping`` (patience above the number of
  epochs, so it never stops), ``BestModelCheckpoint``, ``TrainingCheckpoint``, the always-on
  console reporter, and the bench's ``StepTimer``.
- ``loop``: a hand-written PyTorch loop.
- ``lightning``: a ``LightningModule`` fit by ``lightning.Trainer`` with its logger,
  checkpointing, progress bar, model summary and sanity check disabled (and no validation loop).
- ``paired``: the ``finetuner`` fit again, with a second, independent hand-written loop that
  runs one epoch between each two of finetuner's epochs (``PairedLoop``). Both are timed in the
  same process a few hundred milliseconds apart, so changes in the machine's load (other
  processes on its cores) hit both alike: the tightest finetuner/loop ratio. Where the loop's
  epoch runs alternates (see ``PairedLoop``), so neither side always follows the other's
  epoch-end work.

All of them build ``finetuner.models.MLP`` after ``torch.manual_seed(seed)``, use the same
pytorch-metric-learning loss, Adam with the same learning rate, and the batches of
``finetuner.data.ClassBalancedBatchSampler`` (same seed, ``set_epoch`` every epoch) gathered by
``Dataset.batch``; Lightning reads them through a ``DataLoader`` with that batch sampler. The
script checks that the work is the same: per-epoch train losses equal between finetuner and the
loops, final weights equal between Lightning and the loop.

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

``--size minilm`` (a small text model) is reserved and not available yet.
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
from finetuner.data import ClassBalancedBatchSampler, load_dataset
from finetuner.models import MLP

RUNS = ("finetuner", "loop", "lightning", "paired")
SIDES = ("finetuner", "loop", "lightning")
LOSS_OPTIONS = {"SupConLoss": {"temperature": 0.1}, "TripletMarginLoss": {}}


class StepClock:
    """Batch-begin timestamps per epoch; the same instrument on every side."""

    def __init__(self) -> None:
        self.starts: dict[int, list[float]] = {}

    def tick(self, epoch: int) -> None:
        self.starts.setdefault(epoch, []).append(time.perf_counter())

    def intervals(self) -> tuple[list[float], list[float]]:
        """Batch-begin to batch-begin intervals of epochs 2 and later: (steady, first), where
        *first* holds each epoch's first interval (its first step, right after the epoch
        boundary) and *steady* all the others."""
        steady: list[float] = []
        first: list[float] = []
        for epoch, stamps in self.starts.items():
            gaps = [b - a for a, b in itertools.pairwise(stamps)]
            if epoch >= 1 and gaps:
                first.append(gaps[0])
                steady.extend(gaps[1:])
        if not steady:
            raise SystemExit("bench_overhead: nothing was timed; use more epochs or items.")
        return steady, first


def summarize(clock: StepClock) -> tuple[float, float, float]:
    """Mean and median steady interval, median first interval of an epoch (seconds)."""
    steady, first = clock.intervals()
    return statistics.fmean(steady), statistics.median(steady), statistics.median(first)


class StepTimer(Callback):
    """The finetuner side's instrument: one timestamp per training batch."""

    def __init__(self, clock: StepClock) -> None:
        self._clock = clock
        self.plugins: list[str] = []

    def finetuner_on_fit_begin(self, ctx) -> None:
        self.plugins = [name for name, _ in ctx.plugin_manager.list_name_plugin()]

    def finetuner_on_train_batch_begin(self, event) -> None:
        self._clock.tick(event.epoch)


class LightningStepTimer(L.Callback):
    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

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
        return torch.optim.Adam(self.model.parameters(), lr=self.lr)


class Gathered(torch.utils.data.Dataset):
    """Lets a ``DataLoader`` fetch whole batches with ``Dataset.batch``, as the other sides do."""

    def __init__(self, data) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitems__(self, indices):
        return self.data.batch(indices)


def as_is(batch):
    return batch


class HandLoop:
    """The hand-written loop, one epoch at a time."""

    def __init__(self, setup: MlpSetup) -> None:
        self.data, self.model, self.loss_fn = setup.data, setup.model(), setup.loss()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=setup.args.lr)
        self.sampler = setup.sampler()
        self.clock = StepClock()
        self.epoch_losses: list[float] = []

    def epoch(self, epoch: int) -> None:
        data, model, loss_fn, optimizer, clock = (
            self.data,
            self.model,
            self.loss_fn,
            self.optimizer,
            self.clock,
        )
        self.sampler.set_epoch(epoch)
        model.train()
        total, count = 0.0, 0
        for indices in self.sampler:
            x, y = data.batch(indices)
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


class MlpSetup:
    """The tiny size: ``mlp`` (64 -> 128 -> 64) on ``digits-train``."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.data = load_dataset("digits-train")
        self.hidden_sizes = [128, 64]
        self.loss_options = LOSS_OPTIONS[args.loss]

    def model(self) -> torch.nn.Module:
        torch.manual_seed(self.args.seed)  # what fit's seed does before it builds the model
        item = self.data.batch([0])[0][0]
        return MLP(input_size=int(item.numel()), hidden_sizes=self.hidden_sizes)

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
        timer = StepTimer(clock)
        loop = HandLoop(self) if paired else None
        callbacks = [
            EvaluationCallback(query_data="digits-eval", limit=20),
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
                "mlp",
                "digits-train",
                model_options={"hidden_sizes": self.hidden_sizes},
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
        loader = torch.utils.data.DataLoader(
            Gathered(self.data), batch_sampler=sampler, collate_fn=as_is
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
            callbacks=[LightningStepTimer(clock)],
        )
        trainer.fit(module, train_dataloaders=loader)
        return Result(clock, weights=module.model.state_dict())


def run_minilm(args: argparse.Namespace) -> None:
    # TODO: the same runs on a small text model (MiniLM) once finetuner's text backbone lands;
    # it is being built elsewhere right now. Nothing is timed until then.
    raise SystemExit(
        "bench_overhead: --size minilm is not available yet (finetuner's text backbone is "
        "still being built); run the default --size mlp."
    )


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("mlp", "minilm"), default="mlp")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads, all runs")
    parser.add_argument("--loss", choices=sorted(LOSS_OPTIONS), default="SupConLoss")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--items-per-class", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.size == "minilm":
        run_minilm(args)
    if args.epochs < 2 or args.repeats < 1:
        parser.error("--epochs must be at least 2 (the first is warm-up) and --repeats at least 1")

    torch.set_num_threads(args.threads)
    # Lightning's start-up notices ("GPU available: False", tips) and a deprecation warning of
    # its own code; a warning about the bench's set-up would still show.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")

    setup = MlpSetup(args)
    steps = len(setup.sampler())
    print(
        f"mlp {setup.hidden_sizes} on digits-train ({len(setup.data):,} items), {args.loss}, "
        f"Adam lr {args.lr}, batch {args.batch_size} ({args.items_per_class} per class), "
        f"{steps} steps x {args.epochs} epochs; timed: epochs 2-{args.epochs}, "
        f"{(steps - 2) * (args.epochs - 1)} steady intervals per run"
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
            if name != "paired":
                figures[name].append(ours)
                print(
                    f"  run {repeat + 1} {name:<10} {ours[0] * 1e3:6.3f} ms/step  (median "
                    f"interval {ours[1] * 1e3:6.3f}, first step of an epoch {ours[2] * 1e3:6.3f})"
                )
                continue
            assert result.loop is not None
            theirs = summarize(result.loop.clock)
            paired.append((ours[0] / theirs[0], ours[1] / theirs[1]))
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
    ratio, lightning = medians["finetuner"][0] / loop[0], medians["lightning"][0] / loop[0]
    print(
        f"finetuner overhead per step {(ratio - 1) * 100:+.1f}% "
        f"({(medians['finetuner'][0] - loop[0]) * 1e6:+.0f} us), paired {(pair[0] - 1) * 100:+.1f}%"
        f"; target <= +5%: {'met' if ratio <= 1.05 else 'MISSED'}, paired "
        f"{'met' if pair[0] <= 1.05 else 'MISSED'}. Lightning {(lightning - 1) * 100:+.1f}% "
        f"({(medians['lightning'][0] - loop[0]) * 1e6:+.0f} us); finetuner below Lightning: "
        f"{'met' if ratio < lightning else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
