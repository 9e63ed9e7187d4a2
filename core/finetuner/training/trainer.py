"""One fit from start to end: build the set-up, open the run, register the plugins, run the
fit loop, and record a failure with the phase it happened in.

``Trainer(config, resume=..., source=...).run()`` is what :func:`finetuner.fit` and the
``finetuner fit`` and ``finetuner resume`` commands call.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ..config import FitConfig
from ..context import TrainingContext
from ..events import LogRecorded, frozen_mapping
from ..plugins import FinetunerPluginManager, Registered, build_plugin_manager
from ..runs import Run, RunStatus, create_run
from ..runs.log import RunLog
from ..runs.writer import RunWriter
from .failure import Phase, PhaseTracker, record_failure
from .fit_loop import FitLoop
from .resume import check_resumable_config, choose_seed, find_resumed_run, load_resume_state
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
        self.resumed: Run | None = find_resumed_run(resume, config) if resume is not None else None
        self.setup: FitSetup = build_setup(config, seed=choose_seed(config, self.resumed))

    def _open_run(self) -> tuple[Run, dict[str, Any]]:
        """The resumed run, or a new one; and the config record with the run's names."""
        config = self.setup.recorded_config()
        if self.resumed is not None:
            run = self.resumed
            check_resumable_config(run, run.config, config)
            config["run_name"], config["experiment_name"] = run.name, run.experiment_name
            return run, config
        cfg = self.config
        run = create_run(
            config,
            run_name=cfg.run_name,
            experiment_name=cfg.experiment_name,
            runs_dir=cfg.runs_dir,
        )
        config["run_name"] = run.name
        return run, config

    def run(self) -> Run:
        """Train, write the artifact, and return the finished run; on any error the run is
        marked ``FAILED`` (with the reason, plugin, hook and phase) and the error re-raised."""
        run, config = self._open_run()
        writer, runlog = RunWriter(run), RunLog(run.log_path)
        if self.resumed is None and self.source is not None:
            writer.write_source(self.source)  # what `finetuner resume` rebuilds the fit from
        log = runlog.logger("finetuner.trainer")
        phases = PhaseTracker(Phase.SETUP)
        pm: FinetunerPluginManager | None = None
        loop: FitLoop | None = None
        started = time.perf_counter()
        try:
            state = load_resume_state(run, self.setup.models.modules) if self.resumed else None
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
        except BaseException as exc:
            ctx = loop.ctx if loop is not None else None
            record_failure(exc, phases.current, writer=writer, log=log, plugin_manager=pm, ctx=ctx)
            raise
        finally:
            runlog.close()
        return run

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
