"""The data package piece by piece: class alignment, items, image references, the store,
batching and sampling, and the old module paths that keep working."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import finetuner
import finetuner.data
from finetuner.data import (
    Collate,
    Column,
    Dataset,
    RandomBatchSampler,
    align_classes,
    iterate_batches,
    load_dataset,
    split_dataset,
)
from finetuner.data.image_references import (
    ImageResolver,
    is_image_reference,
    resolve_image_reference,
)
from finetuner.data.items import finite_scores, labels_to_codes, one_modality, stack_items
from finetuner.data.store import load_pushed, pushed_names, target_folder, write_dataset
from finetuner.errors import ConfigError, DataError


def _labeled(labels: list, source: str = "data") -> Dataset:
    """Tensor items whose first value is their position, with *labels* as given."""
    return load_dataset(
        [(torch.tensor([float(i), 0.0]), label) for i, label in enumerate(labels)], name=source
    )


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (2, 2), (0, 0, 255)).save(path)
    return path


# --- align_classes -------------------------------------------------------------------------


def test_align_classes_gives_shared_labels_the_training_codes():
    train = _labeled(["cat", "dog", "fish"])  # codes: cat 0, dog 1, fish 2
    evaluation = _labeled(["fish", "dog", "fish"], source="eval_data")  # codes: dog 0, fish 1
    aligned = align_classes(evaluation, train)
    assert aligned.classes == ["cat", "dog", "fish"]
    assert aligned.labels.tolist() == [2, 1, 2]
    assert aligned.label_tensor.tolist() == [2, 1, 2]
    assert [aligned.classes[c] for c in aligned.labels] == ["fish", "dog", "fish"]


def test_align_classes_appends_labels_training_lacks():
    train = _labeled(["a", "b"])
    evaluation = _labeled(["z", "b", "y"], source="eval_data")  # sorted: b, y, z
    aligned = align_classes(evaluation, train)
    assert aligned.classes == ["a", "b", "y", "z"]
    assert [aligned.classes[c] for c in aligned.labels] == ["z", "b", "y"]
    assert aligned.num_classes == 4


def test_align_classes_leaves_both_inputs_as_they_were():
    train = _labeled(["a", "b"])
    evaluation = _labeled(["b", "c"], source="eval_data")
    assert evaluation.label_tensor.tolist() == [0, 1]  # cached: the copy must not reuse it
    aligned = align_classes(evaluation, train)
    assert evaluation.classes == ["b", "c"] and evaluation.labels.tolist() == [0, 1]
    assert evaluation.label_tensor.tolist() == [0, 1]
    assert train.classes == ["a", "b"]
    assert aligned.label_tensor.tolist() == [1, 2]
    assert aligned.ids == evaluation.ids and aligned.source == "eval_data"
    assert torch.equal(aligned.inputs, evaluation.inputs)


def test_fit_aligns_eval_classes_with_train_classes(tmp_path):
    seen = {}

    class Spy(finetuner.callback.Callback):
        def finetuner_on_fit_begin(self, ctx, event):
            seen["train"], seen["eval"] = ctx.train_data, ctx.eval_data

    data = finetuner.testing.make_tiny_data()
    train = [(x, f"class-{c}") for x, c in data]
    evaluation = [(x, f"class-{c}") for x, c in data if c >= 2]
    finetuner.fit("mlp", train, evaluation, epochs=0, runs_dir=str(tmp_path), callbacks=[Spy()])
    assert seen["eval"].classes == seen["train"].classes
    assert sorted(set(seen["eval"].labels.tolist())) == [2, 3]


# --- items ---------------------------------------------------------------------------------


def test_labels_become_codes_of_sorted_classes():
    codes, classes = labels_to_codes(["b", "a", "b"], "data")
    assert classes == ["a", "b"] and codes.tolist() == [1, 0, 1]
    codes, classes = labels_to_codes([1, "x", 1], "data")  # unsortable: ordered by repr
    assert classes == sorted({1, "x"}, key=repr) and codes.dtype == np.int64
    with pytest.raises(DataError, match=r"data: 2 item\(s\) have no label \(positions 0, 2\)"):
        labels_to_codes([None, "a", None], "data")


def test_item_helpers_say_what_is_wrong_and_where():
    with pytest.raises(DataError, match=r"data: items mix tensor and text \(text at position 0"):
        one_modality(["text", "text", "tensor"], "data")
    with pytest.raises(DataError, match=r"data\[1\]: the score 'high' is not a number"):
        finite_scores([0.5, "high"], "data", "score")
    with pytest.raises(DataError, match=r"data\[0\]: the margin inf is not a finite number"):
        finite_scores([float("inf")], "data", "margin")
    with pytest.raises(DataError, match=r"\(3,\) at position 0, \(2,\) at position 1"):
        stack_items([torch.zeros(3), torch.zeros(2)], "data")
    stacked = stack_items([torch.zeros(2, dtype=torch.int64), torch.ones(2)], "data")
    assert stacked.dtype == torch.float32 and stacked.shape == (2, 2)


# --- image references ----------------------------------------------------------------------


def test_image_references(tmp_path):
    assert is_image_reference("cat.PNG") and is_image_reference("file:///x")
    assert is_image_reference("https://example.com/cat")
    assert not is_image_reference("a cat.txt") and not is_image_reference("a cat")
    image = _png(tmp_path / "my pics" / "cat.png")
    assert resolve_image_reference("my pics/cat.png", where="w", base_dir=str(tmp_path)) == str(
        image
    )
    uri = "file://" + str(image).replace(" ", "%20")
    assert resolve_image_reference(uri, where="w") == str(image)
    with pytest.raises(DataError, match=r"w: https://x/c\.png is a remote image"):
        resolve_image_reference("https://x/c.png", where="w")
    with pytest.raises(DataError, match="names a file on host 'server'"):
        resolve_image_reference("file://server/c.png", where="w")
    with pytest.raises(DataError, match="read from the CSV file's folder"):
        resolve_image_reference("dog.png", where="w", base_dir=str(tmp_path), in_csv=True)


def test_image_resolver_checks_each_reference_once(tmp_path):
    image = _png(tmp_path / "cat.png")
    resolver = ImageResolver("train.csv", str(tmp_path))
    assert resolver.resolve("cat.png", 1) == str(image)
    image.unlink()  # a second row naming it is not checked again
    assert resolver.resolve("cat.png", 2) == str(image)
    with pytest.raises(DataError, match=r"train.csv:3: image file not found"):
        resolver.resolve("dog.png", 3)


# --- the store -----------------------------------------------------------------------------


def test_store_writes_and_reads_a_dataset(tmp_path):
    data = finetuner.testing.make_tiny_data(num_classes=2, per_class=3)
    dataset = load_dataset([(x, f"c{c}") for x, c in data], name="tiny")
    target = target_folder("tiny", data_dir=tmp_path)
    assert target == tmp_path.absolute() / "tiny" and not target.exists()
    assert write_dataset(dataset, target) == target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]  # no temporary folder left
    manifest = json.loads((target / "dataset.json").read_text())
    assert manifest["name"] == "tiny" and manifest["size"] == 6
    loaded = load_pushed("tiny", tmp_path)
    assert torch.equal(loaded.inputs, dataset.inputs)
    assert loaded.labels.tolist() == dataset.labels.tolist()
    assert loaded.classes == ["c0", "c1"] and loaded.ids == dataset.ids
    assert loaded.source == "tiny" and pushed_names(tmp_path) == ["tiny"]


def test_store_refuses_a_taken_name_before_converting(tmp_path):
    finetuner.data.push_data("taken", [("x", 0)], data_dir=tmp_path)
    with pytest.raises(ConfigError, match="exists already"):
        target_folder("taken", data_dir=tmp_path)
    with pytest.raises(ConfigError, match="exists already"):  # not the conversion's DataError
        finetuner.data.push_data("taken", [], data_dir=tmp_path)
    assert target_folder("taken", overwrite=True, data_dir=tmp_path).name == "taken"
    with pytest.raises(ConfigError, match="built-in data set"):
        target_folder("digits-eval", data_dir=tmp_path)


def test_store_refuses_what_a_file_cannot_hold(tmp_path):
    labels = Dataset([Column("text", ["a"])], np.zeros(1, np.int64), [("a", 1)], ["0"])
    with pytest.raises(DataError, match=r"odd: the label \('a', 1\) is a tuple"):
        write_dataset(labels, tmp_path / "odd")
    pixels = Dataset([Column("image", [torch.zeros(3, 2, 2)])], np.zeros(1, np.int64), [0], ["0"])
    with pytest.raises(DataError, match="image column 0 holds in-memory images"):
        write_dataset(pixels, tmp_path / "pixels")
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


# --- batching and sampling -----------------------------------------------------------------


def test_iterate_batches_collates_in_the_sampler_order():
    dataset = _labeled(["a", "b", "a", "b", "c"])
    sampler = [[4, 0], [2], [1, 3]]
    collate = Collate([lambda items: items * 10])
    batches = list(iterate_batches(dataset, sampler, collate))
    assert [b.items[0][:, 0].tolist() for b in batches] == [[40.0, 0.0], [20.0], [10.0, 30.0]]
    assert [b.labels.tolist() for b in batches] == [[2, 0], [0], [1, 1]]
    assert all(b.scores is None for b in batches)


def test_random_batches_depend_only_on_seed_and_epoch():
    sampler = RandomBatchSampler(10, batch_size=4, seed=3)
    first = list(sampler)
    assert len(sampler) == 3 and [len(b) for b in first] == [4, 4, 2]
    assert sorted(i for b in first for i in b) == list(range(10))
    assert list(RandomBatchSampler(10, batch_size=4, seed=3)) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    dropping = RandomBatchSampler(10, batch_size=4, seed=3, drop_last=True)
    assert len(dropping) == 2 and [len(b) for b in dropping] == [4, 4]


def test_split_dataset_is_stratified_and_refuses_empty_sides():
    dataset = _labeled(["a"] * 10 + ["b"] * 5)
    train, val = split_dataset(dataset, 0.2, seed=0)
    assert len(train) == 12 and len(val) == 3
    assert sorted(val.labels.tolist()) == [0, 0, 1]
    assert not set(train.ids) & set(val.ids)
    with pytest.raises(DataError, match=r"val_split=0.01 leaves no item for validation out of 15"):
        split_dataset(dataset, 0.01, seed=0)
    with pytest.raises(DataError, match="leaves no item for training"):
        split_dataset(dataset, 1.0, seed=0)


# --- layout and old paths ------------------------------------------------------------------

OLD_MODULES = {
    "finetuner.csv_data": (
        "finetuner.data.csv_reader",
        "CSVOptions CSVTable CSV_SUFFIXES IMAGE_EXTENSIONS SNIFF_DELIMITERS SNIFF_SAMPLE_CHARS "
        "as_csv_options is_csv_source is_image_reference read_csv resolve_image_reference",
    ),
    "finetuner.datasets": ("finetuner.data.builtin", "BUILTIN_DATASETS load_builtin"),
    "finetuner.datastore": (
        "finetuner.data.pushed",
        "DATA_DIR_ENV FORMAT_VERSION delete_data list_data load_pushed push_data pushed_names "
        "resolve_data_dir",
    ),
    "finetuner.document": ("finetuner.data.documents", "Document DocumentArray ScoredPair Triplet"),
}


@pytest.mark.parametrize("old", sorted(OLD_MODULES))
def test_old_module_paths_are_the_new_modules(old):
    new, names = OLD_MODULES[old]
    module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__name__ == new
    assert [name for name in names.split() if not hasattr(module, name)] == []


def test_data_keeps_every_name_the_flat_module_had():
    names = (
        "IMAGE KINDS LABEL_TAG SCORE_TAG TENSOR TEXT Batch ClassBalancedBatchSampler Collate "
        "Column Dataset RandomBatchSampler encodable_values iterate_batches load_dataset "
        "split_dataset"
    )
    assert [name for name in names.split() if name not in finetuner.data.__all__] == []
    assert all(hasattr(finetuner.data, name) for name in finetuner.data.__all__)


def test_importing_data_leaves_docarray_and_other_heavy_libraries_unloaded():
    code = (
        "import sys, finetuner.data, finetuner.csv_data, finetuner.datastore\n"
        "print(','.join(m for m in ('docarray', 'safetensors', 'sklearn', 'PIL') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_dataset_is_a_leaf():
    source = Path(finetuner.data.dataset.__file__).read_text(encoding="utf-8")
    first_party = [
        (node.level, node.module)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and (node.level or "finetuner" in str(node.module))
    ]
    assert first_party == [(2, "errors")]
