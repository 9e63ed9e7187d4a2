"""Image references: the strings that name an image, and the local files they resolve to.

A reference is a path with an image suffix, or a ``file://`` URI; it becomes an absolute local
path, checked for existence. ``http(s)://`` addresses are recognised only to be refused: images
are never fetched, training stays on this machine. The images themselves are loaded later,
lazily, by the model's preprocessor.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit
from urllib.request import url2pathname

from ..errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "ImageResolver", "is_image_reference", "resolve_image_reference"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})


def is_image_reference(value: str) -> bool:
    """Whether *value* names an image: a ``file://`` or ``http(s)://`` address, or a path with
    an image suffix."""
    lowered = value.lower()
    if lowered.startswith(("file://", "http://", "https://")):
        return True
    return os.path.splitext(lowered)[1] in IMAGE_EXTENSIONS


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


class ImageResolver:
    """Turns the image references of one CSV file into absolute local paths, checking each
    distinct reference once (a file often names one image on many rows)."""

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
