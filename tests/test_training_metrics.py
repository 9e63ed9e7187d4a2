"""Metric declarations and evaluate-then-publish, on their own."""

from __future__ import annotations

import pytest
from training_parts import open_loop, tiny_setup

from finetuner.callback import Callback
from finetuner.errors import ConfigError, PluginError
from finetuner.events import MetricDeclaration
from finetuner.training.failure import Phase
from finetuner.training.metrics import resolve_declarations


def _decl(source, provides=(), monitors=()):
    return MetricDeclaration(source=source, provides=tuple(provides), monitors=tuple(monitors))


def test_keys_aliases_and_producers():
    keys = resolve_declarations(
        [
            _decl("eval", provides=["mlp_precision_at_k", "mlp_ndcg_at_k"]),
            _decl("stopper", monitors=["precision_at_k", "val_loss"]),
        ],
        has_validation=True,
    )
    assert keys.keys == ("mlp_precision_at_k", "mlp_ndcg_at_k", "train_loss", "val_loss")
    assert dict(keys.aliases) == {"precision_at_k": "mlp_precision_at_k"}
    assert keys.producers == ("eval",) and keys.provided == {"mlp_precision_at_k", "mlp_ndcg_at_k"}


@pytest.mark.parametrize(
    ("declarations", "error", "match"),
    [
        ([_decl("a", provides=["train_loss"])], PluginError, "which the trainer provides"),
        (
            [_decl("a", provides=["x_score"]), _decl("b", provides=["x_score"])],
            PluginError,
            "plugins 'a' and 'b' both provide the metric 'x_score'",
        ),
        ([_decl("a", monitors=["val_loss"])], ConfigError, "val_loss needs eval_data or val_split"),
        (
            [_decl("p", provides=["a_score", "b_score"]), _decl("m", monitors=["score"])],
            ConfigError,
            r"several producers provide \(a_score, b_score\); monitor one full key",
        ),
        (
            [_decl("p", provides=["mlp_recall_at_k"]), _decl("m", monitors=["recal_at_k"])],
            ConfigError,
            "m monitors 'recal_at_k', which nothing provides",
        ),
    ],
)
def test_declaration_mistakes(declarations, error, match):
    with pytest.raises(error, match=match):
        resolve_declarations(declarations, has_validation=False)


class Producer(Callback):
    def __init__(self, value, order):
        self.value, self.order = value, order

    def provided_metrics(self, ctx):
        return ["probe_score"]

    def finetuner_evaluate(self, ctx, event):
        self.order.append(("evaluate", event.stage, ctx.models["model"].training))
        return {"probe_score": self.value}


class Reader(Callback):
    def __init__(self, order):
        self.order = order

    def finetuner_on_metrics(self, ctx, event):
        records = ctx.run.metric_history()
        self.order.append(("publish", dict(event.metrics), len(records), event.producers))


def test_producers_run_then_the_record_then_consumers(tmp_path):
    order: list = []
    loop = open_loop(tmp_path, tiny_setup(), [Reader(order), Producer(0.5, order)])
    loop._configure()
    metrics = loop.publisher.evaluate_and_publish("epoch", 0, train_loss=1.25, val_loss=None)
    assert metrics == {"probe_score": 0.5, "train_loss": 1.25}
    assert order == [
        ("evaluate", "epoch", False),  # models in eval mode while producers run
        ("publish", metrics, 1, ("Producer",)),  # the record is written before consumers run
    ]
    assert loop.ctx.models["model"].training  # and back in training mode after
    assert loop.phases.current is Phase.SETUP


def test_an_undeclared_or_non_numeric_result_is_an_error(tmp_path):
    class Sloppy(Callback):
        def __init__(self, result):
            self.result = result

        def provided_metrics(self, ctx):
            return ["probe_score"]

        def finetuner_evaluate(self):
            return self.result

    loop = open_loop(tmp_path / "a", tiny_setup(), [Sloppy({"other": 1.0})])
    loop._configure()
    with pytest.raises(PluginError, match="the metric 'other', which no plugin declared"):
        loop.publisher.evaluate_and_publish("before", -1)
    assert loop.phases.current is Phase.EVALUATE  # the failure names where it happened
    loop = open_loop(tmp_path / "b", tiny_setup(), [Sloppy({"probe_score": "high"})])
    loop._configure()
    with pytest.raises(PluginError, match="the metric 'probe_score' is 'high', not a number"):
        loop.publisher.evaluate_and_publish("before", -1)


def test_skipped_queries_go_with_that_evaluation_only(tmp_path):
    class Skipper(Callback):
        def provided_metrics(self, ctx):
            return ["probe_score"]

        def finetuner_evaluate(self, ctx, event):
            if event.stage == "before":
                ctx.record_skipped("probe", 3)
            return {"probe_score": 0.0}

    loop = open_loop(tmp_path, tiny_setup(), [Skipper()])
    loop._configure()
    loop.publisher.evaluate_and_publish("before", -1)
    loop.publisher.evaluate_and_publish("after", 0)
    before, after = loop.ctx.run.metric_history()
    assert before["skipped"] == {"probe": 3} and "skipped" not in after
