"""Training data from CSV files in the classic formats, read into a :class:`CSVTable`.

The files have no header row. Their shape is told by the number of columns:

* ``item,label`` with ``CSVOptions(is_labeled=True)``: labeled items;
* ``query,positive`` (both text or both images): retrieval data without negatives;
* ``text,image`` (one column of each): text-image pairs;
* ``a,b,score`` (3 columns, the last all numbers): scored pairs;
* ``query,positive,negative,margin`` (4 columns, the last all numbers): triplets;
* ``query,positive,negative_1,...,negative_k`` (3 or more columns, the last holding texts):
  retrieval data with *k* negatives.

A last column of numbers with a text further down is a typo in a score, an error naming its
line, when the first row's last cell is a number; otherwise the column is text.

A column whose every cell is an image reference (a local path with an image suffix, or a
``file://`` URI) holds images. References become absolute local paths, checked for existence;
the images themselves are loaded later, lazily.

The options live in :mod:`finetuner.data.csv_options` and image references in
:mod:`finetuner.data.image_references`; this module re-exports their names, so it is also what
the old path ``finetuner.csv_data`` gives.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, TextIO, cast

from ..errors import DataError
from .csv_options import CSV_SUFFIXES as CSV_SUFFIXES
from .csv_options import CSVOptions, as_csv_options, is_csv_source
from .image_references import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS
from .image_references import ImageResolver, is_image_reference, resolve_image_reference
from .label_hint import warn_if_labels

__all__ = [
    "CSVOptions",
    "CSVTable",
    "as_csv_options",
    "is_csv_source",
    "is_image_reference",
    "read_csv",
    "resolve_image_reference",
]

SNIFF_SAMPLE_CHARS = 1024
SNIFF_DELIMITERS = ",\t;|"

_FORMATS_HINT = (
    "CSV training data has no header row and one of these forms: item,label (2 columns, with "
    "CSVOptions(is_labeled=True)); query,positive or text,image (2 columns); a,b,score "
    "(3 columns, a number last); query,positive,negative,margin (4 columns, a number last); "
    "query,positive,negative_1,...,negative_k (3 or more columns, texts last)"
)


@dataclass
class CSVTable:
    """The rows of a CSV file, column by column.

    ``kind`` is ``'labeled'`` (one column of items, ``labels`` one per item), ``'pairs'``
    (texts, images; ``labels`` shared by rows with an equal text), ``'scored'`` (two item
    columns, ``scores``), ``'triplets'`` (query, positive, negative; ``scores`` are the
    margins) or ``'retrieval'`` (query, positive, negatives; ``labels`` shared by rows with an
    equal query). ``modalities`` says ``'text'`` or ``'image'`` per column; image cells are absolute
    local paths. ``lines`` holds the 1-based source line of each row.
    """

    kind: str
    columns: list[list[str]]
    modalities: list[str]
    labels: list[str] | None
    scores: list[float] | None
    lines: list[int]
    source: str

    def __len__(self) -> int:
        return len(self.lines)


def read_csv(
    source: str | os.PathLike[str] | TextIO | BinaryIO,
    options: CSVOptions | None = None,
    *,
    name: str = "train_data",
) -> CSVTable:
    """Read training data from a CSV file path or an open stream into a :class:`CSVTable`.

    Binary streams are decoded with ``options.encoding``. Raises
    :class:`~finetuner.errors.DataError` naming the file and line of anything unusable.
    """
    options = options or CSVOptions()
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise DataError(f"{name}: CSV file not found: {path}. Check the path.")
        if not os.path.isfile(path):
            raise DataError(f"{name}: {path} is not a file; pass the path of a CSV file.")
        base_dir = os.path.dirname(os.path.abspath(path))
        try:
            raw = open(path, "rb")
        except OSError as exc:
            raise DataError(f"{name}: cannot read the CSV file {path}: {exc.strerror}.") from None
        with raw:
            return _read(raw, path, base_dir, options, name)
    if not callable(getattr(source, "read", None)):
        raise DataError(
            f"{name}: cannot read CSV from {type(source).__name__}; pass a file path or an "
            "open file."
        )
    stream_name = getattr(source, "name", None)
    display = stream_name if isinstance(stream_name, str) else "<stream>"
    return _read(source, display, os.getcwd(), options, name)


class _DecodedLines:
    """Text lines of a file, decoded as they are read, counting lines for error messages."""

    def __init__(self, lines: Iterable[str | bytes], encoding: str, source: str):
        self._lines = lines
        self._encoding = encoding
        self._source = source
        self.count = 0

    def __iter__(self) -> Iterator[str]:
        lines = iter(self._lines)
        first = next(lines, None)
        if first is None:
            return
        lines = itertools.chain([first], lines)
        if isinstance(first, str):
            decoded = self._text(cast(Iterator[str], lines))
        else:
            decoded = self._decode(cast(Iterator[bytes], lines))
        for line in decoded:
            if "\x00" in line:
                raise DataError(
                    f"{self._source}:{self.count}: the line holds a NUL byte: this is a binary "
                    f"file, or text in another encoding than {self._encoding} (UTF-16?). Pass "
                    "the file's encoding, e.g. CSVOptions(encoding='utf-16'), or save it as UTF-8."
                )
            yield line

    def _text(self, lines: Iterator[str]) -> Iterator[str]:
        for line in lines:
            if self.count == 0:
                line = line.removeprefix("\ufeff")
            self.count += 1
            yield line

    def _decode(self, chunks: Iterator[bytes]) -> Iterator[str]:
        # Chunks end at b"\n"; in UTF-16/32 that byte may fall inside a character, so decoded
        # text is re-split at real newlines rather than trusted chunk by chunk.
        decoder = codecs.getincrementaldecoder(self._encoding)(errors="strict")
        pending = ""
        for chunk in chunks:
            try:
                text = decoder.decode(chunk)
            except UnicodeError as exc:
                raise self._decode_error(exc) from None
            if self.count == 0 and not pending:
                text = text.removeprefix("\ufeff")
            if "\n" not in text:
                pending += text
                continue
            parts = (pending + text).split("\n")
            pending = parts.pop()
            for part in parts:
                self.count += 1
                yield part + "\n"
        try:
            pending += decoder.decode(b"", final=True)
        except UnicodeError as exc:
            raise self._decode_error(exc) from None
        if pending:
            self.count += 1
            yield pending

    def _decode_error(self, exc: UnicodeError) -> DataError:
        # UTF-16 and UTF-32 raise a bare UnicodeError for a stream without a byte order mark
        if isinstance(exc, UnicodeDecodeError):
            bad = f"bytes {exc.object[exc.start : exc.end]!r} are"
            reason = exc.reason.replace("unexpected end of data", "the file ends mid-character")
        else:
            bad, reason = "the text is", str(exc)
        return DataError(
            f"{self._source}:{self.count + 1}: {bad} not valid {self._encoding} "
            f"({reason}). Pass the file's encoding, e.g. CSVOptions(encoding='cp1252') or "
            "CSVOptions(encoding='latin-1'), or save the file as UTF-8."
        )


def _choose_dialect(
    lines: Iterator[str], dialect: str | type[csv.Dialect]
) -> tuple[Iterator[str], str | type[csv.Dialect]]:
    if dialect != "auto":
        return lines, dialect
    head: list[str] = []
    chars = 0
    for line in lines:
        head.append(line)
        chars += len(line)
        if chars >= SNIFF_SAMPLE_CHARS:
            break
    try:
        sniffed: str | type[csv.Dialect] = csv.Sniffer().sniff(
            "".join(head), delimiters=SNIFF_DELIMITERS
        )
    except csv.Error:
        sniffed = "excel"
    return itertools.chain(head, lines), sniffed


def _read(
    stream: Iterable[Any], source: str, base_dir: str, options: CSVOptions, name: str
) -> CSVTable:
    decoded = _DecodedLines(stream, options.encoding, source)
    lines, dialect = _choose_dialect(iter(decoded), options.dialect)
    columns, row_lines = _read_rows(lines, dialect, source, options)
    if not columns:
        raise DataError(
            f"{name}: {source} is empty (no rows, or only blank lines). {_FORMATS_HINT}."
        )
    return _table(columns, row_lines, source, base_dir, options)


def _read_rows(
    lines: Iterator[str], dialect: str | type[csv.Dialect], source: str, options: CSVOptions
) -> tuple[list[list[str]], list[int]]:
    """The non-blank rows (at most ``options.size``) column by column, and the line each row
    starts on. Every row must be as wide as the first and have no empty cell."""
    # strict: a quote left open runs to the end of the file, silently swallowing the rows
    # after it, unless the reader is told to refuse it
    reader = csv.reader(lines, dialect, strict=True)
    columns: list[list[str]] = []
    row_lines: list[int] = []
    first_line = 0
    while options.size is None or len(row_lines) < options.size:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(_parse_problem(exc, source, line, reader.line_num)) from None
        cells = [cell.strip() for cell in row]
        if not cells or cells == [""]:
            continue
        if not columns:
            first_line = line
            _check_width(len(cells), options, source, line)
            columns = [[] for _ in cells]
        elif len(cells) != len(columns):
            raise DataError(
                f"{source}:{line}: expected {len(columns)} columns like the first row "
                f"(line {first_line}), found {len(cells)}. Every row needs the same columns; "
                "quote cells that contain the delimiter."
            )
        for i, cell in enumerate(cells):
            if not cell:
                what = "label" if options.is_labeled and i == 1 else "cell"
                raise DataError(
                    f"{source}:{line}: column {i + 1} is empty; every {what} needs a value."
                )
            columns[i].append(cell)
        row_lines.append(line)
    return columns, row_lines


def _parse_problem(exc: csv.Error, source: str, start: int, line: int) -> str:
    """What the csv module's error *exc* means, for the row starting on line *start*."""
    text = str(exc)
    if "end of data" in text:
        return (
            f"{source}:{start}: cannot parse the row: a quoted cell that starts on line {start} "
            "is never closed (the file ends inside it). Close the quote, and double quotes "
            'inside a cell ("").'
        )
    hint = {
        "expected after": 'quote the whole cell and double the quotes inside it ("")',
        "new-line character": "the lines end in a lone carriage return (\\r); save the file "
        "with \\n or \\r\\n line ends",
        "field larger": "a cell is longer than 131072 characters; is a quote left open?",
    }
    found = next((h for key, h in hint.items() if key in text), None)
    return f"{source}:{line}: cannot parse the row: {text}" + (f"; {found}." if found else ".")


def _table(
    columns: list[list[str]], row_lines: list[int], source: str, base_dir: str, options: CSVOptions
) -> CSVTable:
    """The table the rows form, told by their number of columns (see the module docstring)."""
    width = len(columns)
    scores = None
    numeric = None if options.is_labeled else _numeric_last(columns, row_lines, source)
    if numeric is not None:
        scores = _parse_numbers(columns.pop(), row_lines, source, numeric, numeric_col=width)
    labels = columns.pop() if options.is_labeled else None

    resolver = ImageResolver(source, base_dir)
    modalities = []
    for column in columns:
        if all(is_image_reference(cell) for cell in column):
            modalities.append("image")
            column[:] = [resolver.resolve(cell, line) for cell, line in zip(column, row_lines)]
        else:
            modalities.append("text")

    if options.is_labeled:
        return CSVTable("labeled", columns, modalities, labels, None, row_lines, source)
    if width == 2 and modalities[0] != modalities[1]:
        if modalities[0] == "image":
            columns.reverse()
            modalities.reverse()
        return CSVTable(
            "pairs", columns, modalities, _group_labels(columns[0]), None, row_lines, source
        )
    if numeric is None:
        if width == 2 and modalities == ["text", "text"]:
            warn_if_labels(columns[0], columns[1], source)
        labels = _group_labels(columns[0])
        return CSVTable("retrieval", columns, modalities, labels, None, row_lines, source)
    kind = "scored" if width == 3 else "triplets"
    return CSVTable(kind, columns, modalities, None, scores, row_lines, source)


def _numeric_last(columns: list[list[str]], lines: list[int], source: str) -> str | None:
    """``'score'`` or ``'margin'`` when the last of 3 or 4 columns holds numbers (its first
    cell is one), ``None`` when it holds texts: the negatives of retrieval rows."""
    width = len(columns)
    if width < 3 or not _is_number(columns[-1][0]):
        return None
    if width > 4:
        if all(_is_number(cell) for cell in columns[-1]):
            raise DataError(
                f"{source}:{lines[0]}: {width} columns whose last holds numbers; {_FORMATS_HINT}."
            )
        return None
    return "score" if width == 3 else "margin"


def _is_number(cell: str) -> bool:
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return False


def _check_width(width: int, options: CSVOptions, source: str, line: int) -> None:
    if options.is_labeled:
        if width != 2:
            raise DataError(
                f"{source}:{line}: with CSVOptions(is_labeled=True) each row is item,label "
                f"(2 columns), found {width}. Quote items that contain the delimiter."
            )
    elif width < 2:
        raise DataError(
            f"{source}:{line}: found 1 column. {_FORMATS_HINT}. If the delimiter was "
            "guessed wrong, pass CSVOptions(dialect='excel') or 'excel-tab'."
        )


def _parse_numbers(
    column: list[str], lines: list[int], source: str, what: str, numeric_col: int
) -> list[float]:
    numbers = []
    for cell, line in zip(column, lines):
        try:
            number = float(cell)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise DataError(
                f"{source}:{line}: the {what} in column {numeric_col} is {cell!r}, not a finite "
                f"number. The last column of a {numeric_col}-column file whose first row ends "
                f"in a number is the {what}, e.g. 0.5 (a last column of texts makes the rows "
                "query,positive,negative...)."
            )
        numbers.append(number)
    return numbers


def _group_labels(keys: list[str]) -> list[str]:
    label_of: dict[str, str] = {}
    return [label_of.setdefault(key, str(len(label_of))) for key in keys]
