"""Broken and hostile config files: each is one ConfigError naming the file (and the line or
the option) from the API, and one ``error:`` line from ``finetuner fit`` before any training;
a run's ``source.yml`` is read the same way by ``finetuner resume``."""

from __future__ import annotations

import os

import pytest

from finetuner.config import load_fit_config
from finetuner.config.yamlfile import ALIAS_NODE_BUDGET, MAX_CONFIG_BYTES
from finetuner.errors import ConfigError, FinetunerError
from finetuner.runs import create_run
from finetuner.runs.layout import SOURCE_FILE
from robustness.cli import assert_one_clear_error

GOOD = "model: mlp\ntrain_data: digits-train\nepochs: 1\n"


def _laughs(levels: int = 9) -> str:
    """Nested aliases: *levels* lists of nine references each to the one before."""
    rows = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        rows.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(rows) + "\n"


def _merge_bomb() -> str:
    rows = ["m0: &m0 {k0: 1, k1: 2, k2: 3, k3: 4, k4: 5, k5: 6, k6: 7, k7: 8}"]
    for i in range(1, 8):
        refs = ", ".join(f"x{j}: *m{i - 1}" for j in range(8))
        rows.append(f"m{i}: &m{i} {{{refs}}}")
    return "\n".join(rows) + "\n"


# (case id, file content, what the message must name beyond the file)
CASES: list[tuple[str, bytes, str]] = [
    (
        "billion-laughs",
        (GOOD + _laughs()).encode(),
        rf"aliases expand to more than {ALIAS_NODE_BUDGET}",
    ),
    ("laughs-under-unknown-key", ("bogus: x\n" + _laughs()).encode(), r"aliases expand"),
    (
        "laughs-in-model-options",
        (GOOD + "model_options:\n  x: " + "\n" + _laughs().replace("\n", "\n  ")).encode(),
        r"aliases expand|:\d+",
    ),
    ("merge-key-bomb", (GOOD + _merge_bomb()).encode(), r"aliases expand"),
    (
        "duplicate-top-level-key",
        b"model: mlp\nepochs: 1\ntrain_data: digits-train\nepochs: 2\n",
        r":4: the key 'epochs' is given twice, on line 2 and line 4",
    ),
    (
        "duplicate-nested-key",
        (GOOD + "model_options:\n  hidden: 4\n  hidden: 8\n").encode(),
        r"'hidden' is given twice, on line 5 and line 6",
    ),
    (
        "duplicate-callback-option",
        (
            GOOD + "callbacks:\n  - name: early-stopping\n    patience: 1\n    patience: 2\n"
        ).encode(),
        r"'patience' is given twice, on line 6 and line 7",
    ),
    ("binary-nul-bytes", b"model: mlp\x00\x01\x02\x03\ntrain_data: x\n", r"binary file"),
    ("gzip-file", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\x00\x00", r"binary file|not UTF-8"),
    (
        "latin-1",
        "model: mlp\ntrain_data: digits-train\nrun_name: caf\xe9\n".encode("latin-1"),
        r":3: not UTF-8",
    ),
    ("utf-16", GOOD.encode("utf-16"), r"UTF-16"),
    (
        "utf-8-bom-is-fine-but-unknown-key",
        ("\ufeff" + GOOD + "epoch: 2\n").encode(),
        r":4: unknown option 'epoch'.*Did you mean 'epochs'",
    ),
    ("invalid-yaml", b"model: mlp\ntrain_data: [digits-train\nepochs: 1\n", r"not valid YAML"),
    (
        "tab-indentation",
        b"model: mlp\ntrain_data: digits-train\nmodel_options:\n\thidden: 4\n",
        r":4: not valid YAML",
    ),
    (
        "python-tag",
        b"model: !!python/object/apply:os.system ['true']\ntrain_data: x\n",
        r":1: not valid YAML",
    ),
    (
        "top-level-list",
        b"- model: mlp\n- train_data: x\n",
        r"expected a mapping of fit options.*list",
    ),
    ("top-level-scalar", b"just some words\n", r"expected a mapping of fit options.*str"),
    ("empty", b"", r"empty"),
    ("only-comments", b"# model: mlp\n\n", r"empty"),
    (
        "unknown-key",
        (GOOD + "lerning_rate: 0.1\n").encode(),
        r":4: unknown option 'lerning_rate'.*Did you mean 'learning_rate'",
    ),
    (
        "unknown-key-before-missing-data",
        b"model: mlp\ntrain_data: no/such/file.csv\nbogus: 1\n",
        r":3: unknown option 'bogus'",
    ),
    ("integer-key", (GOOD + "1: 2\n").encode(), r":4: unknown option '1'"),
    ("unhashable-key", (GOOD + "? [a, b]\n: c\n").encode(), r"not valid YAML.*unhashable"),
    (
        "deeply-nested",
        (GOOD + "model_options: " + "[" * 5000 + "]" * 5000 + "\n").encode(),
        r"nested too deeply",
    ),
    ("epochs-a-word", b"model: mlp\ntrain_data: digits-train\nepochs: three\n", r"epochs"),
    ("epochs-negative", b"model: mlp\ntrain_data: digits-train\nepochs: -1\n", r"epochs"),
    (
        "batch-size-a-list",
        b"model: mlp\ntrain_data: digits-train\nbatch_size: [1, 2]\n",
        r"batch_size",
    ),
    (
        "model-options-a-list",
        b"model: mlp\ntrain_data: digits-train\nmodel_options: [1, 2]\n",
        r"model_options",
    ),
    (
        "callbacks-a-mapping",
        (GOOD + "callbacks: {name: early-stopping}\n").encode(),
        r":4: 'callbacks' must be a list",
    ),
    (
        "callback-a-list",
        (GOOD + "callbacks:\n  - [1, 2]\n").encode(),
        r":5: a callback is a name or a mapping",
    ),
    (
        "callback-without-name",
        (GOOD + "callbacks:\n  - monitor: val_loss\n").encode(),
        r":5: a callback is a name or a mapping",
    ),
    (
        "callback-unknown",
        (GOOD + "callbacks:\n  - no-such-callback\n").encode(),
        r":5: unknown callback 'no-such-callback'",
    ),
    ("model-missing", b"train_data: digits-train\n", r"'model' is required"),
    ("model-a-number", b"model: 5\ntrain_data: digits-train\n", r"model"),
]


def _write(tmp_path, content: bytes):
    path = tmp_path / "config.yml"
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(("content", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_broken_config_file_is_one_clear_error(tmp_path, capsys, content, names):
    path = _write(tmp_path, content)
    with pytest.raises(ConfigError) as caught:
        load_fit_config(path)
    message = str(caught.value)
    assert str(path) in message, message
    assert __import__("re").search(names, message), message
    runs = tmp_path / "runs"
    assert_one_clear_error(capsys, ["fit", str(path), "--runs-dir", str(runs)], names=names)
    assert not runs.exists() or not any(runs.rglob("status.json")), "a run was started"


def test_a_folder_given_as_config_file(tmp_path, capsys):
    with pytest.raises(ConfigError, match="is a folder, not a config file"):
        load_fit_config(tmp_path)
    assert_one_clear_error(capsys, ["fit", str(tmp_path)], names="is a folder")


def test_a_missing_config_file(tmp_path, capsys):
    missing = tmp_path / "nope.yml"
    with pytest.raises(ConfigError, match="does not exist"):
        load_fit_config(missing)
    assert_one_clear_error(capsys, ["fit", str(missing)], names=r"nope\.yml.*does not exist")


def test_a_config_file_too_large(tmp_path, capsys):
    path = tmp_path / "huge.yml"
    path.write_bytes(GOOD.encode() + b"#" * MAX_CONFIG_BYTES)
    with pytest.raises(ConfigError, match="too large for a config file"):
        load_fit_config(path)
    assert_one_clear_error(capsys, ["fit", str(path)], names="huge.yml.*too large")


@pytest.mark.skipif(os.name != "posix", reason="permissions")
def test_an_unreadable_config_file(tmp_path, capsys):
    path = _write(tmp_path, GOOD.encode())
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: chmod 000 does not stop reading")
        with pytest.raises(ConfigError, match="cannot read the config file"):
            load_fit_config(path)
        assert_one_clear_error(capsys, ["fit", str(path)], names="cannot read")
    finally:
        path.chmod(0o600)


def test_a_billion_laughs_is_refused_before_it_is_expanded(tmp_path):
    """Thirty levels of aliases would be 9**30 nodes: refused from the graph, not walked."""
    path = _write(tmp_path, (GOOD + _laughs(30)).encode())
    with pytest.raises(ConfigError, match="aliases expand"):
        load_fit_config(path)


def test_aliases_within_the_budget_are_read(tmp_path):
    path = _write(tmp_path, b"model: &m mlp\ntrain_data: digits-train\nrun_name: *m\n")
    assert load_fit_config(path).run_name == "mlp"


SOURCE_CASES = [
    ("laughs", (GOOD + _laughs()).encode(), r"aliases expand"),
    ("duplicate-key", b"model: mlp\nepochs: 1\nepochs: 2\n", r"line 2 and line 3"),
    ("binary", b"\x00\x01\x02", r"binary file"),
    ("a-list", b"- 1\n- 2\n", r"expected the mapping of fit options"),
    (
        "unknown-key",
        b"model: mlp\ntrain_data: digits-train\nbogus: 1\n",
        r":3: unknown option 'bogus'",
    ),
]


@pytest.mark.parametrize(
    ("content", "names"), [c[1:] for c in SOURCE_CASES], ids=[c[0] for c in SOURCE_CASES]
)
def test_resume_reads_a_tampered_source_file_as_carefully(tmp_path, capsys, content, names):
    run = create_run({"model": "mlp"}, run_name="r1", runs_dir=tmp_path)
    (run.path / SOURCE_FILE).write_bytes(content)
    line = assert_one_clear_error(
        capsys, ["resume", "r1", "--runs-dir", str(tmp_path)], names=names
    )
    assert SOURCE_FILE in line


def test_config_errors_are_finetuner_errors():
    assert issubclass(ConfigError, FinetunerError)
