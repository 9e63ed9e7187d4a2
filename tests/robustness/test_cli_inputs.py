"""Broken inputs on the command line: config files with options that make training
meaningless, ``finetuner evaluate`` and ``finetuner mine`` arguments, names of data sets.
Each prints one clear ``error:`` line that names the place (the file and option, the flag, the
name), never ``unexpected``."""

from __future__ import annotations

import re

import pytest

import finetuner
from finetuner.testing import make_tiny_data
from robustness.cli import assert_one_clear_error


@pytest.fixture
def pushed():
    """``tiny`` (four classes of 8-feature tensors), ``unique`` (a label per item, so no query
    has a relevant document) and ``narrow`` (5 features) in this test's data store."""
    data = make_tiny_data()
    finetuner.push_data("tiny", data)
    finetuner.push_data("unique", [(x, f"item-{i}") for i, (x, _) in enumerate(data)])
    finetuner.push_data("narrow", make_tiny_data(dim=5))


def _config(tmp_path, extra: str):
    path = tmp_path / "fit.yml"
    path.write_text(
        "model: mlp\n"
        "model_options: {hidden_sizes: [8]}\n"
        "train_data: tiny\n"
        "epochs: 1\n"
        "batch_size: 8\n" + extra + "\n",
        encoding="utf-8",
    )
    return str(path)


# (id, YAML lines, what the error line must name besides the file)
BROKEN_CONFIGS = [
    ("seed-2-to-the-32", "seed: 4294967296", r"option 'seed'.*4294967295"),
    ("seed-huge", "seed: 100000000000000000000000", r"option 'seed'"),
    ("workers-100000", "num_workers: 100000", r"option 'num_workers'.*CPUs"),
    ("lr-in-optimizer-options", "optimizer_options: {lr: 1000}", r"optimizer_options.*'lr'"),
    ("optimizer-options-list", "optimizer_options: [1, 2]", r"option 'optimizer_options'"),
    ("optimizer-options-typo", "optimizer_options: {lrr: 0.1}", r"Did you mean 'lr'"),
    ("learning-rate-inf", "learning_rate: .inf", r"option 'learning_rate'.*finite"),
    ("clip-value-inf", "gradient_clip_value: .inf", r"option 'gradient_clip_value'"),
    (
        "temperature-zero",
        "loss: SupConLoss\nloss_options: {temperature: 0}",
        r"loss_options: SupConLoss option 'temperature'",
    ),
    ("margin-text", "loss_options: {margin: wide}", r"option 'margin' takes a number"),
    ("margin-nan", "loss_options: {margin: .nan}", r"option 'margin' is nan"),
    ("scale-zero", "loss: CosFaceLoss\nloss_options: {scale: 0}", r"option 'scale'"),
]


@pytest.mark.parametrize(
    ("extra", "names"),
    [case[1:] for case in BROKEN_CONFIGS],
    ids=[case[0] for case in BROKEN_CONFIGS],
)
def test_a_config_with_a_broken_option_prints_one_clear_error(
    capsys, tmp_path, pushed, extra, names
):
    line = assert_one_clear_error(capsys, ["fit", _config(tmp_path, extra)], names=names)
    assert re.match(r"error: \S*fit\.yml:\d+: ", line), line  # the file and the option's line


EVALUATE = ["evaluate", "mlp", "--query-data", "tiny"]

BROKEN_EVALUATIONS = [
    (
        "no-scorable-query",
        ["evaluate", "mlp", "--query-data", "unique"],
        r"no query could be scored",
    ),
    ("limit-beyond-memory", [*EVALUATE, "--limit", str(10**11)], r"limit=100000000000 .*GiB"),
    ("model-options-a-list", [*EVALUATE, "--model-options", "[1]"], r"--model-options"),
    ("seed-huge", [*EVALUATE, "--seed", str(2**70)], r"--seed must be from 0 to 4294967295"),
    ("seed-negative", [*EVALUATE, "--seed", "-5"], r"--seed must be from 0"),
]


@pytest.mark.parametrize(
    ("argv", "names"),
    [case[1:] for case in BROKEN_EVALUATIONS],
    ids=[case[0] for case in BROKEN_EVALUATIONS],
)
def test_evaluate_with_broken_inputs_prints_one_clear_error(capsys, pushed, argv, names):
    pytest.importorskip("finetuner_evaluation")
    assert_one_clear_error(capsys, argv, names=names)


def test_evaluate_with_query_vectors_of_another_size_names_the_sizes(capsys, pushed, tmp_path):
    pytest.importorskip("finetuner_evaluation")
    run = finetuner.fit(
        "mlp", "tiny", model_options={"hidden_sizes": [8]}, epochs=1, batch_size=8, seed=0
    )
    argv = ["evaluate", str(run.artifact_path), "--query-data", "narrow"]
    assert_one_clear_error(capsys, argv, names=r"5 features .* the model takes 8")


def test_evaluate_still_scores_scorable_queries(capsys, pushed):
    pytest.importorskip("finetuner_evaluation")
    from finetuner.cli import main

    assert main([*EVALUATE, "--json"]) == 0
    assert '"ndcg_at_k"' in capsys.readouterr().out


@pytest.fixture
def pairs(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("".join(f"query {i},document {i}\n" for i in range(12)), encoding="utf-8")
    return str(path)


def test_mine_into_a_folder_is_refused_before_mining(capsys, tmp_path, pairs):
    argv = ["mine", "no-such-model", pairs, "-o", str(tmp_path)]
    assert_one_clear_error(capsys, argv, names=r"-o/--output: .* is a folder")


def test_mine_into_a_file_that_cannot_be_written_names_it(capsys, tmp_path, pairs):
    pytest.importorskip("finetuner_fixture_plugin")
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    output = blocker / "negatives.jsonl"  # a file where a folder should be
    argv = ["mine", "fixture-trigrams", pairs, "-o", str(output), "--num-negatives", "2"]
    assert_one_clear_error(capsys, argv, names=r"-o/--output: cannot write .*negatives\.jsonl")


@pytest.mark.parametrize(
    "name", ["tiny\n", "tiny ", "ti\tny"], ids=["trailing-newline", "trailing-space", "tab"]
)
def test_data_push_refuses_a_name_with_whitespace(capsys, tmp_path, name):
    csv = tmp_path / "data.csv"
    csv.write_text("a,x\nb,y\n", encoding="utf-8")
    argv = ["data", "push", name, str(csv), "--labeled"]
    assert_one_clear_error(capsys, argv, names=r"data set name .* is not allowed")
