"""EvaluationCallback inside real fits, and the `finetuner evaluate` command."""

from __future__ import annotations

import json

import pytest

import finetuner
from finetuner.cli import main
from finetuner.errors import ConfigError, DataError
from finetuner.testing import make_tiny_data, run_recorded_fit
from finetuner_evaluation import METRIC_NAMES, EvaluationCallback, evaluate_embeddings


def test_found_through_its_entry_point():
    assert finetuner.callback.EvaluationCallback is EvaluationCallback


def test_publishes_all_eight_keys_before_each_epoch_and_after(tmp_path):
    result = run_recorded_fit(
        tmp_path, callbacks=[EvaluationCallback(query_data=make_tiny_data(seed=1))], epochs=2
    )
    history = result.run.metric_history()
    assert [r["stage"] for r in history] == ["before", "epoch", "epoch", "after"]
    for record in history:
        assert {f"mlp_{name}" for name in METRIC_NAMES} <= set(record["metrics"])


def test_metrics_equal_the_pure_function_on_the_same_embeddings(tmp_path):
    queries = make_tiny_data(seed=1)
    index = make_tiny_data(seed=2)
    callback = EvaluationCallback(query_data=queries, index_data=index, limit=5, search="exact")
    result = run_recorded_fit(tmp_path, callbacks=[callback], epochs=1)
    model = finetuner.get_model(result.run.artifact_path)
    import torch

    q = finetuner.encode(model, torch.stack([x for x, _ in queries]))
    i = finetuner.encode(model, torch.stack([x for x, _ in index]))
    expected = evaluate_embeddings(q, [y for _, y in queries], i, [y for _, y in index], limit=5)
    after = result.run.metrics()["after"]
    for name, value in expected.items():
        assert after[f"mlp_{name}"] == pytest.approx(value, abs=1e-6)


def test_caption_prefixes_the_keys(tmp_path):
    callback = EvaluationCallback(query_data=make_tiny_data(seed=1), caption="digits")
    result = run_recorded_fit(tmp_path, callbacks=[callback], epochs=1)
    assert "digits_ndcg_at_k" in result.run.metrics()["after"]


def test_two_callbacks_need_different_captions(tmp_path):
    with pytest.raises(finetuner.PluginError, match="both provide the metric 'mlp_precision_at_k'"):
        run_recorded_fit(
            tmp_path,
            callbacks=[
                EvaluationCallback(query_data=make_tiny_data()),
                EvaluationCallback(query_data=make_tiny_data()),
            ],
        )


def test_steps_per_interval_adds_step_evaluations(tmp_path):
    callback = EvaluationCallback(query_data=make_tiny_data(seed=1), steps_per_interval=2)
    result = run_recorded_fit(tmp_path, callbacks=[callback], epochs=1, batch_size=8)  # 5 steps
    stages = [r["stage"] for r in result.run.metric_history()]
    assert stages == ["before", "step", "step", "epoch", "after"]


def test_query_sample_size(tmp_path):
    callback = EvaluationCallback(query_data=make_tiny_data(seed=1), query_sample_size=10, seed=3)
    run_recorded_fit(tmp_path, callbacks=[callback], epochs=1)
    assert callback.last_result.num_queries_scored + callback.last_result.num_queries_skipped == 10


def test_examples_are_stored_and_displayed(tmp_path, capsys):
    callback = EvaluationCallback(
        query_data=make_tiny_data(seed=1), gather_examples=True, num_example_queries=2, limit=3
    )
    result = run_recorded_fit(tmp_path, callbacks=[callback], epochs=1)
    examples = result.run.example_results()
    assert set(examples) == {"before", "after"}
    assert len(examples["before"]) == 2 and all(len(m) == 3 for m in examples["before"].values())
    capsys.readouterr()
    result.run.display_examples(k=2)
    shown = capsys.readouterr().out
    assert "Results before fine-tuning:" in shown and "Results after fine-tuning:" in shown
    assert "Match 2" in shown and "Match 3" not in shown
    query = next(iter(examples["after"]))
    assert query.split(" ")[0] in shown


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"limit": 0}, "limit must be a positive integer"),
        ({"distance": "manhattan"}, "unknown distance 'manhattan'"),
        ({"search": "faiss"}, "unknown search 'faiss'"),
        ({"steps_per_interval": 0}, "steps_per_interval must be a positive integer or None"),
        ({"batch_size": -1}, "batch_size must be a positive integer"),
        ({"num_example_queries": 0}, "num_example_queries must be a positive integer"),
        ({"caption": ""}, "caption must be a non-empty string"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ConfigError, match=message):
        EvaluationCallback(query_data=make_tiny_data(), **options)


def test_missing_query_data():
    with pytest.raises(ConfigError, match="query_data is required"):
        EvaluationCallback(query_data=None)


def test_bad_query_data_fails_before_training(tmp_path):
    with pytest.raises(DataError, match="query_data is empty"):
        run_recorded_fit(tmp_path, callbacks=[EvaluationCallback(query_data=[])])


def test_unknown_tower(tmp_path):
    with pytest.raises(ConfigError, match="model='clip-text' is not a model of this fit"):
        run_recorded_fit(
            tmp_path, callbacks=[EvaluationCallback(query_data=make_tiny_data(), model="clip-text")]
        )


def test_config_file_form(tmp_path):
    from finetuner.config_file import load_fit_config

    path = tmp_path / "fit.yml"
    path.write_text(
        "model: mlp\ntrain_data: digits-train\ncallbacks:\n"
        "  - name: evaluation\n    query_data: digits-eval\n    limit: 5\n"
    )
    (callback,) = load_fit_config(path).callbacks
    assert isinstance(callback, EvaluationCallback) and callback.limit == 5


def test_evaluate_command(capsys):
    assert main(["evaluate", "mlp", "--query-data", "digits-eval", "--limit", "5", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert set(shown["metrics"]) == set(METRIC_NAMES)
    assert 0.0 <= shown["metrics"]["precision_at_k"] <= 1.0
    args = ["evaluate", "mlp", "--query-data", "digits-eval", "--limit", "5", "--json"]
    assert main([*args, "--precision", "bf16"]) == 0
    in_bf16 = json.loads(capsys.readouterr().out)["metrics"]
    # the same untrained model (seeded) encoded in bfloat16: nearly the same metrics
    assert in_bf16["precision_at_k"] == pytest.approx(shown["metrics"]["precision_at_k"], abs=0.05)
    assert main([*args, "--precision", "16-mixed"]) == 1
    assert "needs a CUDA device" in capsys.readouterr().err


def test_evaluate_command_errors_are_one_line(capsys):
    assert main(["evaluate", "mlp", "--query-data", "nope"]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("error: query_data: 'nope' is neither a CSV file nor a known data set")
        and err.count("\n") == 1
    )


def test_queries_without_relevant_items_are_counted_in_the_metrics_record(tmp_path):
    queries = [*make_tiny_data(seed=1), (make_tiny_data(seed=2)[0][0], "lonely")]  # one lone label
    result = run_recorded_fit(
        tmp_path, callbacks=[EvaluationCallback(query_data=queries)], epochs=1
    )
    for record in result.run.metric_history():
        assert record["skipped"] == {"mlp": 1}


def test_annoy_search_publishes_its_recall_against_exact(tmp_path):
    callback = EvaluationCallback(query_data=make_tiny_data(seed=1), search="annoy")
    result = run_recorded_fit(tmp_path, callbacks=[callback], epochs=1)
    for record in result.run.metric_history():
        assert 0.0 <= record["metrics"]["mlp_annoy_recall_at_k"] <= 1.0
    exact = run_recorded_fit(
        tmp_path / "exact", callbacks=[EvaluationCallback(query_data=make_tiny_data(seed=1))]
    )
    assert "mlp_annoy_recall_at_k" not in exact.run.metrics()["after"]
