"""``WandBLogger``: log a fit's losses, learning rates and metrics to Weights & Biases.

``wandb`` is imported inside the hooks, so creating the callback (or listing plugins) stays
cheap. What ends up in the W&B run, with every row carrying ``global_step`` (optimisation steps
done so far, the x-axis of every chart) and ``epoch``:

=========================== ==============================================================
key                         when
=========================== ==============================================================
``batch/train_loss``        every batch, with ``metrics_logger_step='batch'``
``lr/group_<i>``            every batch (``'batch'``) or once per epoch (``'epoch'``)
``train_loss``              once per epoch: the mean batch loss of the epoch
``val_loss``                once per epoch, when the fit has ``eval_data`` or ``val_split``
``<key>``                   every metric published after an epoch, and by a mid-epoch
                            evaluation (stage ``step``), e.g. ``mlp_precision_at_k``
``before/<key>``            the evaluation before training (``log_zero_shot=True``)
``after/<key>``             the evaluation of the final weights, after training
=========================== ==============================================================
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

from finetuner.callback import Callback
from finetuner.errors import ConfigError, PluginError, close_matches_hint

__all__ = ["WandBLogger"]
__version__ = "0.1.0"

_LOGGER_STEPS = ("epoch", "batch")
_PLAIN = (str, int, float, bool, type(None))


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError as exc:  # a broken install: wandb is a dependency of this distribution
        raise PluginError(
            f"WandBLogger needs the 'wandb' package, which failed to import ({exc}); "
            "install it with `pip install wandb`.",
            plugin="WandBLogger",
        ) from exc
    return wandb


def _json_friendly(value: Any) -> Any:
    """A copy of *value* made of JSON types, with anything else as its ``repr``."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, Mapping):
        return {str(k): _json_friendly(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_friendly(v) for v in value]
    return repr(value)


class WandBLogger(Callback):
    """Log training to a Weights & Biases run: one W&B run per fit.

    :param metrics_logger_step: ``'epoch'`` (default) logs the losses and learning rates once
        per epoch; ``'batch'`` also logs the loss and learning rates of every batch.
    :param wandb_args: keyword arguments for ``wandb.init`` (``project``, ``entity``, ``mode``,
        ``dir``, ``tags``, ...). By default the W&B project is the finetuner experiment, the W&B
        run is named after the finetuner run, and the config is the run's resolved config
        (a ``config`` given here is merged over it).
    :param log_zero_shot: log the metrics of the evaluation before training as
        ``before/<key>``.

    The W&B run starts in ``finetuner_on_fit_begin``, after every callback validated its
    options, and is finished when the fit ends; when the fit fails it is finished with
    ``exit_code=1`` (shown as failed), with the reason in the summary as ``failure_reason``.
    A resumed finetuner run continues the same W&B run (``resume='allow'``), unless
    ``wandb_args`` names an ``id``.
    """

    def __init__(
        self,
        metrics_logger_step: str = "epoch",
        wandb_args: Mapping[str, Any] | None = None,
        log_zero_shot: bool = True,
    ) -> None:
        if metrics_logger_step not in _LOGGER_STEPS:
            allowed = " or ".join(f"'{s}'" for s in _LOGGER_STEPS)
            hint = (
                close_matches_hint(metrics_logger_step, _LOGGER_STEPS)
                if isinstance(metrics_logger_step, str)
                else ""
            )
            raise ConfigError(
                f"WandBLogger: metrics_logger_step must be {allowed}, not "
                f"{metrics_logger_step!r}.{hint}"
            )
        if wandb_args is None:
            wandb_args = {}
        if not isinstance(wandb_args, Mapping):
            raise ConfigError(
                "WandBLogger: wandb_args must be a dict of wandb.init arguments, e.g. "
                f"{{'project': 'my-project'}}; got {type(wandb_args).__name__} {wandb_args!r}."
            )
        bad_keys = [k for k in wandb_args if not isinstance(k, str)]
        if bad_keys:
            raise ConfigError(
                f"WandBLogger: the keys of wandb_args name wandb.init arguments and must be "
                f"strings; got {bad_keys[0]!r}."
            )
        if "config" in wandb_args and not isinstance(wandb_args["config"], Mapping | None):
            raise ConfigError(
                "WandBLogger: wandb_args['config'] must be a dict (merged over the run's "
                f"resolved config); got {type(wandb_args['config']).__name__}."
            )
        if not isinstance(log_zero_shot, bool):
            raise ConfigError(
                f"WandBLogger: log_zero_shot must be True or False, not {log_zero_shot!r}."
            )
        self.metrics_logger_step = metrics_logger_step
        self.wandb_args = dict(wandb_args)
        self.log_zero_shot = log_zero_shot
        self._run: Any = None
        self._run_id: str | None = None  # set by load_state_dict when a run resumes
        self._learning_rates: tuple[float, ...] = ()

    def options(self) -> dict[str, Any]:
        return {
            "metrics_logger_step": self.metrics_logger_step,
            "wandb_args": _json_friendly(self.wandb_args),
            "log_zero_shot": self.log_zero_shot,
        }

    # --- set-up and tear-down ------------------------------------------------------------------

    def finetuner_configure(self) -> None:
        wandb = _import_wandb()
        accepted = [
            name
            for name, p in inspect.signature(wandb.init).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        for key in self.wandb_args:
            if key not in accepted:
                raise ConfigError(
                    f"WandBLogger: wandb_args has '{key}', which wandb.init (wandb "
                    f"{wandb.__version__}) does not accept.{close_matches_hint(key, accepted)}"
                )

    def finetuner_on_fit_begin(self, ctx: Any, event: Any) -> None:
        # in a distributed fit, rank 0 logs for all ranks
        if not getattr(ctx, "is_main_process", True):
            return
        wandb = _import_wandb()
        args = dict(self.wandb_args)
        config = _json_friendly(ctx.config)  # a fresh copy: W&B may change it
        config.update(args.pop("config", None) or {})
        args.setdefault("project", event.experiment_name)
        args.setdefault("name", event.run_name)
        # A fit owns its W&B run: leave any run the user has open in this process alone.
        args.setdefault("reinit", "create_new")
        if self._run_id is not None and "id" not in args:
            args.update(id=self._run_id, resume="allow")
        self._run = wandb.init(config=config, **args)
        self._run_id = self._run.id
        self._run.define_metric("global_step")
        self._run.define_metric("*", step_metric="global_step")
        ctx.logger.info(
            "W&B run started", wandb_run_id=self._run.id, wandb_project=self._run.project
        )

    def finetuner_on_fit_end(self) -> None:
        if self._run is not None:
            run, self._run = self._run, None
            run.finish()

    def finetuner_on_exception(self, event: Any) -> None:
        if self._run is not None:
            run, self._run = self._run, None
            reason = f"{type(event.exception).__name__}: {event.exception}"
            run.summary["failure_reason"] = reason[:1000]
            run.finish(exit_code=1)

    # --- logging -------------------------------------------------------------------------------

    def _lr_items(self) -> dict[str, float]:
        return {f"lr/group_{i}": lr for i, lr in enumerate(self._learning_rates)}

    def finetuner_on_train_batch_end(self, event: Any) -> None:
        self._learning_rates = tuple(event.learning_rates)
        if self.metrics_logger_step == "batch" and self._run is not None:
            row = {
                "batch/train_loss": event.loss,
                **self._lr_items(),
                "epoch": event.epoch + 1,
                "global_step": event.step,
            }
            norm = getattr(event, "grad_norm", None)  # measured at optimizer steps
            if norm is not None and math.isfinite(norm):
                row["batch/grad_norm"] = norm
            self._run.log(row)

    def finetuner_on_metrics(self, event: Any) -> None:
        if self._run is None:
            return
        if event.stage == "before":
            if not self.log_zero_shot:
                return
            row = {f"before/{key}": value for key, value in event.metrics.items()}
            epoch = 0
        elif event.stage == "after":
            row = {f"after/{key}": value for key, value in event.metrics.items()}
            epoch = event.epoch + 1
        else:  # "epoch" and mid-epoch "step" evaluations draw the training curves
            row = dict(event.metrics)
            epoch = event.epoch + 1
            if event.stage == "epoch" and self.metrics_logger_step == "epoch":
                row.update(self._lr_items())
        self._run.log({**row, "epoch": epoch, "global_step": event.step})

    # --- resuming ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"wandb_run_id": self._run_id}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._run_id = state.get("wandb_run_id")
