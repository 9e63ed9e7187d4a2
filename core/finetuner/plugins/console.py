"""The console reporter: an always-on plugin that shows a fit on the terminal.

It draws a rich progress bar per epoch (only when the output is a terminal), shows what
plugins log at INFO and above, and always prints the closing summary: duration, one
``Metric: ...`` line per published metric, the artifact's location and size.

Registered through the ``finetuner.plugins`` entry point ``console``; disable it with
``FINETUNER_DISABLE_PLUGINS=console``.
"""

from __future__ import annotations

from typing import Any

from ..events import (
    BatchEnded,
    EpochEnded,
    EpochStarted,
    ExceptionRaised,
    FitEnded,
    FitStarted,
    LogRecorded,
    MetricsPublished,
    ValidationEnded,
)

__all__ = ["ConsoleReporter", "format_duration", "format_metric_line"]


def format_duration(seconds: float) -> str:
    """``Finetuning took 0 days, 0 hours 3 minutes and 48 seconds``-style duration."""
    total = round(seconds)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    return f"{days} days, {hours} hours {minutes} minutes and {secs} seconds"


def format_metric_line(key: str, before: float | None, after: float | None) -> str:
    def shown(value: float | None) -> str:
        return f"{value:.5f}" if value is not None else "-"

    return f"Metric: '{key}' before fine-tuning:  {shown(before)} after fine-tuning: {shown(after)}"


class ConsoleReporter:
    """Progress bars and summary lines; one instance per run."""

    def __init__(self, console: Any = None) -> None:
        self._console = console
        self._progress: Any = None
        self._task: Any = None
        self._loss_sum = 0.0
        self._loss_count = 0
        self._val_loss: float | None = None
        self._epochs = 0
        self._before: dict[str, float] = {}
        self._after: dict[str, float] = {}
        from ..distributed.env import is_main_process  # here: it imports torch

        self._muted = not is_main_process()
        """In a distributed fit only rank 0 reports, once for all ranks."""

    @property
    def console(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(soft_wrap=True, highlight=False)
        return self._console

    def _print(self, text: str) -> None:
        if self._muted:
            return
        target = self._progress.console if self._progress is not None else self.console
        target.print(text, markup=False, highlight=False, soft_wrap=True)

    # --- hooks -------------------------------------------------------------------------------

    def finetuner_on_fit_begin(self, ctx: Any, event: FitStarted) -> None:
        self._epochs = event.epochs
        self._print(f"Finetuning run '{event.run_name}' (experiment '{event.experiment_name}') ...")
        if self.console.is_terminal and not self._muted:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(style="dark_green", complete_style="green", finished_style="yellow"),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TimeElapsedColumn(),
                TextColumn("•"),
                TextColumn("{task.fields[metrics]}"),
                console=self.console,
                refresh_per_second=8,
            )
            self._progress.start()

    def finetuner_on_epoch_begin(self, event: EpochStarted) -> None:
        self._loss_sum, self._loss_count = 0.0, 0
        if self._progress is not None:
            self._task = self._progress.add_task(
                f"Training [{event.epoch + 1}/{event.epochs}]",
                total=event.batches or event.steps,
                completed=event.first_batch,
                metrics=self._metrics_text(),
            )

    def finetuner_on_train_batch_end(self, event: BatchEnded) -> None:
        self._loss_sum += event.loss
        self._loss_count += 1
        if self._progress is not None:
            self._progress.update(self._task, advance=1, metrics=self._metrics_text())

    def finetuner_on_validation_end(self, event: ValidationEnded) -> None:
        self._val_loss = event.val_loss
        if self._progress is not None:
            self._progress.update(self._task, metrics=self._metrics_text())

    def finetuner_on_metrics(self, event: MetricsPublished) -> None:
        if event.stage == "before":
            self._before = dict(event.metrics)
        elif event.stage == "after":
            self._after = dict(event.metrics)

    def finetuner_on_epoch_end(self, event: EpochEnded) -> None:
        if self._progress is None:
            # Not a terminal: one line per epoch instead of a bar.
            self._print(f"Training [{event.epoch + 1}/{event.epochs}] {self._metrics_text()}")

    def finetuner_on_log(self, event: LogRecorded) -> None:
        from ..runs.log import (
            level_number,  # structlog loads with a run, not with `finetuner plugins`
        )

        level = level_number(event.level)
        if level >= 30 or (level >= 20 and event.logger != "finetuner.trainer"):
            prefix = "" if level < 30 else f"{event.level.upper()} "
            self._print(f"{prefix}{event.message}")

    def finetuner_on_fit_end(self, event: FitEnded) -> None:
        self._stop()
        self._print("Done ✨")
        self._print(f"Finetuning took {format_duration(event.duration_s)}")
        keys = [k for k in self._after if k != "train_loss"]
        keys += [k for k in self._before if k not in self._after and k != "train_loss"]
        for key in keys:
            self._print(format_metric_line(key, self._before.get(key), self._after.get(key)))
        self._print(f"Artifact saved in {event.artifact_path}")
        self._print(f"Artifact size is {event.artifact_size_bytes / 1_000_000:.3f} MB")
        self._print("Finished 🚀")

    def finetuner_on_exception(self, event: ExceptionRaised) -> None:
        self._stop()
        where = f" (plugin '{event.plugin}', {event.hook})" if event.plugin else ""
        self._print(f"Failed{where}: {type(event.exception).__name__}: {event.exception}")

    # --- helpers -------------------------------------------------------------------------------

    def _metrics_text(self) -> str:
        loss = f"{self._loss_sum / self._loss_count:.3f}" if self._loss_count else "-.---"
        text = f"loss: {loss}"
        if self._val_loss is not None:
            text += f" • val_loss: {self._val_loss:.3f}"
        return text

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
