"""The fit loop: the documented hook sequence, from ``finetuner_configure`` to
``finetuner_on_fit_end`` (the order is in :mod:`finetuner.hookspecs`).

It drives the pieces and owns no mechanics of its own: the epoch loop runs batches, the
training step updates weights, the publisher evaluates then publishes, the resume module
captures and restores state, the artifact module writes the artifact, and every stretch of
work runs inside its :class:`~.failure.Phase`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import distributed
from ..context import TrainingContext
from ..errors import PluginError
from ..events import (
    EpochEnded,
    FitConfigured,
    FitEnded,
    FitStarted,
    TrainEnded,
    TrainEpochEnded,
    ValidationEnded,
    frozen_mapping,
)
from ..models.artifact import artifact_size
from ..plugins import FinetunerPluginManager, Registered
from ..runs import Run, RunStatus
from ..runs.checkpoints import write_checkpoint
from ..runs.log import RunLog
from ..runs.writer import RunWriter
from .artifact import write_fit_artifact
from .divergence import check_finite_weights
from .epoch_loop import EpochLoop, EpochProgress
from .failure import Phase, PhaseTracker
from .metrics import MetricsPublisher, collect_declarations, resolve_declarations
from .randomness import capture_rng, restore_rng, seed_everything
from .resume import capture_state, restore_state, resumed_progress
from .services import FitServices
from .setup import FitSetup
from .step import TrainingStep
from .validation import validation_loss

__all__ = ["FitLoop"]


class FitLoop:
    """One fit's hook sequence over a :class:`FitSetup`, for a run that has started."""

    def __init__(
        self,
        setup: FitSetup,
        *,
        run: Run,
        config: Mapping[str, Any],
        plugin_manager: FinetunerPluginManager,
        registered: Sequence[Registered],
        writer: RunWriter,
        runlog: RunLog,
        phases: PhaseTracker,
        resume_state: Mapping[str, Any] | None = None,
    ) -> None:
        self.setup, self.registered = setup, registered
        self.hook = plugin_manager.hook
        self.writer, self.phases = writer, phases
        self.log = runlog.logger("finetuner.trainer")
        self.resume_state = resume_state
        self.ctx = self._context(run, config, plugin_manager, runlog.logger("finetuner.run"))
        self.step = TrainingStep(setup)
        self.publisher = MetricsPublisher(self.hook, self.ctx, writer, phases)
        self.epoch_loop = EpochLoop(
            setup,
            self.step,
            self.hook,
            self.ctx,
            self.publisher,
            writer=writer,
            log=self.log,
            save_checkpoint=self.save_checkpoint,
        )
        self.resumed_progress: EpochProgress | None = None
        """The epoch a checkpoint written within it left unfinished, on resume."""
        self.metrics_before: dict[str, float] = {}
        self.metrics_after: dict[str, float] = {}
        self._saved_epoch: int | None = None

    def _context(
        self,
        run: Run,
        config: Mapping[str, Any],
        plugin_manager: FinetunerPluginManager,
        logger: Any,
    ) -> TrainingContext:
        setup = self.setup
        services = FitServices(setup, self.writer)
        return TrainingContext(
            run=run,
            config=frozen_mapping(config),
            models=setup.models.modules,
            device=setup.device,
            plugin_manager=plugin_manager,
            logger=logger,
            optimizer=setup.optimizer,
            scheduler=setup.scheduler,
            loss=setup.loss,
            train_data=setup.train_data,
            eval_data=setup.eval_data,
            epoch=-1,
            epochs=setup.config.epochs,
            steps_per_epoch=setup.steps_per_epoch,
            model_names=dict(setup.models.plan.display_names),
            model_modalities=dict(setup.models.plan.modalities),
            rank=setup.dist.rank,
            world_size=setup.dist.world_size,
            _encode=services.encode,
            _load_data=services.load_data,
            _record_examples=services.record_examples,
            _record_query_results=services.record_query_results,
            _save_checkpoint=self.save_checkpoint,
        )

    # --- the sequence -------------------------------------------------------------------------

    def run(self, started: float) -> None:
        """Run the whole sequence; *started* is when the fit began (``time.perf_counter``)."""
        seed_everything(self.setup.seed)
        start_epoch = self._configure()
        self._fit_begin(start_epoch)
        self._before()
        if self.resume_state is not None and self.resumed_progress is None:
            # Last, so nothing a plugin drew since the checkpoint shifts the random streams
            # (within an epoch, the epoch loop restores them after the epoch's first hook).
            restore_rng(self.resume_state["rng"])
        epochs_done = self._train(start_epoch)
        self._train_end(epochs_done)
        val_after = self._validate()
        self.metrics_after = self.publisher.evaluate_and_publish(
            "after", epoch=max(epochs_done - 1, 0), val_loss=val_after
        )
        duration = time.perf_counter() - started
        artifact, size = self._artifact(duration, epochs_done)
        self._fit_end(artifact, size, duration)
        control = self.ctx.control
        self.writer.set_status(
            RunStatus.FINISHED,
            duration_s=round(duration, 3),
            epochs_completed=epochs_done,
            stop_reason=control.stop_reason,
            stopped_by=control.stop_requested_by,
        )
        self.log.info("run finished", duration_s=round(duration, 3))
        distributed.barrier()  # no rank returns before rank 0 has recorded the end

    def _configure(self) -> int:
        """``finetuner_configure``, the declarations, and a checkpoint's state on resume;
        returns the first epoch to run."""
        ctx, run = self.ctx, self.ctx.run
        with self.phases.enter(Phase.CONFIGURE):
            returned = self.hook.finetuner_configure(
                ctx=ctx,
                event=FitConfigured(
                    run_name=run.name,
                    experiment_name=run.experiment_name,
                    config=ctx.config,
                    model_names=tuple(ctx.models),
                ),
            )
            declarations = collect_declarations(returned, self.registered, ctx)
            has_validation = self.setup.eval_data is not None
            self.publisher.declare(
                resolve_declarations(declarations, has_validation=has_validation)
            )
            if self.resume_state is None:
                return 0
            state = self.resume_state
            start_epoch = restore_state(state, self.setup, ctx, self.registered, self.step)
            self.resumed_progress = resumed_progress(state)
            within = self.resumed_progress is not None
            self.writer.keep_metrics_through(start_epoch - 1, ctx.step if within else None)
            self.writer.keep_steps_through(ctx.step)
            return start_epoch

    def _fit_begin(self, start_epoch: int) -> None:
        ctx, run = self.ctx, self.ctx.run
        with self.phases.enter(Phase.FIT_BEGIN):
            self.hook.finetuner_on_fit_begin(
                ctx=ctx,
                event=FitStarted(
                    run_name=run.name,
                    experiment_name=run.experiment_name,
                    epochs=self.setup.config.epochs,
                    steps_per_epoch=self.setup.steps_per_epoch,
                    start_epoch=start_epoch,
                    metric_keys=ctx.metric_keys,
                ),
            )

    def _before(self) -> None:
        if self.resume_state is not None:
            self.metrics_before = dict(self.resume_state.get("metrics_before") or {})
            return
        val_before = self._validate()
        self.metrics_before = self.publisher.evaluate_and_publish(
            "before", epoch=-1, val_loss=val_before
        )

    def _validate(self) -> float | None:
        if self.setup.eval_data is None:
            return None
        with self.phases.enter(Phase.VALIDATE):
            return validation_loss(self.setup, self.step)

    def _train(self, start_epoch: int) -> int:
        """The epochs, until the last or a requested stop; returns how many are done."""
        ctx, epochs_done = self.ctx, start_epoch
        stop = ctx.control.stop_requested
        for epoch in range(start_epoch, self.setup.config.epochs):
            if stop:
                break
            ctx.epoch = epoch
            last_metrics = self._epoch(epoch)
            epochs_done = epoch + 1
            self._adopt_main_stop()
            stop = ctx.control.stop_requested
            self._epoch_end(epoch, last_metrics, stop)
            if stop:
                self.log.info(
                    "training stopped",
                    reason=ctx.control.stop_reason,
                    epoch=epoch,
                    by=ctx.control.stop_requested_by,
                )
        return epochs_done

    def _epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch, validate, then evaluate and publish its metrics."""
        setup, ctx = self.setup, self.ctx
        with self.phases.enter(Phase.TRAIN):
            progress, self.resumed_progress = self.resumed_progress, None
            rng = self.resume_state["rng"] if progress is not None and self.resume_state else None
            train_loss = self.epoch_loop.run(epoch, resume=progress, rng=rng)
            self.writer.flush_steps()
            if setup.scheduler is not None and setup.scheduler_step == "epoch":
                setup.scheduler.step()
            self.hook.finetuner_on_train_epoch_end(
                ctx=ctx,
                event=TrainEpochEnded(
                    epoch=epoch, train_loss=train_loss, steps=setup.steps_per_epoch
                ),
            )
        val_loss = self._validate()
        if val_loss is not None:
            with self.phases.enter(Phase.VALIDATE):
                self.hook.finetuner_on_validation_end(
                    ctx=ctx, event=ValidationEnded(epoch=epoch, val_loss=val_loss)
                )
        return self.publisher.evaluate_and_publish(
            "epoch", epoch, train_loss=train_loss, val_loss=val_loss
        )

    def _adopt_main_stop(self) -> None:
        """In a distributed fit, every rank takes rank 0's decision to stop (or go on), so all
        of them end at the same epoch."""
        if self.setup.dist.enabled:
            control = self.ctx.control
            reason, by = distributed.broadcast_object(
                (control.stop_reason, control.stop_requested_by)
            )
            control.load_state_dict({"stop_reason": reason, "stop_requested_by": by})

    def _epoch_end(self, epoch: int, metrics: Mapping[str, float], stop: bool) -> None:
        """``finetuner_on_epoch_end``, then the checkpoint a plugin requested, if none was
        written at this epoch's end."""
        ctx, control = self.ctx, self.ctx.control
        with self.phases.enter(Phase.EPOCH_END):
            self.hook.finetuner_on_epoch_end(
                ctx=ctx,
                event=EpochEnded(
                    epoch=epoch,
                    epochs=self.setup.config.epochs,
                    step=ctx.step,
                    metrics=metrics,
                    stop_requested=stop,
                    stop_reason=control.stop_reason,
                    is_last=stop or epoch == self.setup.config.epochs - 1,
                ),
            )
            wanted = control.checkpoint_requested and self._saved_epoch != epoch
            reason = control.checkpoint_reason if wanted else None
            if self.setup.dist.enabled:  # rank 0 decides; writing one is a collective
                wanted, reason = distributed.broadcast_object((wanted, reason))
            if wanted:
                self.save_checkpoint(reason=reason)
            control._clear_checkpoint_request()

    def _train_end(self, epochs_done: int) -> None:
        control = self.ctx.control
        with self.phases.enter(Phase.TRAIN_END):
            self.hook.finetuner_on_train_end(
                ctx=self.ctx,
                event=TrainEnded(
                    epochs_completed=epochs_done,
                    step=self.ctx.step,
                    stopped_early=control.stop_requested,
                    stop_reason=control.stop_reason,
                ),
            )

    def _artifact(self, duration: float, epochs_done: int) -> tuple[Path, int]:
        """Write the artifact (rank 0 only); its path and size, on every rank."""

        def write() -> tuple[str, int]:
            path = write_fit_artifact(
                self.setup,
                self.ctx.run,
                config=self.ctx.config,
                registered=self.registered,
                metrics={"before": self.metrics_before, "after": self.metrics_after},
                duration=duration,
                log=self.log,
                epochs_completed=epochs_done,
            )
            return str(path), artifact_size(path)

        with self.phases.enter(Phase.ARTIFACT):
            check_finite_weights(self.setup.models.modules)
            path, size = distributed.run_on_main(write)
            return Path(path), size

    def _fit_end(self, artifact: Path, size: int, duration: float) -> None:
        run = self.ctx.run
        with self.phases.enter(Phase.FIT_END):
            self.hook.finetuner_on_fit_end(
                ctx=self.ctx,
                event=FitEnded(
                    run_name=run.name,
                    experiment_name=run.experiment_name,
                    duration_s=duration,
                    artifact_path=str(artifact),
                    artifact_size_bytes=size,
                    metrics_before=frozen_mapping(self.metrics_before),
                    metrics_after=frozen_mapping(self.metrics_after),
                ),
            )

    # --- for ctx ------------------------------------------------------------------------------

    def save_checkpoint(self, reason: str | None = None) -> Path:
        """Write a training checkpoint: of the state at the end of ``ctx.epoch``, or, while
        an epoch runs, after its latest optimizer step."""
        ctx, progress = self.ctx, self.epoch_loop.progress
        if progress is not None and not self.epoch_loop.ends_step(progress.batches):
            raise PluginError(
                f"ctx.save_checkpoint() was called in the middle of an accumulation group "
                f"(epoch {ctx.epoch + 1}, batch {progress.batches}), where the gradients of "
                "the group's batches would be lost; call ctx.control.request_step_checkpoint() "
                "instead, which writes it after the optimizer step."
            )
        # every rank's random state goes in; rank 0 writes the checkpoint for all
        rngs = distributed.all_gather_object(capture_rng())

        def write() -> str:
            state = capture_state(
                self.setup,
                ctx,
                self.registered,
                self.metrics_before,
                progress=progress,
                precision=self.step.precision,
                rng_ranks=rngs,
            )
            step = ctx.step if progress is not None else None
            checkpoint = write_checkpoint(ctx.run.checkpoint_dir, ctx.epoch, state, step=step)
            self.writer.flush_steps()
            return str(checkpoint.path)

        path = Path(distributed.run_on_main(write))
        step = ctx.step if progress is not None else None
        if progress is None:
            self._saved_epoch = ctx.epoch
        fields: dict[str, Any] = {"reason": reason} if reason else {}
        if step is not None:
            fields["step"] = step
        self.log.info("checkpoint saved", epoch=ctx.epoch, path=str(path), **fields)
        return path
