"""The hook specifications: the plugin author's reference.

Every training hook receives two arguments, both optional to accept:

``ctx``
    The :class:`~finetuner.context.TrainingContext` of the run: the run, the model(s), the
    optimizer, the scheduler, the device, the resolved config, the epoch and step counters, a
    bound logger (``ctx.logger``), an ``encode()`` helper and ``ctx.control``, through which a
    plugin asks the trainer to stop or to checkpoint.
``event``
    A frozen dataclass from :mod:`finetuner.events` describing what just happened.

An implementation may declare any subset of a hook's arguments, in any order, and must not give
them default values (depending on the pluggy version, an argument with a default is not
passed). Implementations are
plain methods named after the hook on a :class:`~finetuner.callback.Callback` subclass, or
functions in a module registered through the ``finetuner.plugins`` entry-point group.

Order. The trainer calls the hooks in this sequence::

    finetuner_configure                 -> validate monitors
    finetuner_on_fit_begin
    finetuner_evaluate(stage="before")  -> finetuner_on_metrics
    for each epoch:
        finetuner_on_epoch_begin
        for each batch:
            finetuner_on_train_batch_begin / finetuner_on_train_batch_end
            (when a plugin called ctx.control.request_evaluation():
             finetuner_evaluate(stage="step") -> finetuner_on_metrics)
        finetuner_on_train_epoch_end
        finetuner_on_validation_end     (only with eval_data or val_split)
        finetuner_evaluate(stage="epoch") -> finetuner_on_metrics
        finetuner_on_epoch_end
    finetuner_on_train_end
    finetuner_evaluate(stage="after")   -> finetuner_on_metrics
    finetuner_on_fit_end
    finetuner_on_exception              (instead of the rest, when anything raises)

Within one hook, the order in which plugins run carries no meaning, with one exception: the
tiers ``tryfirst`` and ``trylast`` (``@finetuner.hookimpl(tryfirst=True)``), which the
documentation of a hook names where side effects must be ordered. Never rely on the order of
the ``callbacks`` list or on installation order.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .context import TrainingContext
    from .events import (
        BatchEnded,
        BatchStarted,
        EpochEnded,
        EpochStarted,
        EvaluationRequested,
        ExceptionRaised,
        FitConfigured,
        FitEnded,
        FitStarted,
        LogRecorded,
        MetricDeclaration,
        MetricsPublished,
        TrainEnded,
        TrainEpochEnded,
        ValidationEnded,
    )

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec"]

PROJECT_NAME = "finetuner"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --- set-up ---------------------------------------------------------------------------------


@hookspec
def finetuner_configure(ctx: TrainingContext, event: FitConfigured) -> MetricDeclaration | None:
    """Validate options against the resolved run, and declare metric keys.

    Fires once per fit, after the model, data, loss and optimizer are built and the run folder
    exists, before any training step and before ``finetuner_on_fit_begin``.

    Return a :class:`~finetuner.events.MetricDeclaration` naming the metric keys this plugin
    will *provide* from ``finetuner_evaluate`` and the keys it will *monitor* in
    ``finetuner_on_metrics``, or ``None``. :class:`~finetuner.callback.Callback` subclasses
    declare through their ``provided_metrics`` and ``monitored_metrics`` methods instead, which
    the trainer reads right after this hook.

    Once every plugin has answered, a monitored key that nothing provides stops the fit with a
    :class:`~finetuner.errors.ConfigError` naming the plugin, the key and the available keys.

    Raise :class:`~finetuner.errors.ConfigError` for options that do not fit this run. Must not
    train, change weights, or start threads that outlive the fit.
    """


@hookspec
def finetuner_on_fit_begin(ctx: TrainingContext, event: FitStarted) -> None:
    """The fit is about to start: monitors are resolved, nothing is evaluated yet.

    ``event.metric_keys`` lists every key that will be published. Use
    ``ctx.resolve_metric(name)`` to turn a monitored name into its full key. A resumed run
    fires this hook too, with ``event.start_epoch`` above 0, after callback state was restored.
    """


# --- the epoch loop --------------------------------------------------------------------------


@hookspec
def finetuner_on_epoch_begin(ctx: TrainingContext, event: EpochStarted) -> None:
    """An epoch starts; ``event.batches`` training batches in ``event.steps`` optimizer steps
    will follow. A run resumed from a checkpoint written within this epoch gets this hook
    again, with ``event.first_batch`` above 0: the batches before it are not run again."""


@hookspec
def finetuner_on_train_batch_begin(ctx: TrainingContext, event: BatchStarted) -> None:
    """A training batch is about to go through the forward pass.

    Runs once per step: keep it cheap. Must not change the batch or the model.
    """


@hookspec
def finetuner_on_train_batch_end(ctx: TrainingContext, event: BatchEnded) -> None:
    """A training batch finished: its backward pass is done and, when
    ``event.optimizer_step`` is true, so are clipping, the optimizer step and the scheduler
    step (with ``accumulate_grad_batches=N`` that is every N-th batch and the epoch's last).

    ``event.loss`` is the batch loss, ``event.learning_rates`` the learning rate of each
    parameter group, ``event.grad_norm`` the gradients' norm before clipping at an optimizer
    step. The core fails the run on a non-finite loss before this hook (except under
    ``precision='16-mixed'``, where the step is skipped instead). Evaluations and step
    checkpoints asked for here (``ctx.control.request_evaluation()``,
    ``ctx.control.request_step_checkpoint()``) run after the hook, at the end of the optimizer
    step. Runs once per batch: keep it cheap (no synchronous I/O per call).
    """


@hookspec
def finetuner_on_train_epoch_end(ctx: TrainingContext, event: TrainEpochEnded) -> None:
    """The last training batch of the epoch finished; ``event.train_loss`` is the epoch mean."""


@hookspec
def finetuner_on_validation_end(ctx: TrainingContext, event: ValidationEnded) -> None:
    """The loss on ``eval_data`` (or the ``val_split`` hold-out) was computed for this epoch.

    Fires only when the fit has validation data.
    """


# --- metrics: produce, then publish ------------------------------------------------------------


@hookspec
def finetuner_evaluate(
    ctx: TrainingContext, event: EvaluationRequested
) -> Mapping[str, float] | None:
    """Producers compute metrics and *return* them; consumers do nothing here.

    Fires before training (``event.stage == "before"``), after every epoch (``"epoch"``), after a
    batch when a plugin called ``ctx.control.request_evaluation()`` (``"step"``, e.g. every N
    steps), and after training on the final
    weights (``"after"``). Return a mapping of the keys declared in ``finetuner_configure`` to
    floats, or ``None``. Returning an undeclared key is an error.

    The trainer merges every producer's result with ``train_loss`` and ``val_loss`` and only then
    publishes them through ``finetuner_on_metrics``: a producer never needs to run first, and
    the order of plugins in this hook has no meaning. Must not read other plugins' metrics and
    must leave the model in the mode it found it (the trainer calls it under ``torch.no_grad``
    with the model in eval mode).
    """


@hookspec
def finetuner_on_metrics(ctx: TrainingContext, event: MetricsPublished) -> None:
    """Consumers read the metrics of one evaluation: early stopping, checkpoints, loggers.

    ``event.metrics`` always holds every producer's results for the same ``stage`` and
    ``epoch`` (the ordering guarantee). To stop training, call
    ``ctx.control.request_stop(reason, source=plugin_name)``; the trainer honours it at the
    end of the epoch, and the finished run's ``status.json`` records ``stop_reason`` and
    ``stopped_by``.
    Must not change the model's weights: do that in ``finetuner_on_train_end``.
    """


@hookspec
def finetuner_on_epoch_end(ctx: TrainingContext, event: EpochEnded) -> None:
    """The epoch is over and its metrics were published to every consumer.

    ``event.stop_requested`` tells whether the fit will stop after this epoch, so a checkpoint
    written here captures every consumer's up-to-date state (including the stop decision).
    Checkpointing plugins persist state here, with ``trylast`` so other plugins finish first.
    """


@hookspec
def finetuner_on_train_end(ctx: TrainingContext, event: TrainEnded) -> None:
    """The epoch loop is over; weight-changing plugins act here, in tiers.

    Restoring the best weights runs with ``tryfirst=True``; merging weights (WiSE-FT) runs with
    ``trylast=True``, so a merge always starts from the restored best weights. The "after"
    evaluation and the artifact use the weights as this hook leaves them.
    """


@hookspec
def finetuner_on_fit_end(ctx: TrainingContext, event: FitEnded) -> None:
    """The fit succeeded: the "after" metrics are published and the artifact is written.

    The run's status becomes ``FINISHED`` once every implementation returned.
    """


@hookspec
def finetuner_on_exception(ctx: TrainingContext, event: ExceptionRaised) -> None:
    """The fit failed; ``event.exception`` is about to be re-raised to the caller.

    The run is marked ``FAILED`` with the reason and, when a hook raised, the plugin's name.
    Use this to close files and connections. An exception raised here is logged and ignored.
    """


@hookspec
def finetuner_on_log(ctx: TrainingContext, event: LogRecorded) -> None:
    """A record was written to the run's JSON log (``ctx.logger``).

    The console reporter shows records here. Logging from inside this hook is ignored rather
    than re-entered.
    """


# --- command line ------------------------------------------------------------------------------


@hookspec
def finetuner_add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add sub-commands to the ``finetuner`` command line.

    Implement it as a module-level function, and declare each command it adds in the
    entry-point group ``finetuner.commands`` (the command's name -> that module)::

        [project.entry-points."finetuner.commands"]
        count-runs = "my_plugin.commands"

    ``finetuner --help`` then lists the command without importing anything (its one-line help
    is the distribution's summary), and the module is imported, and this function called, only
    when the command runs. Undeclared, it still works, but slowly: a command nobody declared
    makes the command line load every plugin and call this hook on the module an entry point of
    ``finetuner.plugins`` names or, for a callback class of ``finetuner.callbacks``, on the
    class's module or its top-level package; ``--help`` does not list such commands.

    It receives the ``argparse`` sub-parsers object of the ``finetuner`` command. No run
    exists; ``ctx`` is not passed. Add a parser with ``subparsers.add_parser(name, help=...)``
    and set a handler with ``parser.set_defaults(handler=func)``; ``func(args)`` returns the
    exit code. Raise :class:`~finetuner.errors.FinetunerError` for errors the user should read.
    Import heavy libraries inside the handler, so that ``finetuner COMMAND --help`` stays fast.
    """
