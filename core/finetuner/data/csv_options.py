"""How CSV training data is read: :class:`CSVOptions`, and what counts as a CSV source.

The options are checked when they are made, so a misspelt dialect or codec fails at once,
naming the option and the values that work, not at the first row read.
"""

from __future__ import annotations

import codecs
import csv
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, close_matches_hint

__all__ = ["CSV_SUFFIXES", "CSVOptions", "as_csv_options", "is_csv_source"]

CSV_SUFFIXES = (".csv", ".tsv")


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
