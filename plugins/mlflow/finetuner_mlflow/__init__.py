"""``MLflowLogger``: record a fit as an MLflow run: config, metrics per step, the artifact.

``mlflow`` is imported inside the hooks. The logger talks to the tracking store through an
``mlflow.MlflowClient`` of its own and never starts a "fluent" run, so after a fit (finished
or failed) ``mlflow.active_run()`` is what it was before, and a run the user opened with
``mlflow.start_run()`` is neither used nor changed.

What the MLflow run holds:

* parameters: the run's resolved config, flattened (``model_options.hidden_sizes``,
  ``callbacks.1.options.monitor``), values as strings, cut to MLflow's length limits;
* metrics, each with ``step`` = optimisation steps done so far:

  =================== =============================================================
  key                 when
  =================== =============================================================
  ``before/<key>``    the evaluation before training (``val_loss`` and producers' keys)
  ``<key>``           after every epoch and at mid-epoch evaluations: ``train_loss``,
                      ``val_loss`` and producers' keys such as ``mlp_precision_at_k``
  ``epoch``           after every epoch: the number of epochs done
  ``lr/group_<i>``    after every epoch: each parameter group's learning rate
  ``after/<key>``     the evaluation of the final weights
  =================== =============================================================

* tags ``finetuner.run_name``, ``finetuner.experiment_name``, ``finetuner.run_dir``, and
  ``finetuner.failure_reason`` when the fit failed;
* the finetuner artifact folder under the artifact path ``artifact`` (``log_artifact``).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

from finetuner.callback import Callback
from finetuner.errors import ConfigError, PluginError

__all__ = ["MLflowLogger"]
__version__ = "0.1.0"

ARTIFACT_PATH = "artifact"
"""Where the finetuner artifact folder goes among the MLflow run's artifacts."""

# Used when mlflow.utils.validation (not a public module) no longer has them.
_DEFAULT_LIMITS = {
    "MAX_PARAM_VAL_LENGTH": 6000,
    "MAX_TAG_VAL_LENGTH": 8000,
    "MAX_ENTITY_KEY_LENGTH": 250,
    "MAX_PARAMS_TAGS_PER_BATCH": 100,
    "MAX_METRICS_PER_BATCH": 1000,
}
_UNSAFE_NAME_CHARS = re.compile(r"[^\w./\- ]")  # what MLflow accepts in keys, on every OS


def _import_mlflow() -> Any:
    try:
        import mlflow
    except ImportError as exc:  # a broken install: mlflow-skinny is a dependency
        raise PluginError(
            f"MLflowLogger needs the 'mlflow' package, which failed to import ({exc}); "
            "install it with `pip install finetuner-mlflow`.",
            plugin="MLflowLogger",
        ) from exc
    return mlflow


def _limits() -> dict[str, int]:
    try:
        from mlflow.utils import validation
    except ImportError:  # pragma: no cover - depends on the mlflow version
        return dict(_DEFAULT_LIMITS)
    return {name: int(getattr(validation, name, value)) for name, value in _DEFAULT_LIMITS.items()}


def _key(name: str, limits: Mapping[str, int]) -> str:
    return _UNSAFE_NAME_CHARS.sub("_", name)[: limits["MAX_ENTITY_KEY_LENGTH"]]


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple | Mapping):
        return json.dumps(value, default=repr)
    return str(value)


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(key, text)`` pairs of a nested config: mappings and lists of mappings are walked
    (``a.b``, ``callbacks.0.class``), every other value becomes text (a list as JSON)."""
    for name, value in config.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping) and value:
            yield from flatten_config(value, f"{key}.")
        elif isinstance(value, list | tuple) and any(isinstance(v, Mapping) for v in value):
            yield from flatten_config({str(i): v for i, v in enumerate(value)}, f"{key}.")
        else:
            yield key, _as_text(value)


def _optional_name(owner: str, option: str, value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigError(
            f"{owner}: {option} must be a non-empty string or None (the default), not {value!r}."
        )


class MLflowLogger(Callback):
    """Record the fit as an MLflow run.

    :param tracking_uri: where the MLflow tracking store is, e.g. ``sqlite:///mlflow.db`` or
        ``http://localhost:5000``. ``None`` uses MLflow's own choice: ``MLFLOW_TRACKING_URI``,
        ``mlflow.set_tracking_uri()``, or its default (``sqlite:///mlflow.db`` in the working
        folder).
    :param experiment_name: the MLflow experiment, created if needed; defaults to the
        finetuner experiment's name.
    :param run_name: the MLflow run's name; defaults to the finetuner run's name.
    :param log_artifact: upload the finetuner artifact folder (weights, config, metrics) to the
        run's artifacts when the fit succeeds.

    The MLflow run starts in ``finetuner_on_fit_begin`` and ends as ``FINISHED`` when the fit
    succeeds, or ``FAILED`` when it fails. A resumed finetuner run continues the same MLflow
    run: its id is kept in the training checkpoint.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment_name: str | None = None,
        run_name: str | None = None,
        log_artifact: bool = True,
    ) -> None:
        _optional_name("MLflowLogger", "tracking_uri", tracking_uri)
        _optional_name("MLflowLogger", "experiment_name", experiment_name)
        _optional_name("MLflowLogger", "run_name", run_name)
        if not isinstance(log_artifact, bool):
            raise ConfigError(
                f"MLflowLogger: log_artifact must be True or False, not {log_artifact!r}."
            )
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.log_artifact = log_artifact
        self._client: Any = None
        self._limits: dict[str, int] = dict(_DEFAULT_LIMITS)
        self._run_id: str | None = None  # set by load_state_dict when a finetuner run resumes
        self._active = False
        self._learning_rates: tuple[float, ...] = ()
        self._grad_norms: list[float] = []

    # --- set-up and tear-down ------------------------------------------------------------------

    def finetuner_configure(self) -> None:
        mlflow = _import_mlflow()
        try:
            self._client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
        except Exception as exc:
            uri = self.tracking_uri or mlflow.get_tracking_uri()
            raise ConfigError(
                f"MLflowLogger: cannot open the MLflow tracking store '{uri}': {exc}"
            ) from exc
        self._limits = _limits()

    def finetuner_on_fit_begin(self, ctx: Any, event: Any) -> None:
        # in a distributed fit, rank 0 logs for all ranks
        if not getattr(ctx, "is_main_process", True):
            return
        from mlflow.exceptions import MlflowException

        client = self._client
        if self._run_id is not None:  # a resumed fit: continue its MLflow run
            try:
                client.update_run(self._run_id, status="RUNNING")
            except MlflowException as exc:
                ctx.logger.warning(
                    "the MLflow run of this finetuner run is gone; starting a new one",
                    mlflow_run_id=self._run_id,
                    error=str(exc),
                )
                self._run_id = None
            else:
                self._active = True
                return
        experiment_id = self._experiment_id(self.experiment_name or event.experiment_name)
        run = client.create_run(
            experiment_id,
            run_name=self.run_name or event.run_name,
            tags={
                "finetuner.run_name": event.run_name,
                "finetuner.experiment_name": event.experiment_name,
                "finetuner.run_dir": str(ctx.run.path),
            },
        )
        self._run_id = run.info.run_id
        self._active = True
        self._log_params(ctx.config)
        ctx.logger.info(
            "MLflow run started",
            mlflow_run_id=self._run_id,
            mlflow_experiment_id=experiment_id,
            tracking_uri=client.tracking_uri,
        )

    def _experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        client = self._client
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return client.create_experiment(name)
            except MlflowException:  # created meanwhile by another process
                experiment = client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            raise ConfigError(
                f"MLflowLogger: the MLflow experiment '{name}' is deleted; restore it "
                "(`mlflow experiments restore`) or choose another experiment_name."
            )
        return experiment.experiment_id

    def _log_params(self, config: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        limits = self._limits
        params = [
            Param(_key(key, limits), text[: limits["MAX_PARAM_VAL_LENGTH"]])
            for key, text in flatten_config(config)
        ]
        size = limits["MAX_PARAMS_TAGS_PER_BATCH"]
        for start in range(0, len(params), size):
            self._client.log_batch(self._run_id, params=params[start : start + size])

    def finetuner_on_fit_end(self, event: Any) -> None:
        if not self._active:
            return
        if self.log_artifact:
            self._client.log_artifacts(self._run_id, event.artifact_path, ARTIFACT_PATH)
        self._active = False
        self._client.set_terminated(self._run_id, "FINISHED")

    def finetuner_on_exception(self, event: Any) -> None:
        if not self._active:
            return
        self._active = False
        reason = f"{type(event.exception).__name__}: {event.exception}"
        try:
            self._client.set_tag(
                self._run_id,
                "finetuner.failure_reason",
                reason[: self._limits["MAX_TAG_VAL_LENGTH"]],
            )
        finally:
            self._client.set_terminated(self._run_id, "FAILED")

    # --- metrics -------------------------------------------------------------------------------

    def finetuner_on_train_batch_end(self, event: Any) -> None:
        self._learning_rates = tuple(event.learning_rates)
        norm = getattr(event, "grad_norm", None)  # measured at optimizer steps
        if norm is not None and math.isfinite(norm):
            self._grad_norms.append(norm)

    def finetuner_on_metrics(self, event: Any) -> None:
        if not self._active:
            return
        from mlflow.entities import Metric

        if event.stage in ("before", "after"):
            values = {f"{event.stage}/{key}": value for key, value in event.metrics.items()}
        else:
            values = dict(event.metrics)
            if event.stage == "epoch":
                values["epoch"] = event.epoch + 1
                values.update({f"lr/group_{i}": lr for i, lr in enumerate(self._learning_rates)})
                if self._grad_norms:  # the epoch's mean gradient norm before clipping
                    values["grad_norm"] = sum(self._grad_norms) / len(self._grad_norms)
                self._grad_norms = []
        timestamp = int(time.time() * 1000)
        metrics = [
            Metric(_key(key, self._limits), float(value), timestamp, event.step)
            for key, value in values.items()
        ]
        size = self._limits["MAX_METRICS_PER_BATCH"]
        for start in range(0, len(metrics), size):
            self._client.log_batch(self._run_id, metrics=metrics[start : start + size])

    # --- resuming ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"mlflow_run_id": self._run_id}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._run_id = state.get("mlflow_run_id")
