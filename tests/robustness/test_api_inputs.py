"""Broken data and arguments given through the Python API: labels that cannot name a class,
wrong types for ``get_model``/``build_model``/``encode``, tensors of the wrong shape, names of
pushed data sets, and pushed data sets damaged on disk. Each raises a finetuner error of its
kind whose message names the place: the row, the argument, the data set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import finetuner
from finetuner.data.store import resolve_data_dir
from finetuner.errors import ConfigError, DataError
from finetuner.testing import make_tiny_data

NAN = float("nan")


def _with_labels(labels):
    """The tiny data with the labels of its first rows replaced by *labels*."""
    data = make_tiny_data()
    return [(x, labels[i] if i < len(labels) else y) for i, (x, y) in enumerate(data)]


def _fit(train_data, **options):
    settings = dict(
        model="mlp", model_options={"hidden_sizes": [8]}, epochs=1, batch_size=8, seed=0
    )
    settings.update(options)
    return finetuner.fit(train_data=train_data, **settings)


TINY = make_tiny_data()

# (id, train_data, the exception type, what the message must name)
BROKEN_DATA = [
    ("label-list", _with_labels([[1]]), DataError, r"train_data\[0\]: the label \[1\] \(list\)"),
    ("label-dict", _with_labels([0, {"a": 1}]), DataError, r"train_data\[1\]: the label \{'a'"),
    ("label-set", _with_labels([0, 1, {2}]), DataError, r"train_data\[2\]: the label \{2\} \(set"),
    ("label-nan", _with_labels([0, 1, 2, NAN]), DataError, r"train_data\[3\]: the label nan"),
    (
        "label-long-tensor",
        _with_labels([torch.tensor([1, 2])]),
        DataError,
        r"train_data\[0\]: the label tensor\(\[1, 2\]\)",
    ),
    ("label-none", _with_labels([0, None]), DataError, r"train_data: 1 item\(s\) have no label"),
    (
        "label-0-and-'0'",
        [(x, str(y) if i == 15 else y) for i, (x, y) in enumerate(TINY)],
        DataError,
        r"train_data\[15\]: the label '1' is a text, and the label at position 10 is the "
        r"number 1",
    ),
    (
        "tensors-of-two-shapes",
        [(x[:4] if i == 7 else x, y) for i, (x, y) in enumerate(TINY)],
        DataError,
        r"train_data: items have different shapes",
    ),
    (
        "item-an-int",
        [(5 if i == 2 else x, y) for i, (x, y) in enumerate(TINY)],
        DataError,
        r"train_data\[2\]\[0\]",
    ),
    (
        "item-a-dict",
        [({"x": 1} if i == 4 else x, y) for i, (x, y) in enumerate(TINY)],
        DataError,
        r"train_data\[4\]\[0\].*got dict",
    ),
    ("rows-of-three", [(x, y, 1) for x, y in TINY], DataError, r"train_data\[0\]: expected an"),
]


@pytest.mark.parametrize(
    ("train_data", "error", "names"),
    [case[1:] for case in BROKEN_DATA],
    ids=[case[0] for case in BROKEN_DATA],
)
def test_broken_training_data_is_refused_naming_the_row(train_data, error, names):
    with pytest.raises(error, match=names):
        _fit(train_data)


def test_broken_eval_data_is_refused_naming_eval_data():
    with pytest.raises(DataError, match=r"eval_data\[0\]: the label \[0\]"):
        _fit(TINY, eval_data=_with_labels([[0]]))


def test_labels_of_two_types_that_read_differently_still_train():
    data = [(x, "other" if y == 3 else y) for x, y in TINY]  # 3 becomes 'other': no clash
    assert _fit(data).status()["status"] == "FINISHED"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    run = finetuner.fit(
        "mlp",
        TINY,
        model_options={"hidden_sizes": [16, 8]},
        epochs=1,
        batch_size=8,
        seed=0,
        runs_dir=tmp_path_factory.mktemp("runs"),
    )
    return run


@pytest.fixture(scope="module")
def model(artifact):
    return finetuner.get_model(artifact.artifact_path)


BROKEN_GET_MODEL = [
    ("artifact-none", lambda run: dict(artifact=None), r"get_model takes the path .* NoneType"),
    ("artifact-int", lambda run: dict(artifact=5), r"get_model takes the path .* int"),
    ("artifact-a-run", lambda run: dict(artifact=run), r"pass run\.artifact_path"),
    (
        "batch-size-text",
        lambda run: dict(artifact=run.artifact_path, batch_size="8"),
        r"batch_size must be an integer .* '8'",
    ),
    (
        "device-gpu",
        lambda run: dict(artifact=run.artifact_path, device="gpu"),
        r"device='gpu' is not a device",
    ),
]


@pytest.mark.parametrize(
    ("arguments", "names"),
    [case[1:] for case in BROKEN_GET_MODEL],
    ids=[case[0] for case in BROKEN_GET_MODEL],
)
def test_get_model_refuses_wrong_arguments_naming_them(artifact, arguments, names):
    options = arguments(artifact)
    with pytest.raises(ConfigError, match=names):
        finetuner.get_model(options.pop("artifact"), **options)


@pytest.mark.parametrize("name", [None, 5, ["mlp"]], ids=["none", "int", "list"])
def test_build_model_refuses_a_name_that_is_not_text(name):
    with pytest.raises(ConfigError, match=r"build_model takes a registry model name"):
        finetuner.build_model(name)


BROKEN_ENCODE = [
    ("five-features", torch.randn(4, 5), r"items have 5 features \(shape \(4, 5\)\).*takes 8"),
    ("one-item-no-batch", torch.randn(8), r"not a tensor of shape \(8,\).*x\[None\]"),
    ("three-dimensions", torch.randn(4, 2, 8), r"cannot embed tensors of shape \(2, 8\)"),
    ("numpy-of-text", np.array([["a"] * 8], dtype=object), r"numpy array of dtype object"),
    (
        "nan-rows",
        torch.stack([torch.zeros(8), torch.full((8,), NAN), torch.ones(8)]),
        r"embeddings of 1 item\(s\) \(positions 1\) are NaN",
    ),
]


@pytest.mark.parametrize(
    ("data", "names"),
    [case[1:] for case in BROKEN_ENCODE],
    ids=[case[0] for case in BROKEN_ENCODE],
)
def test_encode_refuses_data_the_model_cannot_embed(model, data, names):
    with pytest.raises(DataError, match=names):
        finetuner.encode(model, data)


def test_encode_with_a_module_of_another_input_size_names_the_shape():
    module = torch.nn.Sequential(torch.nn.Linear(8, 4))
    with pytest.raises(DataError, match=r"cannot embed tensors of shape \(3,\)"):
        finetuner.encode(module, torch.randn(2, 3))


# --- pushed data sets ---------------------------------------------------------------------------

BAD_NAMES = [
    ("trailing-newline", "tiny\n"),
    ("trailing-space", "tiny "),
    ("tab", "ti\tny"),
    ("nul", "ti\x00ny"),
    ("carriage-return", "tiny\r"),
]


@pytest.mark.parametrize("name", [n for _, n in BAD_NAMES], ids=[i for i, _ in BAD_NAMES])
def test_push_refuses_names_with_whitespace_or_control_characters(name):
    with pytest.raises(ConfigError, match=r"data set name .* is not allowed"):
        finetuner.push_data(name, TINY)
    assert not resolve_data_dir().exists() or not list(resolve_data_dir().iterdir())


def test_push_refuses_labels_that_name_no_class_naming_the_row():
    with pytest.raises(DataError, match=r"tiny\[0\]: the label \[1\]"):
        finetuner.push_data("tiny", _with_labels([[1]]))


def _damage(name, change):
    """Rewrite the stored tensors or manifest of the pushed data set *name* with *change*."""
    from safetensors.torch import load_file, save_file

    folder = resolve_data_dir() / name
    tensors = load_file(str(folder / "tensors.safetensors"))
    manifest = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    change(tensors, manifest)
    save_file(tensors, str(folder / "tensors.safetensors"))
    (folder / "dataset.json").write_text(json.dumps(manifest), encoding="utf-8")


def _code_out_of_range(tensors, manifest):
    tensors["labels"][3] = 99


def _labels_short(tensors, manifest):
    tensors["labels"] = tensors["labels"][:-1].clone()


def _negative_code(tensors, manifest):
    tensors["labels"][0] = -1


def _no_columns(tensors, manifest):
    del manifest["columns"]


def _column_tensor_gone(tensors, manifest):
    del tensors["column0"]


def _ids_short(tensors, manifest):
    manifest["ids"] = manifest["ids"][:5]


DAMAGES = [
    ("label-code-out-of-range", _code_out_of_range, r"row 3 has the label code 99.*4 classes"),
    ("negative-label-code", _negative_code, r"row 0 has the label code -1"),
    ("labels-one-short", _labels_short, r"labels has 39 rows, the data set 40"),
    ("ids-short", _ids_short, r"ids has 5 rows, the data set 40"),
    ("manifest-without-columns", _no_columns, r"missing 'columns'"),
    ("tensor-column-gone", _column_tensor_gone, r"missing 'column0'"),
]


@pytest.mark.parametrize(
    ("change", "names"),
    [case[1:] for case in DAMAGES],
    ids=[case[0] for case in DAMAGES],
)
def test_a_damaged_pushed_data_set_is_refused_when_read_back(change, names):
    finetuner.push_data("tiny", TINY)
    _damage("tiny", change)
    with pytest.raises(
        DataError, match=rf"the data set 'tiny' is damaged .*{names}.*push it again"
    ):
        _fit("tiny")


def test_a_push_that_fails_leaves_nothing_behind_and_the_old_data_set_whole():
    first = finetuner.push_data("tiny", TINY)
    root = first.parent
    # What blocks the swap of the new folder for the old: the name the old one moves to is
    # a folder that is not empty, so the rename fails half-way through the push.
    import os

    blocker = root / f".tiny.old-{os.getpid()}"
    (blocker / "keep").mkdir(parents=True)
    with pytest.raises(DataError, match=r"could not store the data set 'tiny'"):
        finetuner.push_data("tiny", make_tiny_data(seed=3), overwrite=True)
    left = sorted(p.name for p in root.iterdir() if p != blocker)
    assert left == ["tiny"]
    assert _fit("tiny").status()["status"] == "FINISHED"


def test_a_data_store_that_is_a_file_is_a_data_error_naming_it(tmp_path):
    store = tmp_path / "not-a-folder"
    store.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match=r"could not store the data set 'tiny' in .*not-a-folder"):
        finetuner.push_data("tiny", TINY, data_dir=store / "data")
