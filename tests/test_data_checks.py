"""Data that can be used but probably not as meant gets one warning that says how to fix it."""

from __future__ import annotations

import warnings

import pytest

from finetuner import CSVOptions
from finetuner.data import load_dataset
from finetuner.errors import DataWarning
from finetuner.testing import make_tiny_data

TOPICS = ["billing", "shipping", "returns"]


def _write(path, rows):
    path.write_text("".join(f"{a},{b}\n" for a, b in rows), encoding="utf-8")
    return path


def _no_data_warning(call):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        return call()


def test_a_label_column_read_as_pairs_gets_a_warning_naming_is_labeled(tmp_path):
    path = _write(tmp_path / "questions.csv", [(f"question {i}", TOPICS[i % 3]) for i in range(12)])
    with pytest.warns(DataWarning, match=r"is_labeled=True") as caught:
        data = load_dataset(path)
    assert data.kind == "retrieval"  # still read as pairs: the warning changes nothing
    (warning,) = caught
    message = str(warning.message)
    assert "questions.csv" in message and "'billing'" in message and "3 distinct" in message


def test_labeled_files_and_real_pairs_get_no_warning(tmp_path):
    labeled = _write(
        tmp_path / "labeled.csv", [(f"question {i}", TOPICS[i % 3]) for i in range(12)]
    )
    assert _no_data_warning(lambda: load_dataset(labeled, csv_options=CSVOptions(is_labeled=True)))
    pairs = _write(tmp_path / "pairs.csv", [(f"question {i}", f"answer {i}") for i in range(12)])
    assert _no_data_warning(lambda: load_dataset(pairs)).kind == "retrieval"
    # Questions that share a few answers: the answers are documents (long), not labels.
    answers = [f"To change your {t} details, open the account page and choose {t}." for t in TOPICS]
    faq = _write(tmp_path / "faq.csv", [(f"question {i}", answers[i % 3]) for i in range(12)])
    assert _no_data_warning(lambda: load_dataset(faq)).kind == "retrieval"
    # Few rows tell nothing.
    few = _write(tmp_path / "few.csv", [("a", "x"), ("b", "x"), ("c", "y")])
    assert _no_data_warning(lambda: load_dataset(few)).kind == "retrieval"


def _batch_sizes(result):
    return {
        call.event.batch_size for call in result.recorder.getcalls("finetuner_on_train_batch_begin")
    }


def test_a_class_balanced_batch_it_cannot_fill_is_reported_once(finetuner_fit):
    data = make_tiny_data(num_classes=10, per_class=30)  # 300 items, 10 classes
    with pytest.warns(DataWarning) as caught:
        result = finetuner_fit(train_data=data, batch_size=256, sampler="class", epochs=2)
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(messages) == 1
    (message,) = messages
    assert "batch_size=256" in message and "batches of 40 items" in message
    assert "10 classes of num_items_per_class=4" in message
    assert "For batches of 256, pass num_items_per_class=32" in message
    assert _batch_sizes(result) == {40}


def test_the_suggested_option_fills_the_batch(finetuner_fit):
    data = make_tiny_data(num_classes=10, per_class=30)
    result = _no_data_warning(
        lambda: finetuner_fit(
            train_data=data, batch_size=256, sampler="class", num_items_per_class=32, epochs=1
        )
    )
    assert _batch_sizes(result) == {256}
