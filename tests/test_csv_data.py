"""Reading the classic CSV training-data formats: real files, real images, real errors."""

from __future__ import annotations

import csv
import io
import os
import pathlib
import time

import pytest
from PIL import Image

from finetuner.data.convert import load_dataset
from finetuner.data.csv_options import CSVOptions, is_csv_source
from finetuner.data.csv_reader import CSVTable, read_csv
from finetuner.errors import ConfigError, DataError


def _write(path: pathlib.Path, text: str, encoding: str = "utf-8") -> pathlib.Path:
    path.write_bytes(text.encode(encoding))
    return path


def _png(path: pathlib.Path) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (2, 2), (255, 0, 0)).save(path)
    return path


@pytest.fixture
def images(tmp_path):
    """Three tiny PNGs in tmp_path/img, returned as absolute path strings."""
    return [str(_png(tmp_path / "img" / f"{name}.png")) for name in ("cat", "dog", "fish")]


# --- formats -------------------------------------------------------------------------------


def test_labeled_text(tmp_path):
    path = _write(
        tmp_path / "train.csv",
        ' a cat ,animal\n\n"hello, world",greeting\n   \nred,colour\n',
    )
    table = read_csv(path, CSVOptions(is_labeled=True))
    assert table == CSVTable(
        kind="labeled",
        columns=[["a cat", "hello, world", "red"]],
        modalities=["text"],
        labels=["animal", "greeting", "colour"],
        scores=None,
        lines=[1, 3, 5],
        source=str(path),
    )
    assert len(table) == 3


def test_labeled_images_resolve_against_csv_folder(tmp_path, images, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # relative paths must not depend on the cwd
    path = _write(tmp_path / "train.csv", "img/cat.png,cat\nimg/dog.png,dog\n./img/cat.png,cat\n")
    table = read_csv(str(path), CSVOptions(is_labeled=True))
    assert table.kind == "labeled"
    assert table.modalities == ["image"]
    assert table.columns == [[images[0], images[1], images[0]]]
    assert table.labels == ["cat", "dog", "cat"]
    assert all(os.path.isabs(p) for p in table.columns[0])


def test_query_documents_grouped_and_duplicates_skipped(tmp_path):
    path = _write(
        tmp_path / "qd.csv",
        "q1,d1\nq1,d2\nq2,d3\nq2,d1\nq1,d4\nq3,q1\n",
    )
    table = read_csv(path)
    assert table.kind == "retrieval"
    assert table.columns == [
        ["q1", "q1", "q2", "q2", "q1", "q3"],
        ["d1", "d2", "d3", "d1", "d4", "q1"],
    ]
    labeled = load_dataset(path).as_labeled()
    assert labeled.kind == "labeled"
    assert labeled.modalities == ("text",)
    assert labeled.columns[0].values == ["q1", "d1", "d2", "q2", "d3", "d4", "q3"]
    # d1 keeps q1's label although it is also q2's document; q1 as a document of q3 is skipped
    assert labeled.labels.tolist() == [0, 0, 0, 1, 1, 0, 2]
    assert [i.rsplit(":", 1)[1] for i in labeled.ids] == ["1", "1", "2", "3", "3", "5", "6"]
    assert labeled.scores is None


def test_query_documents_of_images(tmp_path, images):
    path = _write(tmp_path / "qd.csv", "img/cat.png,img/dog.png\nimg/fish.png,img/dog.png\n")
    table = read_csv(path)
    assert table.kind == "retrieval"
    assert table.modalities == ["image", "image"]
    labeled = load_dataset(path).column()
    assert labeled.modalities == ("image",)
    assert labeled.columns[0].values == [images[0], images[1], images[2]]
    assert labeled.labels.tolist() == [0, 0, 1]


def test_text_image_pairs(tmp_path, images):
    path = _write(
        tmp_path / "pairs.csv",
        "a red cat,img/cat.png\na dog,img/dog.png\na red cat,img/fish.png\n",
    )
    table = read_csv(path)
    assert table.kind == "pairs"
    assert table.modalities == ["text", "image"]
    assert table.columns == [["a red cat", "a dog", "a red cat"], images]
    assert table.labels == ["0", "1", "0"]
    assert table.lines == [1, 2, 3]


def test_image_text_pairs_are_swapped_text_first(tmp_path, images):
    path = _write(tmp_path / "pairs.csv", "img/cat.png,a cat\nimg/dog.png,a dog\n")
    table = read_csv(path)
    assert table.kind == "pairs"
    assert table.modalities == ["text", "image"]
    assert table.columns == [["a cat", "a dog"], images[:2]]
    assert table.labels == ["0", "1"]


def test_mixed_column_is_text(tmp_path, images):
    # One cell of the second column is not an image, so that column is text: query,positive rows.
    path = _write(tmp_path / "qd.csv", "a cat,img/cat.png\na dog,a dog photo\n")
    table = read_csv(path)
    assert table.kind == "retrieval"
    assert table.modalities == ["text", "text"]
    assert table.columns == [["a cat", "a dog"], ["img/cat.png", "a dog photo"]]


def test_file_uris_are_percent_decoded(tmp_path):
    image = _png(tmp_path / "my pics" / "café.PNG")
    uri = image.as_uri()
    assert "%20" in uri
    path = _write(
        tmp_path / "pairs.csv", f"a cat,{uri}\na cafe,file://localhost{image.as_posix()}\n"
    )
    table = read_csv(path)
    assert table.kind == "pairs"
    assert table.columns[1] == [str(image), str(image)]


def test_stream_resolves_relative_images_against_cwd(tmp_path, images, monkeypatch):
    monkeypatch.chdir(tmp_path)
    table = read_csv(io.StringIO("a cat,img/cat.png\n"))
    assert table.columns == [["a cat"], [images[0]]]
    assert table.source == "<stream>"


def test_scored(tmp_path):
    path = _write(tmp_path / "scored.csv", "a,b,0.5\nc,d,-1e-3\ne,f, 2 \n")
    table = read_csv(path)
    assert table.kind == "scored"
    assert table.columns == [["a", "c", "e"], ["b", "d", "f"]]
    assert table.modalities == ["text", "text"]
    assert table.scores == [0.5, -0.001, 2.0]
    assert table.labels is None


def test_scored_with_images(tmp_path, images):
    path = _write(tmp_path / "scored.csv", "a cat,img/cat.png,1\na dog,img/cat.png,0\n")
    table = read_csv(path)
    assert table.kind == "scored"
    assert table.modalities == ["text", "image"]
    assert table.columns[1] == [images[0], images[0]]


def test_triplets(tmp_path):
    path = _write(tmp_path / "triplets.csv", "q,pos,neg,0.2\nq2,pos2,neg2,1\n")
    table = read_csv(path)
    assert table.kind == "triplets"
    assert table.columns == [["q", "q2"], ["pos", "pos2"], ["neg", "neg2"]]
    assert table.modalities == ["text", "text", "text"]
    assert table.scores == [0.2, 1.0]
    assert table.lines == [1, 2]


def test_text_stream_and_open_file(tmp_path):
    table = read_csv(io.StringIO("x,1\ny,2\n"), CSVOptions(is_labeled=True))
    assert table.columns == [["x", "y"]] and table.source == "<stream>"
    path = _write(tmp_path / "train.csv", "x,1\ny,2\n")
    with open(path, newline="") as f:
        table = read_csv(f, CSVOptions(is_labeled=True))
    assert table.labels == ["1", "2"]
    assert table.source == str(path)


def test_binary_stream_is_decoded_with_the_encoding():
    data = "é,ß\nü,ö\n".encode("utf-16")
    table = read_csv(io.BytesIO(data), CSVOptions(encoding="utf-16"))
    assert table.columns == [["é", "ü"], ["ß", "ö"]]
    assert table.lines == [1, 2]


def test_latin1_file_and_utf8_bom(tmp_path):
    latin = _write(tmp_path / "latin.csv", "café,boisson\n", encoding="latin-1")
    table = read_csv(latin, CSVOptions(is_labeled=True, encoding="latin-1"))
    assert table.columns == [["café"]]
    bom = _write(tmp_path / "bom.csv", "first,1\n", encoding="utf-8-sig")
    assert read_csv(bom, CSVOptions(is_labeled=True)).columns == [["first"]]


def test_size_counts_rows_before_deduplication(tmp_path):
    path = _write(tmp_path / "qd.csv", "q1,d1\n\nq1,d1\nq2,d2\nq3,d3\n")
    table = read_csv(path, CSVOptions(size=2))
    assert table.columns == [["q1", "q1"], ["d1", "d1"]]
    assert load_dataset(path, csv_options=CSVOptions(size=2)).as_labeled().columns[0].values == [
        "q1",
        "d1",
    ]
    table = read_csv(path, CSVOptions(size=3))
    assert table.columns == [["q1", "q1", "q2"], ["d1", "d1", "d2"]]
    labeled = _write(tmp_path / "l.csv", "a,1\nb,2\nc,3\n")
    assert read_csv(labeled, CSVOptions(size=2, is_labeled=True)).labels == ["1", "2"]


def test_size_stops_before_later_bad_rows(tmp_path):
    path = _write(tmp_path / "train.csv", "a,b,1\nc,d,2\nnot,a,number\n")
    assert read_csv(path, CSVOptions(size=2)).scores == [1.0, 2.0]


def test_multiline_quoted_cell_keeps_line_numbers(tmp_path):
    path = _write(tmp_path / "train.csv", 'a,"two\nlines"\nb,c\nd\n')
    with pytest.raises(DataError, match=r"train\.csv:4: expected 2 columns like the first row"):
        read_csv(path)
    table = read_csv(path, CSVOptions(size=2))
    assert table.columns == [["a", "b"], ["two\nlines", "c"]]
    assert table.lines == [1, 3]


def test_windows_line_endings(tmp_path):
    path = _write(tmp_path / "train.csv", "a,1\r\n\r\nb,2\r\n")
    table = read_csv(path, CSVOptions(is_labeled=True))
    assert table.columns == [["a", "b"]]
    assert table.labels == ["1", "2"]
    assert table.lines == [1, 3]


# --- dialects ------------------------------------------------------------------------------


@pytest.mark.parametrize("delimiter", ["\t", ";", "|", ","])
def test_dialect_auto_sniffs_the_delimiter(tmp_path, delimiter):
    texts = ["a query", "hello, world", "one, two, three", "plain", "x, y"]
    if delimiter == ",":
        texts = [f'"{t}"' if "," in t else t for t in texts]  # a comma file quotes its commas
    rows = [f"{text}{delimiter}document {i}{delimiter}0.{i}" for i, text in enumerate(texts)]
    path = _write(tmp_path / "data.txt", "\n".join(rows) + "\n")
    table = read_csv(path)
    assert table.kind == "scored"
    assert table.columns == [
        ["a query", "hello, world", "one, two, three", "plain", "x, y"],
        [f"document {i}" for i in range(5)],
    ]
    assert table.scores == [0.0, 0.1, 0.2, 0.3, 0.4]


def test_dialect_auto_on_a_long_file_uses_whole_lines(tmp_path):
    rows = [f"item number {i};label {i % 3}" for i in range(500)]
    path = _write(tmp_path / "data.csv", "\n".join(rows))
    table = read_csv(path, CSVOptions(is_labeled=True))
    assert len(table) == 500
    assert table.columns[0][-1] == "item number 499"
    assert table.labels[-1] == "label 1"


def test_explicit_dialect_is_used(tmp_path):
    path = _write(tmp_path / "data.tsv", "a, b, c\tx\nd, e, f\ty\n")
    table = read_csv(path, CSVOptions(dialect="excel-tab", is_labeled=True))
    assert table.columns == [["a, b, c", "d, e, f"]]
    with pytest.raises(DataError, match=r"data\.tsv:1: with CSVOptions\(is_labeled=True\)"):
        read_csv(path, CSVOptions(dialect="excel", is_labeled=True))


def test_dialect_subclass(tmp_path):
    class Pipes(csv.Dialect):
        delimiter = "|"
        quotechar = '"'
        doublequote = True
        skipinitialspace = False
        lineterminator = "\n"
        quoting = csv.QUOTE_MINIMAL

    path = _write(tmp_path / "data.csv", "a,b|c\n")
    table = read_csv(path, CSVOptions(dialect=Pipes, is_labeled=True))
    assert table.columns == [["a,b"]] and table.labels == ["c"]


# --- errors --------------------------------------------------------------------------------


def test_file_not_found(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataError, match=rf"eval_data: CSV file not found: {missing}"):
        read_csv(missing, name="eval_data")


def test_directory_is_not_a_file(tmp_path):
    folder = tmp_path / "data.csv"
    folder.mkdir()
    with pytest.raises(DataError, match="is not a file"):
        read_csv(folder)


@pytest.mark.parametrize("text", ["", "\n\n   \n"])
def test_empty_file(tmp_path, text):
    path = _write(tmp_path / "empty.csv", text)
    with pytest.raises(DataError, match=r"train_data: .*empty\.csv is empty.*item,label"):
        read_csv(path)


def test_wrong_column_count_names_the_line(tmp_path):
    path = _write(tmp_path / "train.csv", "a,b\nc,d\n\nc,d\ne,f\n\ng,h,i\n")
    with pytest.raises(
        DataError, match=r"train\.csv:7: expected 2 columns like the first row \(line 1\), found 3"
    ):
        read_csv(path)


def test_invalid_bytes_name_the_line_and_the_encoding_option(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b"a,1\nb,2\ncaf\xe9,3\nd,4\n")
    with pytest.raises(
        DataError, match=r"train\.csv:3: bytes b'\\xe9' are not valid utf-8.*CSVOptions\(encoding="
    ):
        read_csv(path, CSVOptions(is_labeled=True))


def test_invalid_bytes_at_end_of_file(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b"a,1\nb,\xc3")  # truncated two-byte character, no final newline
    with pytest.raises(DataError, match=r"train\.csv:2: .*not valid utf-8"):
        read_csv(path, CSVOptions(is_labeled=True))


@pytest.mark.parametrize(
    ("row", "what", "value"),
    [
        ("a,b,high", "score", "'high'"),
        ("a,b,nan", "score", "'nan'"),
        ("q,p,n,inf", "margin", "'inf'"),
    ],
)
def test_score_or_margin_not_a_number(tmp_path, row, what, value):
    width = row.count(",") + 1
    good = ",".join(["x"] * (width - 1) + ["1"])
    path = _write(tmp_path / "train.csv", f"{good}\n{good}\n{row}\n")
    with pytest.raises(DataError, match=rf"train\.csv:3: the {what} in column {width} is {value}"):
        read_csv(path)


def test_empty_score_is_not_a_number(tmp_path):
    path = _write(tmp_path / "train.csv", "a,b,1\nc,d,\n")
    with pytest.raises(DataError, match=r"train\.csv:2: column 3 is empty"):
        read_csv(path)


def test_missing_image_file(tmp_path, images):
    path = _write(tmp_path / "train.csv", "img/cat.png,cat\nimg/cow.png,cow\n")
    expected = str(tmp_path / "img" / "cow.png")
    with pytest.raises(DataError, match=r"train\.csv:2: image file not found: .*cow\.png") as info:
        read_csv(path, CSVOptions(is_labeled=True))
    assert expected in str(info.value)


def test_remote_images_are_not_fetched(tmp_path):
    path = _write(tmp_path / "train.csv", "https://example.com/cat.jpg,a cat\n")
    with pytest.raises(DataError, match=r"train\.csv:1: .*remote image.*Download the files"):
        read_csv(path)


def test_file_uri_with_a_host(tmp_path):
    path = _write(tmp_path / "train.csv", "file://server/share/cat.png,cat\n")
    with pytest.raises(DataError, match=r"train\.csv:1: .*host 'server'"):
        read_csv(path, CSVOptions(is_labeled=True))


@pytest.mark.parametrize("row", ["only-an-item", "a,b,c", "a,b,c,d"])
def test_labeled_needs_two_columns(tmp_path, row):
    path = _write(tmp_path / "train.csv", f"\n{row}\n")
    found = row.count(",") + 1
    with pytest.raises(
        DataError, match=rf"train\.csv:2: with CSVOptions\(is_labeled=True\).*found {found}"
    ):
        read_csv(path, CSVOptions(is_labeled=True))


@pytest.mark.parametrize(
    ("row", "found"), [("just text", "found 1 column"), ("a,b,c,d,5", "5 columns whose last")]
)
def test_unknown_column_count_lists_the_formats(tmp_path, row, found):
    path = _write(tmp_path / "train.csv", f"{row}\n{row}\n")
    with pytest.raises(DataError, match=rf"train\.csv:1: {found}.*item,label.*margin"):
        read_csv(path)


def test_empty_item_cell(tmp_path):
    path = _write(tmp_path / "train.csv", "q,d\nq2,  \n")
    with pytest.raises(DataError, match=r"train\.csv:2: column 2 is empty"):
        read_csv(path)


def test_empty_label(tmp_path):
    path = _write(tmp_path / "train.csv", "a,1\nb,\n")
    with pytest.raises(DataError, match=r"train\.csv:2: column 2 is empty; every label"):
        read_csv(path, CSVOptions(is_labeled=True))


def test_unparsable_row_names_the_line(tmp_path):
    class Strict(csv.excel):
        strict = True

    path = _write(tmp_path / "train.csv", 'a,1\n"b"c,2\n')
    with pytest.raises(DataError, match=r"train\.csv:2: cannot parse the row: .*expected"):
        read_csv(path, CSVOptions(dialect=Strict, is_labeled=True))


def test_not_a_source():
    with pytest.raises(DataError, match="cannot read CSV from int"):
        read_csv(42)  # type: ignore[arg-type]


# --- options and helpers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"size": 0}, r"size=0.*>= 1"),
        ({"size": -3}, r"size=-3"),
        ({"size": True}, r"size=True"),
        ({"size": 2.5}, r"size=2\.5"),
        ({"dialect": "excel_tab"}, r"unknown dialect.*Did you mean 'excel-tab'"),
        ({"dialect": 5}, r"csv\.Dialect subclass"),
        ({"dialect": csv.Sniffer}, r"csv\.Dialect subclass"),
        ({"encoding": "utf-9"}, r"encoding='utf-9'.*no such codec"),
        ({"encoding": None}, r"codec name"),
        ({"is_labeled": "yes"}, r"is_labeled must be True or False"),
    ],
)
def test_options_are_validated(options, expected):
    with pytest.raises(ConfigError, match=expected):
        CSVOptions(**options)


def test_valid_options():
    options = CSVOptions(size=1, dialect="unix", encoding="latin-1", is_labeled=True)
    assert options.size == 1
    assert CSVOptions(dialect=csv.excel_tab).dialect is csv.excel_tab
    with pytest.raises(AttributeError):
        options.size = 2  # type: ignore[misc]


def test_is_csv_source(tmp_path):
    assert is_csv_source("train.csv")
    assert is_csv_source("data/TRAIN.TSV")
    assert is_csv_source(tmp_path / "x.Csv")
    assert is_csv_source(io.StringIO(""))
    assert not is_csv_source("train.json")
    assert not is_csv_source("clinc150")
    assert not is_csv_source(tmp_path)
    assert not is_csv_source([("a", 1)])
    assert not is_csv_source(None)


def test_large_file_reads_in_linear_time(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("".join(f"query {i % 1000},document {i}\n" for i in range(100_000)))
    start = time.perf_counter()
    table = read_csv(path)
    elapsed = time.perf_counter() - start
    assert len(table.columns[0]) == 100_000
    assert len(load_dataset(path).as_labeled()) == 101_000
    assert elapsed < 5, f"100k rows took {elapsed:.1f}s"
