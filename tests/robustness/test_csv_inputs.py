"""Broken CSV training data: each is one DataError naming the file and the line from
``read_csv``, and one ``error:`` line from ``finetuner fit`` before any training."""

from __future__ import annotations

import os
import re

import pytest
import yaml

from finetuner.data import CSVOptions
from finetuner.data.csv_reader import read_csv
from finetuner.errors import DataError
from robustness.cli import assert_one_clear_error

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"

# (case id, file content, labeled, what the message must name after the file name)
CASES: list[tuple[str, bytes, bool, str]] = [
    (
        "latin-1-as-utf-8",
        "a,b\ncaf\xe9,d\n".encode("latin-1"),
        False,
        r":2: bytes b'\\xe9' are not valid utf-8",
    ),
    (
        "cp1252-quotes",
        "a,b\n\u201cquoted\u201d,d\n".encode("cp1252"),
        False,
        r":2: bytes .* not valid utf-8",
    ),
    ("utf-16-with-bom", "a,b\nc,d\n".encode("utf-16"), False, r":1: bytes .* not valid utf-8"),
    (
        "utf-16-without-bom",
        "a,b\nc,d\n".encode("utf-16-le"),
        False,
        r":1: the line holds a NUL byte",
    ),
    ("truncated-utf-8", b"a,b\nc,d\xc3", False, r":2: bytes b'\\xc3' are not valid utf-8"),
    ("nul-byte", b"a,b\nc\x00,d\n", False, r":2: the line holds a NUL byte"),
    ("png-as-csv", PNG, False, r":\d+: (the line holds a NUL byte|bytes .* not valid)"),
    (
        "gzip-as-csv",
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xcbH\xcd\xc9\xc9\x07\x00",
        False,
        r":1: bytes .* not valid utf-8",
    ),
    (
        "bom-then-ragged",
        b"\xef\xbb\xbfa,b\nc,d,e\n",
        False,
        r":2: expected 2 columns like the first row \(line 1\), found 3",
    ),
    (
        "ragged-rows",
        b"a,b\nc,d\ne,f,g\n",
        False,
        r":3: expected 2 columns like the first row \(line 1\), found 3",
    ),
    ("ragged-short-row", b"a,b,c\nd,e\n", False, r":2: expected 3 columns"),
    ("mixed-delimiters", b"a;b\nc,d\n", False, r":1: found 1 column"),
    ("one-column", b"a\nb\nc\n", False, r":1: found 1 column"),
    (
        "unbalanced-quote-at-end",
        b'a,b\nc,"d\ne,f\n',
        False,
        r":2: cannot parse the row: a quoted cell that starts on line 2 is never closed",
    ),
    (
        "unbalanced-quote-first-row",
        b'"a,b\nc,d\n',
        False,
        r":1: cannot parse the row: a quoted cell .* never closed",
    ),
    (
        "lone-carriage-returns",
        b"a,b\rc,d\re,f\r",
        False,
        r":1: cannot parse the row: .*lone carriage return",
    ),
    (
        "huge-field",
        b"a," + b"x" * 200_000 + b"\n",
        False,
        r":1: cannot parse the row: field larger than field limit",
    ),
    ("empty-file", b"", False, r" is empty"),
    ("only-blank-lines", b"\n\n  \n\n", False, r" is empty"),
    ("only-a-bom", b"\xef\xbb\xbf", False, r" is empty"),
    ("empty-cell", b"a,b\n,d\n", False, r":2: column 1 is empty"),
    ("whitespace-cell", b"a,b\nc,   \n", False, r":2: column 2 is empty"),
    (
        "labeled-three-columns",
        b"a,1,x\n",
        True,
        r":1: with CSVOptions\(is_labeled=True\) each row is item,label \(2 columns\), found 3",
    ),
    ("labeled-one-column", b"a\nb\n", True, r":1: with CSVOptions\(is_labeled=True\) .* found 1"),
    (
        "labeled-empty-label",
        b"a,1\nb,\n",
        True,
        r":2: column 2 is empty; every label needs a value",
    ),
    ("labeled-label-only-spaces", b"a,1\nb,  \n", True, r":2: column 2 is empty; every label"),
    (
        "score-a-word-later",
        b"a,b,0.5\nc,d,high\n",
        False,
        r":2: the score in column 3 is 'high', not a finite number",
    ),
    ("score-infinite", b"a,b,0.5\nc,d,inf\n", False, r":2: the score in column 3 is 'inf'"),
    ("margin-nan", b"q,p,n,0.2\nq2,p2,n2,nan\n", False, r":2: the margin in column 4 is 'nan'"),
    (
        "five-columns-numeric-last",
        b"a,b,c,d,1\ne,f,g,h,2\n",
        False,
        r":1: 5 columns whose last holds numbers",
    ),
    ("missing-image", b"photo.png,a caption\n", False, r":1: image file not found"),
]


def _config(tmp_path, data, labeled: bool):
    config = tmp_path / "fit.yml"
    options = {"model": "mlp", "train_data": str(data), "epochs": 1}
    if labeled:
        options["csv_options"] = {"is_labeled": True}
    config.write_text(yaml.safe_dump(options))
    return config


@pytest.mark.parametrize(
    ("content", "labeled", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_broken_csv_data_is_one_clear_error(tmp_path, capsys, content, labeled, names):
    path = tmp_path / "train.csv"
    path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        read_csv(path, CSVOptions(is_labeled=labeled))
    message = str(caught.value)
    assert str(path) in message, message
    assert re.search(names, message), message
    runs = tmp_path / "runs"
    assert_one_clear_error(
        capsys,
        ["fit", str(_config(tmp_path, path, labeled)), "--runs-dir", str(runs)],
        names=re.escape(str(path)) + names,
    )


def test_a_folder_given_as_csv_file(tmp_path, capsys):
    folder = tmp_path / "train.csv"
    folder.mkdir()
    with pytest.raises(DataError, match=r"train\.csv is not a file"):
        read_csv(folder)
    assert_one_clear_error(
        capsys, ["fit", str(_config(tmp_path, folder, False))], names=r"train\.csv is not a file"
    )


def test_a_missing_csv_file(tmp_path, capsys):
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataError, match=r"CSV file not found: .*nope\.csv"):
        read_csv(missing)
    assert_one_clear_error(
        capsys, ["fit", str(_config(tmp_path, missing, False))], names=r"nope\.csv"
    )


@pytest.mark.skipif(os.name != "posix", reason="permissions")
def test_an_unreadable_csv_file(tmp_path, capsys):
    path = tmp_path / "train.csv"
    path.write_bytes(b"a,b\nc,d\n")
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: chmod 000 does not stop reading")
        with pytest.raises(DataError, match=r"cannot read the CSV file .*train\.csv"):
            read_csv(path)
        assert_one_clear_error(
            capsys, ["fit", str(_config(tmp_path, path, False))], names="cannot read"
        )
    finally:
        path.chmod(0o600)


def test_a_wrong_encoding_option_names_the_codec(tmp_path):
    with pytest.raises(Exception, match="no such codec") as caught:
        CSVOptions(encoding="utf-9")
    assert isinstance(caught.value, (DataError, ValueError))


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (b"\xef\xbb\xbfa,1\nb,2\n", "labeled"),  # a UTF-8 byte order mark is skipped
        (b"a,1\r\nb,2\r\n", "labeled"),  # Windows line ends
        (b'"multi\nline",1\nb,2\n', "labeled"),  # a quoted cell across lines
    ],
)
def test_what_looks_odd_but_is_valid_reads(tmp_path, content, kind):
    path = tmp_path / "train.csv"
    path.write_bytes(content)
    table = read_csv(path, CSVOptions(is_labeled=True))
    assert table.kind == kind and table.labels == ["1", "2"]
    assert not any("\ufeff" in cell for cell in table.columns[0])
