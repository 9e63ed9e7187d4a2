"""The model card: every artifact's README.md, with the run's numbers, parsed as Markdown."""

from __future__ import annotations

import itertools
import zipfile

import numpy as np
import pytest
import torch
import yaml
from markdown_it import MarkdownIt

import finetuner
from finetuner.models.card import CardFacts, escape_markdown, render_card
from finetuner.testing import make_tiny_data

TINY = {
    "model": "mlp",
    "model_options": {"hidden_sizes": [16, 8]},
    "epochs": 2,
    "batch_size": 8,
    "seed": 3,
    "device": "cpu",
}


def _split(card: str) -> tuple[dict, str]:
    """The card's front matter (parsed) and its Markdown body."""
    assert card.startswith("---\n")
    matter, body = card[4:].split("\n---\n", 1)
    return yaml.safe_load(matter), body


def _tables(body: str) -> list[list[list[str]]]:
    """Every table of *body* as rows of cell texts (the header row first), as GFM renders it."""
    tokens = MarkdownIt("commonmark").enable("table").parse(body)
    tables: list[list[list[str]]] = []
    for previous, token in itertools.pairwise(tokens):
        if token.type == "table_open":
            tables.append([])
        elif token.type == "tr_open":
            tables[-1].append([])
        elif token.type == "inline" and previous.type in ("th_open", "td_open"):
            tables[-1][-1].append(_text(token))
    return tables


def _text(inline) -> str:
    return "".join(child.content for child in inline.children or [])


def _section(body: str, title: str) -> str:
    return body.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_a_fit_artifact_has_a_card_with_the_run_numbers(tmp_path):
    pytest.importorskip("finetuner_evaluation")
    evaluation = finetuner.callback.EvaluationCallback(query_data=make_tiny_data(), limit=5)
    run = finetuner.fit(train_data=make_tiny_data(), val_split=0.2, callbacks=[evaluation], **TINY)
    card = (run.artifact_path / "README.md").read_text(encoding="utf-8")
    matter, body = _split(card)
    assert matter["library_name"] == "finetuner" and "base_model" not in matter  # mlp: no hub
    assert "finetuner" in matter["tags"]

    config = run.config
    assert f"# {run.name}" in body
    data = _section(body, "Training data")
    assert "- Training rows: 32" in data and "- Validation rows: 8 (held out" in data
    assert "`labeled` (items with class labels)" in data
    training = _section(body, "Training")
    for label, key in (("Epochs", "epochs"), ("Batch size", "batch_size"), ("Seed", "seed")):
        assert f"- {label}: `{config[key]}`" in training
    assert f"- Loss: `{config['loss']}`" in training and "- Optimizer: `Adam`" in training
    assert "- Learning rate: `0.001`" in training  # Adam's default, which the fit used
    assert "`hidden_sizes`: `[16, 8]`" in _section(body, "Base model")

    (table,) = [t for t in _tables(body) if t[0][0] == "metric"]
    metrics = run.metrics()
    assert [row[0] for row in table[1:]] == list(metrics["after"])
    for name, before, after, change in table[1:]:
        assert before == f"{metrics['before'][name]:.4f}"
        assert after == f"{metrics['after'][name]:.4f}"
        assert change == f"{metrics['after'][name] - metrics['before'][name]:+.4f}"

    (plugins,) = [t for t in _tables(body) if t[0][0] == "plugin"]
    recorded = yaml.safe_load((run.artifact_path / "metadata.yml").read_text())["plugins"]
    assert plugins[1:] == [
        [p["name"], p["kind"], p["distribution"], p["version"]] for p in recorded
    ]
    assert 'finetuner.get_model("path/to/artifact")' in body
    assert "finetuner.encode(model, torch.rand(2, 8))" in body
    assert "SentenceTransformer" not in body and "is_onnx" not in body


def test_the_card_travels_in_the_zip_and_loading_does_without_it(tmp_path):
    data = make_tiny_data()
    run = finetuner.fit(train_data=data, **TINY)
    inputs = torch.stack([x for x, _ in data[:5]])
    expected = finetuner.encode(finetuner.get_model(run.artifact_path), inputs)
    zipped = run.save_artifact(tmp_path / "zips")
    with zipfile.ZipFile(zipped) as archive:
        assert f"{run.name}/README.md" in archive.namelist()
    np.testing.assert_array_equal(finetuner.encode(finetuner.get_model(zipped), inputs), expected)

    (run.artifact_path / "README.md").write_text("not a card: { ] |", encoding="utf-8")
    np.testing.assert_array_equal(
        finetuner.encode(finetuner.get_model(run.artifact_path), inputs), expected
    )
    (run.artifact_path / "README.md").unlink()
    np.testing.assert_array_equal(
        finetuner.encode(finetuner.get_model(run.artifact_path), inputs), expected
    )


def test_a_run_without_evaluation_has_no_metrics_table_and_says_so():
    run = finetuner.fit(train_data=make_tiny_data(), **TINY)
    assert run.metrics() == {"before": {}, "after": {}}
    _, body = _split((run.artifact_path / "README.md").read_text(encoding="utf-8"))
    assert "No metrics were recorded: the run had no evaluation" in _section(body, "Metrics")
    assert [t[0][0] for t in _tables(body)] == ["plugin"]
    assert "Validation rows" not in body  # no validation data: nothing said of it


SECTIONS = [
    "Base model",
    "Training data",
    "Training",
    "Metrics",
    "How to load",
    "Plugins and versions",
]
BREAKING = "a | b\n\n# not a heading\n---\n*bold* `tick` <script>x</script> [l](http://x) &amp;"


def test_a_description_and_names_with_markdown_characters_do_not_break_the_card():
    metrics = {"before": {"odd|name`": 0.25, "ok": 1}, "after": {"odd|name`": 0.5, "ok": 2}}
    card = render_card(
        config={"model": "mlp", "description": BREAKING, "loss": "a|b"},
        metadata={"run_name": "r1", "plugins": [{"name": "x|y", "version": "1"}]},
        metrics=metrics,
        models={"model": {"registry_name": "mlp", "options": {"note": "p|q`"}}},
    )
    matter, body = _split(card)
    assert matter == {"library_name": "finetuner", "tags": ["finetuner", "embeddings"]}
    tokens = MarkdownIt("commonmark").enable("table").parse(body)
    headings = [
        inline.content for h, inline in itertools.pairwise(tokens) if h.type == "heading_open"
    ]
    assert headings == ["r1", *SECTIONS]
    assert all(t.type not in ("html_block", "html_inline", "hr") for t in tokens)
    assert not any(
        c.type in ("html_inline", "link_open", "em_open") for t in tokens for c in t.children or []
    )
    description = next(t for t in tokens if t.type == "inline" and "Description" in t.content)
    assert _text(description) == "Description: " + " ".join(BREAKING.split())
    (table, plugins) = _tables(body)
    assert table[1:] == [["odd|name`", "0.2500", "0.5000", "+0.2500"], ["ok", "1", "2", "+1.0000"]]
    assert plugins[1] == ["x|y", "", "", "1"]


def test_unknown_values_are_left_out():
    models = {"model": {"options": {"output_dim": None}}}
    card = render_card(config={}, metadata={}, metrics={}, models=models)
    _, body = _split(card)
    assert "Nothing is recorded about the data." in body
    assert "Nothing is recorded about the training options." in body
    for unknown in ("Training rows", "Loss", "Seed", "output_dim", "base_model", "None", "null"):
        assert unknown not in card


@pytest.mark.parametrize(
    ("model", "base"),
    [
        ("sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
        ("mlp", None),
        ("./models/mine", None),
    ],
)
def test_base_model_is_named_for_hub_models_only(model, base):
    card = render_card(
        config={"model": model},
        metadata={},
        metrics={},
        models={"model": {"registry_name": "x", "modality": "text"}},
    )
    matter, body = _split(card)
    assert matter.get("base_model") == base and "text" in matter["tags"]
    assert 'finetuner.encode(model, ["a first text", "a second text"])' in body


def test_exports_are_mentioned_only_when_the_artifact_holds_them():
    def body(files):
        return _split(
            render_card(config={}, metadata={}, metrics={}, models={"m": {}}, files=files)
        )[1]

    plain = body(["config.yml", "models/m/model.safetensors"])
    assert "SentenceTransformer" not in plain and "is_onnx" not in plain
    assert "model=YourModule(...)" in plain  # no registry name: the module comes from the user
    exported = body(["models/m/model.onnx", "sentence-transformers/modules.json"])
    assert "is_onnx=True" in exported
    assert 'SentenceTransformer("path/to/artifact/sentence-transformers")' in exported


def test_two_towers_are_loaded_one_at_a_time():
    towers = {
        "clip-text": {"registry_name": "clip-base-en", "modality": "text"},
        "clip-vision": {"registry_name": "clip-base-en", "modality": "image"},
    }
    body = _split(render_card(config={}, metadata={}, metrics={}, models=towers))[1]
    assert 'get_model("path/to/artifact", select_model="clip-text")' in body
    assert 'get_model("path/to/artifact", select_model="clip-vision")' in body
    assert '["photo-1.jpg", "photo-2.jpg"]' in body


def test_card_facts_are_optional_and_escape_markdown_keeps_plain_text():
    assert CardFacts().training_rows is None
    assert escape_markdown("plain words 1.5") == "plain words 1.5"
    assert escape_markdown("a|b\nc") == r"a\|b c"


def test_an_onnx_artifact_card_says_how_to_run_the_export():
    pytest.importorskip("onnxruntime")
    data = make_tiny_data()
    run = finetuner.fit(train_data=data, to_onnx=True, **TINY)
    body = _split((run.artifact_path / "README.md").read_text(encoding="utf-8"))[1]
    assert 'finetuner.get_model("path/to/artifact", is_onnx=True)' in body
    inputs = torch.stack([x for x, _ in data[:3]])
    onnx = finetuner.encode(finetuner.get_model(run.artifact_path, is_onnx=True), inputs)
    plain = finetuner.encode(finetuner.get_model(run.artifact_path), inputs)
    np.testing.assert_allclose(onnx, plain, atol=1e-5)


def test_a_run_stopped_early_says_how_many_epochs_it_trained():
    assert "`2` of `5` (stopped early)" in _card_with(CardFacts(epochs_completed=2), epochs=5)
    assert "stopped early" not in _card_with(CardFacts(epochs_completed=5), epochs=5)


def _card_with(facts: CardFacts, **config) -> str:
    return render_card(
        config={"model": "mlp", **config}, metadata={}, metrics={}, models={}, facts=facts
    )
