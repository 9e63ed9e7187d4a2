"""The training context handed to every hook as ``ctx``, and its ``control`` channel."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, close_matches_hint

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .plugins import FinetunerPluginManager
    from .runs import Run

__all__ = ["Control", "TrainingContext"]


class Control:
    """Requests from plugins to the trainer. The trainer decides when to honour them.

    * :meth:`request_stop` ends training after the current epoch (the epoch's metrics are
      published and ``finetuner_on_epoch_end`` still runs, so checkpoints see the decision).
    * :meth:`request_checkpoint` asks for a training checkpoint at the end of this epoch: the
      trainer writes one after ``finetuner_on_epoch_end`` unless a plugin already saved one
      then, so the run can resume from this epoch.
    * :meth:`request_step_checkpoint` asks for a training checkpoint after the current
      optimizer step, once the step's batch hooks and any evaluation it asked for have run;
      a run resumed from it continues with the next batch of the epoch.
    * :meth:`request_evaluation` runs producers and consumers once more after the current
      optimizer step (stage ``"step"``), e.g. every N steps.
    """

    __slots__ = (
        "_checkpoint_reason",
        "_evaluation_requested",
        "_step_checkpoint_reason",
        "_stop_reason",
        "_stop_requested_by",
    )

    def __init__(self) -> None:
        self._stop_reason: str | None = None
        self._stop_requested_by: str | None = None
        self._checkpoint_reason: str | None = None
        self._evaluation_requested = False
        self._step_checkpoint_reason: str | None = None

    def request_stop(self, reason: str, *, source: str | None = None) -> None:
        """Stop training at the end of the current epoch, for *reason* (shown to the user).

        *source* names who asks, by convention the plugin's name; it is only recorded: as
        ``by`` in the log's ``training stopped`` record and as ``stopped_by`` (beside
        ``stop_reason``) in the finished run's ``status.json``. The first request wins."""
        if not reason or not isinstance(reason, str):
            raise ConfigError("request_stop needs a reason: a short sentence saying why.")
        if self._stop_reason is None:  # the first request wins; later ones add nothing
            self._stop_reason = reason
            self._stop_requested_by = source

    @property
    def stop_requested(self) -> bool:
        """Whether some plugin asked to stop."""
        return self._stop_reason is not None

    @property
    def stop_reason(self) -> str | None:
        """The reason given by the first plugin that asked to stop."""
        return self._stop_reason

    @property
    def stop_requested_by(self) -> str | None:
        return self._stop_requested_by

    def request_checkpoint(self, reason: str = "requested") -> None:
        """Ask for a training checkpoint at the end of this epoch (*reason* goes to the run's
        log). The trainer writes it after ``finetuner_on_epoch_end``, unless a plugin (such as
        ``TrainingCheckpoint``) saved one at this epoch's end already; the run can then resume
        from it (``fit(..., resume=...)``). Requests are cleared at every epoch end."""
        self._checkpoint_reason = reason

    @property
    def checkpoint_requested(self) -> bool:
        return self._checkpoint_reason is not None

    @property
    def checkpoint_reason(self) -> str | None:
        return self._checkpoint_reason

    def request_evaluation(self) -> None:
        """Evaluate (stage ``"step"``) after the current optimizer step."""
        self._evaluation_requested = True

    def request_step_checkpoint(self, reason: str = "requested") -> None:
        """Ask for a training checkpoint after the current optimizer step (see the class)."""
        self._step_checkpoint_reason = reason

    # The trainer's side of the channel.
    def _take_step_checkpoint_request(self) -> str | None:
        reason, self._step_checkpoint_reason = self._step_checkpoint_reason, None
        return reason

    def _take_evaluation_request(self) -> bool:
        requested, self._evaluation_requested = self._evaluation_requested, False
        return requested

    def _clear_checkpoint_request(self) -> None:
        self._checkpoint_reason = None

    def state_dict(self) -> dict[str, Any]:
        return {"stop_reason": self._stop_reason, "stop_requested_by": self._stop_requested_by}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._stop_reason = state.get("stop_reason")
        self._stop_requested_by = state.get("stop_requested_by")


@dataclass(eq=False)
class TrainingContext:
    """What a hook can reach during a fit.

    Attributes are read freely; plugins change training only through :attr:`control`, and
    weight-changing plugins change :attr:`model` only in ``finetuner_on_train_end``.
    """

    run: Run
    """The run being trained (its folder, status, metrics records)."""
    config: Mapping[str, Any]
    """The resolved, validated fit configuration (JSON-friendly values)."""
    models: dict[str, torch.nn.Module]
    """Every model being trained by name; a single-tower fit has one, named ``"model"``."""
    device: torch.device
    plugin_manager: FinetunerPluginManager
    logger: Any
    """A structlog bound logger writing JSON lines to the run's log (and to the console)."""
    control: Control = field(default_factory=Control)
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    loss: torch.nn.Module | None = None
    train_data: Any = None
    """The training :class:`~finetuner.data.Dataset`."""
    eval_data: Any = None
    """The validation :class:`~finetuner.data.Dataset`, or ``None``."""
    epoch: int = 0
    """The current 0-based epoch (``-1`` before training starts)."""
    epochs: int = 0
    step: int = 0
    """Optimisation steps done so far over the whole fit."""
    steps_per_epoch: int = 0
    metric_keys: tuple[str, ...] = ()
    model_names: dict[str, str] = field(default_factory=dict)
    """Display name of each model: the registry name (``"mlp"``) or the module's class name."""
    model_modalities: dict[str, str] = field(default_factory=dict)
    """What each model embeds: ``"tensor"``, ``"text"`` or ``"image"``."""
    rank: int = 0
    """This process's rank in a distributed fit (0 with one process)."""
    world_size: int = 1
    """The number of processes training together (1 with one process)."""
    _encode: Callable[..., np.ndarray] | None = None
    _load_data: Callable[..., Any] | None = None
    _record_examples: Callable[[str, Mapping[str, Any]], None] | None = None
    _record_query_results: Callable[..., None] | None = None
    _save_checkpoint: Callable[[], Any] | None = None
    _skipped: dict[str, int] = field(default_factory=dict)
    _metric_aliases: dict[str, str] = field(default_factory=dict)

    @property
    def is_main_process(self) -> bool:
        """Rank 0: the process that writes the run's records, checkpoints and artifact."""
        return self.rank == 0

    @property
    def model(self) -> torch.nn.Module:
        """The model being trained (the first one, for multi-tower fits)."""
        return next(iter(self.models.values()))

    def encode(
        self,
        data: Any,
        *,
        model: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        prompt: str | None = None,
    ) -> np.ndarray:
        """Encode *data* (any form ``fit`` accepts, or a :class:`~finetuner.data.Dataset`)
        with the current weights, in eval mode and without gradients, and return a
        ``(n, dim)`` float32 numpy array. *model* picks a tower by name; *prompt*
        (``'query'`` or ``'document'``) puts the model's ``query_prompt`` or
        ``document_prompt`` before each text, if it has one (``None``: no prompt)."""
        if self._encode is None:  # pragma: no cover - set by the trainer
            raise RuntimeError("encode is not available outside a fit")
        options: dict[str, Any] = {"model": model, "batch_size": batch_size}
        if prompt is not None:  # a trainer's _encode without prompts still takes the call
            options["prompt"] = prompt
        return self._encode(data, num_workers=num_workers, **options)

    def load_data(self, data: Any, *, name: str = "data") -> Any:
        """Convert *data* (any form ``fit`` accepts) into a :class:`~finetuner.data.Dataset`,
        reading CSV files with the fit's ``csv_options``."""
        if self._load_data is None:  # pragma: no cover - set by the trainer
            raise RuntimeError("load_data is not available outside a fit")
        return self._load_data(data, name=name)

    def record_examples(self, stage: str, examples: Mapping[str, Sequence[str]]) -> None:
        """Store example results for *stage* (``"before"`` or ``"after"``) in the run:
        a mapping from a query's display string to its matches' display strings."""
        if self._record_examples is None:  # pragma: no cover - set by the trainer
            raise RuntimeError("record_examples is not available outside a fit")
        self._record_examples(stage, examples)

    def record_query_results(
        self, stage: str, key: str, metric: str, queries: Sequence[Mapping[str, Any]]
    ) -> None:
        """Store per-query results of the evaluation *key* (its caption) for *stage*
        (``"before"`` or ``"after"``), for the run report: each query a mapping with ``id``,
        ``query`` (display string), ``score`` (the query's *metric*, ``None`` if it cannot be
        scored), ``results`` (display strings, best first) and ``relevant`` (a flag per
        result). The run keeps at most a few thousand queries and a few results each."""
        if self._record_query_results is None:  # pragma: no cover - set by the trainer
            raise RuntimeError("record_query_results is not available outside a fit")
        self._record_query_results(stage, key, metric, queries)

    def record_skipped(self, key: str, count: int) -> None:
        """Note that *count* queries could not be scored for the metrics of *key* (a caption or
        metric key) in the evaluation under way; stored with that evaluation's metrics record."""
        self._skipped[key] = int(count)

    def save_checkpoint(self) -> Any:
        """Write a training checkpoint of the current state (model, optimizer, scheduler,
        random-number generators, control, and every callback's ``state_dict``) into the run's
        ``checkpoints/`` folder, atomically, and return its path. Call it from
        ``finetuner_on_epoch_end``: a run resumes from the epoch after the latest checkpoint."""
        if self._save_checkpoint is None:  # pragma: no cover - set by the trainer
            raise RuntimeError("save_checkpoint is not available outside a fit")
        return self._save_checkpoint()

    def resolve_metric(self, name: str) -> str:
        """Return the full metric key for *name*: a full key, or a bare metric name that
        exactly one producer provides (``"precision_at_k"`` -> ``"mlp_precision_at_k"``)."""
        if name in self.metric_keys:
            return name
        if name in self._metric_aliases:
            return self._metric_aliases[name]
        raise ConfigError(
            f"no metric '{name}' is published in this run; available keys: "
            f"{', '.join(self.metric_keys) or '(none)'}.{close_matches_hint(name, self.metric_keys)}"
        )
