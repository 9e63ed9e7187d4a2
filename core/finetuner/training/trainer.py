"""One fit from start to end: build the set-up, open the run, register the plugins, run the
fit loop, and record a failure with the phase it happened in.

``Trainer(config, resume=..., source=...).run()`` is what :func:`finetuner.fit` and the
``finetuner fit`` and ``finetuner resume`` commands call.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from .. import distributed
from ..config import FitConfig
from ..context import TrainingContext
from ..encoding import resolve_device
from ..errors import DistributedError
from ..events import LogRecorded, frozen_mapping
from ..plugins import FinetunerPluginManager, Registered, build_plugin_manager
from ..runs import Run, RunStatus, create_run
from ..runs.lock import RunLock, lock_run
from ..runs.log import RunLog
from ..runs.writer import RunWriter, SilentRunWriter
from .failure import (
    Phase,
    PhaseTracker,
    as_terminated,
    describe_failure,
    record_failure,
    terminate_on_sigterm,
)
from .fit_loop import FitLoop
from .ranks import record_rank_failure
from .resume import (
    check_resumable_config,
    check_resumable_data,
    choose_seed,
    claim_resumed_run,
    load_resume_state,
    rank_state,
)
from .setup import FitSetup, build_setup

__all__ = ["Trainer"]


class Trainer:
    """One fit. Construct with a validated :class:`~finetuner.config.FitConfig` (everything is
    built and checked then, before any run exists), then call :meth:`run`."""

    def __init__(
        self, config: FitConfig, *, resume: Any = None, source: Mapping[str, Any] | None = None
    ) -> None:
        self.config = config
        self.source = source
        # Under torchrun: join the ranks; rank 0 finds the run and the seed, for all of them.
        self.dist = distributed.start(config.backend, resolve_device(config.device))
        self._lock: RunLock | None = None  # rank 0's hold on the run, for the whole fit
        self.resumed: Run | None = (
            distributed.run_on_main(lambda: self._claim(resume)) if resume is not None else None
        )
        try:
            seed = distributed.run_on_main(lambda: choose_seed(config, self.resumed))
            self.setup: FitSetup = build_setup(config, seed=seed, dist=self.dist)
        except BaseException:
            self._release()
            raise

    def _claim(self, resume: Any) -> Run:
        run, self._lock = claim_resumed_run(resume, self.config)
        return run

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def _open_run(self) -> tuple[Run, dict[str, Any]]:
        """The resumed run, or a new one (created by rank 0, shared with the other ranks); and
        the config record with the run's names."""
        config = self.setup.recorded_config()

        def open_on_main() -> tuple[str, str, str]:
            fingerprints = self.setup.data_fingerprint()
            if self.resumed is not None:
                run = self.resumed
                check_resumable_config(run, run.config, config)
                check_resumable_data(run, fingerprints)
            else:
                cfg = self.config
                run = create_run(
                    config,
                    run_name=cfg.run_name,
                    experiment_name=cfg.experiment_name,
                    runs_dir=cfg.runs_dir,
                )
                self._lock = lock_run(run)
                RunWriter(run).write_data_fingerprint(fingerprints)
            return str(run.path), run.name, run.experiment_name

        path, name, experiment = distributed.run_on_main(open_on_main)
        config["run_name"], config["experiment_name"] = name, experiment
        return (self.resumed if self.dist.is_main and self.resumed else Run.reference(path)), config

    def _resume_state(self, run: Run) -> dict[str, Any] | None:
        """The checkpoint to resume from, loaded by rank 0 and sent to every rank, each with
        its own random state."""
        if self.resumed is None:
            return None
        models, world = self.setup.models.modules, self.dist.world_size
        state = distributed.run_on_main(lambda: load_resume_state(run, models, world))
        return rank_state(state, self.dist.rank)

    def run(self) -> Run:
        """Train, write the artifact, and return the finished run; on any error (SIGTERM
        included) the run is marked ``FAILED`` (with the reason, plugin, hook and phase, and in
        a distributed fit the rank that failed) and the error re-raised."""
        try:
            with terminate_on_sigterm():
                return self._run()
        finally:
            self._release()

    def _run(self) -> Run:
        run, config = self._open_run()
        main = self.dist.is_main
        writer = RunWriter(run) if main else SilentRunWriter(run)
        runlog = RunLog(run.log_path if main else None)
        if self.resumed is None and self.source is not None:
            writer.write_source(self.source)  # what `finetuner resume` rebuilds the fit from
        log = runlog.logger("finetuner.trainer")
        phases = PhaseTracker(Phase.SETUP)
        pm: FinetunerPluginManager | None = None
        loop: FitLoop | None = None
        started = time.perf_counter()
        try:
            state = self._resume_state(run)
            writer.set_status(
                RunStatus.STARTED, resumed_from_epoch=state["epoch"] if state else None
            )
            with phases.enter(Phase.PLUGINS):
                skipped: list[tuple[str, str]] = []
                pm, registered = build_plugin_manager(
                    self.setup.callbacks, on_skip=lambda name, why: skipped.append((name, why))
                )
                loop = FitLoop(
                    self.setup,
                    run=run,
                    config=config,
                    plugin_manager=pm,
                    registered=registered,
                    writer=writer,
                    runlog=runlog,
                    phases=phases,
                    resume_state=state,
                )
                runlog.set_listener(_LogForwarder(pm, loop.ctx))
                self._log_start(log, run, registered, skipped, state)
            loop.run(started)
        except BaseException as raised:
            exc = self._failed(raised, run, phases.current, writer, log, pm, loop)
            if exc is raised:
                raise
            raise exc from raised
        finally:
            runlog.close()
            if loop is not None:
                loop.step.release()
        return run

    def _failed(
        self,
        raised: BaseException,
        run: Run,
        phase: Phase,
        writer: RunWriter,
        log: Any,
        pm: FinetunerPluginManager | None,
        loop: FitLoop | None,
    ) -> BaseException:
        """Record the failure of the fit; returns the exception to raise (SIGTERM's
        :class:`Terminated` where a library replaced it, or the rank that failed first)."""
        exc = as_terminated(raised)
        ctx = loop.ctx if loop is not None else None
        failure = describe_failure(exc, phase, pm)
        blame = record_rank_failure(exc, failure, self.dist, run)
        record_failure(exc, phase, writer=writer, log=log, plugin_manager=pm, ctx=ctx, blame=blame)
        if blame is not None and blame.rank != self.dist.rank:
            error = DistributedError(f"rank {blame.rank} failed: {blame.reason}", rank=blame.rank)
            error.__cause__ = exc
            return error
        return exc

    def _log_start(
        self,
        log: Any,
        run: Run,
        registered: list[Registered],
        skipped: list[tuple[str, str]],
        state: Mapping[str, Any] | None,
    ) -> None:
        log.info(
            "run resumed" if state else "run started",
            run=run.name,
            experiment=run.experiment_name,
            plugins=[r.name for r in registered],
            device=str(self.setup.device),
            seed=self.setup.seed,
            **({"from_epoch": state["epoch"], "from_step": state["step"]} if state else {}),
        )
        for name, meta in self.setup.models.metadata.items():
            adapter = meta.get("adapter")
            if adapter:
                log.info(
                    "LoRA adapters",
                    model=name,
                    trainable_parameters=adapter["trainable_parameters"],
                    total_parameters=adapter["total_parameters"],
                    base_weights=adapter["base_weights"],
                )
        for name, why in skipped:
            # Blocking is the user's choice: recorded, not shouted. Broken plugins warn.
            report = log.info if why.startswith("blocked") else log.warning
            report(f"plugin '{name}' skipped: {why}", plugin=name, reason=why)


class _LogForwarder:
    """Hands every record of the run's log to ``finetuner_on_log``."""

    def __init__(self, plugin_manager: FinetunerPluginManager, ctx: TrainingContext) -> None:
        self.hook, self.ctx = plugin_manager.hook, ctx

    def __call__(self, level: str, message: str, logger: str, fields: dict[str, Any]) -> None:
        self.hook.finetuner_on_log(
            ctx=self.ctx,
            event=LogRecorded(
                level=level, message=message, logger=logger, fields=frozen_mapping(fields)
            ),
        )
