"""Metrics: what plugins declare, and evaluate-then-publish (the ordering guarantee).

Producers *return* metrics from ``finetuner_evaluate``; :class:`MetricsPublisher` merges them
with ``train_loss`` and ``val_loss``, records them in the run, and only then calls
``finetuner_on_metrics`` for the consumers. So a consumer never sees a publish that lacks a
producer's result of the same stage and epoch, whatever the order of plugins.

Before the first step, :func:`resolve_declarations` checks what plugins declared: every
monitored key must have a producer (a bare metric name may stand for the one full key that
ends with it), and no two producers may provide one key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..callback import Callback
from ..context import TrainingContext
from ..encoding import evaluating
from ..errors import ConfigError, PluginError, close_matches_hint
from ..events import EvaluationRequested, MetricDeclaration, MetricsPublished, Stage, frozen_mapping
from ..plugins import Registered
from ..runs.writer import RunWriter
from .divergence import check_finite_metrics
from .failure import Phase, PhaseTracker

__all__ = ["MetricKeys", "MetricsPublisher", "collect_declarations", "resolve_declarations"]

TRAINER_KEYS = ("train_loss", "val_loss")


@dataclass(frozen=True)
class MetricKeys:
    """The outcome of the declarations: every key that will be published, the aliases of
    bare metric names, which keys producers provide and the producers' names."""

    keys: tuple[str, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)
    provided: frozenset[str] = frozenset()
    producers: tuple[str, ...] = ()


def collect_declarations(
    returned: Iterable[Any], registered: Sequence[Registered], ctx: TrainingContext
) -> list[MetricDeclaration]:
    """What ``finetuner_configure`` returned, plus each Callback's ``provided_metrics`` and
    ``monitored_metrics`` (*registered* are the run's plugins)."""
    declarations: list[MetricDeclaration] = []
    for item in returned:
        if not isinstance(item, MetricDeclaration):
            raise PluginError(
                f"finetuner_configure returned {item!r}; return a MetricDeclaration or None."
            )
        declarations.append(item)
    for reg in registered:
        if isinstance(reg.plugin, Callback):
            provides = tuple(reg.plugin.provided_metrics(ctx))
            monitors = tuple(reg.plugin.monitored_metrics(ctx))
            if provides or monitors:
                declarations.append(
                    MetricDeclaration(source=reg.name, provides=provides, monitors=monitors)
                )
    return declarations


def _providers(declarations: Sequence[MetricDeclaration]) -> dict[str, str]:
    provided: dict[str, str] = {}
    for decl in declarations:
        for key in decl.provides:
            if key in TRAINER_KEYS:
                raise PluginError(
                    f"plugin '{decl.source}' declares '{key}', which the trainer provides.",
                    plugin=decl.source,
                )
            if key in provided:
                raise PluginError(
                    f"plugins '{provided[key]}' and '{decl.source}' both provide the metric "
                    f"'{key}'; give one of them another caption or key prefix.",
                    plugin=decl.source,
                )
            provided[key] = decl.source
    return provided


def _alias(name: str, source: str, keys: list[str], provided: Iterable[str]) -> str:
    if name == "val_loss":
        raise ConfigError(
            f"{source} monitors 'val_loss', which nothing provides: val_loss needs "
            f"eval_data or val_split. Available keys: {', '.join(keys)}."
        )
    matches = [k for k in provided if k.endswith("_" + name)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ConfigError(
            f"{source} monitors '{name}', which several producers provide "
            f"({', '.join(matches)}); monitor one full key."
        )
    raise ConfigError(
        f"{source} monitors '{name}', which nothing provides. Available keys: "
        f"{', '.join(keys)}.{close_matches_hint(name, keys)} Install or add the "
        "callback that produces it (e.g. EvaluationCallback), or monitor another key."
    )


def resolve_declarations(
    declarations: Sequence[MetricDeclaration], *, has_validation: bool
) -> MetricKeys:
    """Check *declarations* and resolve every monitored name to a published key."""
    provided = _providers(declarations)
    keys = [*provided, "train_loss"] + (["val_loss"] if has_validation else [])
    aliases = {
        name: _alias(name, decl.source, keys, provided)
        for decl in declarations
        for name in decl.monitors
        if name not in keys
    }
    producers = tuple(sorted({decl.source for decl in declarations if decl.provides}))
    return MetricKeys(tuple(keys), aliases, frozenset(provided), producers)


def _merge(results: Iterable[Any], declared: frozenset[str]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for result in results:
        if not isinstance(result, Mapping):
            raise PluginError(
                f"a finetuner_evaluate implementation returned {type(result).__name__}; "
                "return a dict of floats."
            )
        for key, value in result.items():
            if key not in declared:
                raise PluginError(
                    f"a producer returned the metric '{key}', which no plugin declared; declare "
                    "it in provided_metrics() (or a MetricDeclaration from finetuner_configure)."
                )
            if key in metrics:
                raise PluginError(f"the metric '{key}' was returned twice in one evaluation.")
            try:
                metrics[key] = float(value)
            except (TypeError, ValueError):
                raise PluginError(f"the metric '{key}' is {value!r}, not a number.") from None
    return metrics


class MetricsPublisher:
    """Runs one evaluation: producers, then the run's metrics record, then the consumers."""

    def __init__(
        self, hook: Any, ctx: TrainingContext, writer: RunWriter, phases: PhaseTracker
    ) -> None:
        self.hook, self.ctx, self.writer, self.phases = hook, ctx, writer, phases
        self.keys = MetricKeys(keys=())

    def declare(self, keys: MetricKeys) -> None:
        """Use the resolved declarations; the context learns the keys and aliases."""
        self.keys = keys
        self.ctx.metric_keys = keys.keys
        self.ctx._metric_aliases = dict(keys.aliases)

    def evaluate_and_publish(
        self,
        stage: Stage,
        epoch: int,
        *,
        train_loss: float | None = None,
        val_loss: float | None = None,
    ) -> dict[str, float]:
        """Evaluate (models in eval mode, no gradients), record, publish; returns the metrics."""
        ctx = self.ctx
        with self.phases.enter(Phase.EVALUATE):
            event = EvaluationRequested(stage=stage, epoch=epoch, step=ctx.step)
            with evaluating(*ctx.models.values()):
                results = self.hook.finetuner_evaluate(ctx=ctx, event=event)
            metrics = _merge(results, self.keys.provided)
            for key, value in (("train_loss", train_loss), ("val_loss", val_loss)):
                if value is not None:
                    metrics[key] = float(value)
            check_finite_metrics(metrics, stage, epoch)
            skipped, ctx._skipped = ctx._skipped, {}
            self.writer.append_metrics(stage, epoch, ctx.step, metrics, skipped=skipped)
        with self.phases.enter(Phase.PUBLISH):
            published = MetricsPublished(
                stage=stage,
                epoch=epoch,
                step=ctx.step,
                metrics=frozen_mapping(metrics),
                producers=self.keys.producers,
            )
            self.hook.finetuner_on_metrics(ctx=ctx, event=published)
        return metrics
