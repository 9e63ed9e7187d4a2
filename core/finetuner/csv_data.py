"""Training data from CSV files in the classic formats, read into a :class:`CSVTable`.

The files have no header row. Their shape is told by the number of columns:

* ``item,label`` with ``CSVOptions(is_labeled=True)``: labeled items;
* ``query,document`` (both text or both images): each query and its documents form one class;
* ``text,image`` (one column of each): text-image pairs;
* ``a,b,score``: scored pairs;
* ``query,positive,negative,margin``: triplets.

A column whose every cell is an image reference (a local path with an image suffix, or a
``file://`` URI) holds images. References become absolute local paths, checked for existence;
the images themselves are loaded later, lazily.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, TextIO, cast
from urllib.parse import urlsplit
from urllib.request import url2pathname

from .errors import ConfigError, DataError, close_matches_hint

__all__ = [
    "CSVOptions",
    "CSVTable",
    "as_csv_options",
    "is_csv_source",
    "is_image_reference",
    "read_csv",
    "resolve_image_reference",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
CSV_SUFFIXES = (".csv", ".tsv")
SNIFF_SAMPLE_CHARS = 1024
SNIFF_DELIMITERS = ",\t;|"

_FORMATS_HINT = (
    "CSV training data has no header row and one of these forms: item,label (2 columns, with "
    "CSVOptions(is_labeled=True)); query,document or text,image (2 columns); a,b,score "
    "(3 columns); query,positive,negative,margin (4 columns)"
)


@dataclass(frozen=True)
class CSVOptions:
    """How to read a CSV file of training data.

    ``size`` caps the number of rows read (``None``: all). ``dialect`` is ``'auto'`` (sniffed
    from the start of the file, falling back to ``'excel'``), the name of a registered
    :mod:`csv` dialect (``'excel'``, ``'excel-tab'``, ``'unix'``) or a :class:`csv.Dialect`
    subclass. ``is_labeled`` says the rows are ``item,label``.
    """

    size: int | None = None
    dialect: str | type[csv.Dialect] = "auto"
    encoding: str = "utf-8"
    is_labeled: bool = False

    def __post_init__(self) -> None:
        if self.size is not None and (
            isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1
        ):
            raise ConfigError(
                f"CSVOptions(size={self.size!r}): size must be a whole number >= 1, "
                "or None to read every row."
            )
        if isinstance(self.dialect, str):
            names = ["auto", *csv.list_dialects()]
            if self.dialect not in names:
                raise ConfigError(
                    f"CSVOptions(dialect={self.dialect!r}): unknown dialect; use one of "
                    f"{', '.join(repr(n) for n in names)} or a csv.Dialect subclass."
                    + close_matches_hint(self.dialect, names)
                )
        elif not (isinstance(self.dialect, type) and issubclass(self.dialect, csv.Dialect)):
            raise ConfigError(
                f"CSVOptions(dialect={self.dialect!r}): dialect must be 'auto', a dialect name "
                "such as 'excel' or 'excel-tab', or a csv.Dialect subclass."
            )
        if not isinstance(self.encoding, str):
            raise ConfigError(
                f"CSVOptions(encoding={self.encoding!r}): encoding must be a codec name "
                "such as 'utf-8' or 'latin-1'."
            )
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ConfigError(
                f"CSVOptions(encoding={self.encoding!r}): Python knows no such codec; use a "
                "name such as 'utf-8', 'utf-16', 'latin-1' or 'cp1252'."
            ) from None
        if not isinstance(self.is_labeled, bool):
            raise ConfigError(
                f"CSVOptions(is_labeled={self.is_labeled!r}): is_labeled must be True or False."
            )


@dataclass
class CSVTable:
    """The rows of a CSV file, column by column.

    ``kind`` is ``'labeled'`` (one column of items, ``labels`` one per item), ``'pairs'``
    (texts, images; ``labels`` shared by rows with an equal text), ``'scored'`` (two item
    columns, ``scores``) or ``'triplets'`` (query, positive, negative; ``scores`` are the
    margins). ``modalities`` says ``'text'`` or ``'image'`` per column; image cells are absolute
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


def as_csv_options(value: Any) -> CSVOptions | None:
    """*value* as :class:`CSVOptions`: one already, a mapping of its fields, or ``None``."""
    if value is None or isinstance(value, CSVOptions):
        return value
    if isinstance(value, Mapping):
        fields = set(CSVOptions.__dataclass_fields__)
        unknown = sorted(set(value) - fields)
        if unknown:
            raise ConfigError(
                f"csv_options: unknown option '{unknown[0]}'; options are "
                f"{', '.join(sorted(fields))}.{close_matches_hint(unknown[0], fields)}"
            )
        return CSVOptions(**value)
    raise ConfigError(
        f"csv_options: expected CSVOptions(...) or a mapping, got {type(value).__name__}."
    )


def is_csv_source(value: Any) -> bool:
    """Whether *value* names a CSV file (``.csv``/``.tsv`` path) or is an open stream."""
    if isinstance(value, str | os.PathLike):
        path = os.fspath(value)
        return isinstance(path, str) and path.lower().endswith(CSV_SUFFIXES)
    return callable(getattr(value, "read", None))


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
        with open(path, "rb") as raw:
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
            yield from self._text(cast(Iterator[str], lines))
        else:
            yield from self._decode(cast(Iterator[bytes], lines))

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
            except UnicodeDecodeError as exc:
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
        except UnicodeDecodeError as exc:
            raise self._decode_error(exc) from None
        if pending:
            self.count += 1
            yield pending

    def _decode_error(self, exc: UnicodeDecodeError) -> DataError:
        bad = exc.object[exc.start : exc.end]
        return DataError(
            f"{self._source}:{self.count + 1}: bytes {bad!r} are not valid {self._encoding} "
            f"({exc.reason}). Pass the file's encoding, e.g. CSVOptions(encoding='cp1252') or "
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
    reader = csv.reader(lines, dialect)

    columns: list[list[str]] = []
    row_lines: list[int] = []
    width = 0
    first_line = 0
    while options.size is None or len(row_lines) < options.size:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(f"{source}:{reader.line_num}: cannot parse the row: {exc}.") from None
        cells = [cell.strip() for cell in row]
        if not cells or cells == [""]:
            continue
        if not width:
            width, first_line = len(cells), line
            _check_width(width, options, source, line)
            columns = [[] for _ in range(width)]
        elif len(cells) != width:
            raise DataError(
                f"{source}:{line}: expected {width} columns like the first row "
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
    if not width:
        raise DataError(
            f"{name}: {source} is empty (no rows, or only blank lines). {_FORMATS_HINT}."
        )

    scores = None
    numeric = None if options.is_labeled else {3: "score", 4: "margin"}.get(width)
    if numeric is not None:
        scores = _parse_numbers(columns.pop(), row_lines, source, numeric, numeric_col=width)
    labels = columns.pop() if options.is_labeled else None

    resolver = _ImageResolver(source, base_dir)
    modalities = []
    for column in columns:
        if all(_is_image_reference(cell) for cell in column):
            modalities.append("image")
            column[:] = [resolver.resolve(cell, line) for cell, line in zip(column, row_lines)]
        else:
            modalities.append("text")

    if options.is_labeled:
        return CSVTable("labeled", columns, modalities, labels, None, row_lines, source)
    if width == 2 and modalities[0] == modalities[1]:
        return _query_documents(columns, modalities[0], row_lines, source)
    if width == 2:
        if modalities[0] == "image":
            columns.reverse()
            modalities.reverse()
        return CSVTable(
            "pairs", columns, modalities, _group_labels(columns[0]), None, row_lines, source
        )
    kind = "scored" if width == 3 else "triplets"
    return CSVTable(kind, columns, modalities, None, scores, row_lines, source)


def _check_width(width: int, options: CSVOptions, source: str, line: int) -> None:
    if options.is_labeled:
        if width != 2:
            raise DataError(
                f"{source}:{line}: with CSVOptions(is_labeled=True) each row is item,label "
                f"(2 columns), found {width}. Quote items that contain the delimiter."
            )
    elif not 2 <= width <= 4:
        noun = "column" if width == 1 else "columns"
        raise DataError(
            f"{source}:{line}: found {width} {noun}. {_FORMATS_HINT}. If the delimiter was "
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
                f"number. The last column of a {numeric_col}-column file is the {what}, "
                "e.g. 0.5."
            )
        numbers.append(number)
    return numbers


def is_image_reference(value: str) -> bool:
    """Whether *value* names an image: a ``file://`` or ``http(s)://`` address, or a path with
    an image suffix."""
    return _is_image_reference(value)


def resolve_image_reference(
    cell: str, *, where: str, base_dir: str | None = None, in_csv: bool = False
) -> str:
    """The absolute local path of the image *cell* names, which must exist. Remote addresses
    are refused: images are never fetched."""
    lowered = cell.lower()
    if lowered.startswith(("http://", "https://")):
        raise DataError(
            f"{where}: {cell} is a remote image; images are not fetched, training stays on "
            "this machine. Download the files and give their local paths."
        )
    if lowered.startswith("file://"):
        parts = urlsplit(cell)
        if parts.netloc not in ("", "localhost"):
            raise DataError(
                f"{where}: {cell} names a file on host {parts.netloc!r}; use a local "
                "file:///path URI or a plain path."
            )
        path = url2pathname(parts.path)  # percent-decodes
    else:
        path = os.path.expanduser(cell)
    path = os.path.abspath(os.path.join(base_dir or os.getcwd(), path))
    if not os.path.isfile(path):
        relative = (
            "Relative paths are read from the CSV file's folder"
            if in_csv
            else "Relative paths are read from the current folder"
        )
        raise DataError(
            f"{where}: image file not found: {path} (from {cell!r}). {relative}; check the path."
        )
    return path


def _is_image_reference(cell: str) -> bool:
    lowered = cell.lower()
    if lowered.startswith(("file://", "http://", "https://")):
        return True
    return os.path.splitext(lowered)[1] in IMAGE_EXTENSIONS


class _ImageResolver:
    """Turns image references into absolute local paths, checking each one once."""

    def __init__(self, source: str, base_dir: str):
        self._source = source
        self._base_dir = base_dir
        self._seen: dict[str, str] = {}

    def resolve(self, cell: str, line: int) -> str:
        path = self._seen.get(cell)
        if path is None:
            path = self._seen[cell] = self._resolve(cell, line)
        return path

    def _resolve(self, cell: str, line: int) -> str:
        return resolve_image_reference(
            cell, where=f"{self._source}:{line}", base_dir=self._base_dir, in_csv=True
        )


def _query_documents(
    columns: list[list[str]], modality: str, lines: list[int], source: str
) -> CSVTable:
    """Group ``query,document`` rows: a query and its documents share one generated label."""
    label_of: dict[str, str] = {}
    groups = 0
    items: list[str] = []
    labels: list[str] = []
    item_lines: list[int] = []
    for query, document, line in zip(columns[0], columns[1], lines):
        group = label_of.get(query)
        if group is None:
            group = label_of[query] = str(groups)
            groups += 1
            items.append(query)
            labels.append(group)
            item_lines.append(line)
        if document not in label_of:
            label_of[document] = group
            items.append(document)
            labels.append(group)
            item_lines.append(line)
    return CSVTable("labeled", [items], [modality], labels, None, item_lines, source)


def _group_labels(keys: list[str]) -> list[str]:
    label_of: dict[str, str] = {}
    return [label_of.setdefault(key, str(len(label_of))) for key in keys]
