"""Reading an artifact's files as untrusted input: only the files its layout names, each of a
bounded size, no links, and safetensors headers checked before their tensors are read.

Every fault is one :class:`~finetuner.errors.ArtifactError` naming the artifact and the file.

Limits (see "Safety of artifacts" in the documentation):

* Only these files are read: ``metadata.yml``, ``models/<name>/metadata.yml``,
  ``models/<name>/model.safetensors``, ``models/<name>/adapter.safetensors``,
  ``models/<name>/model.onnx`` and ``models/<name>/preprocessor/<file>`` (a zip may put them
  under one top folder). Other files are never opened.
* A YAML file is at most :data:`MAX_YAML_BYTES`, a preprocessor file at most
  :data:`MAX_PREPROCESSOR_BYTES`, an ONNX export at most :data:`MAX_ONNX_BYTES` (protobuf's
  own limit).
* A safetensors file must be exactly as large as its header says (8 bytes, the header, the
  tensors' data), with a header of at most :data:`MAX_HEADER_BYTES`; its size is checked
  before its data is read.
* A symbolic link anywhere in an artifact folder, or a link, an absolute name, a ``..`` part
  or a name given twice in an artifact zip, refuses the artifact.
"""

from __future__ import annotations

import functools
import json
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from .._io import regular_files
from ..errors import ArtifactError

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_ONNX_BYTES",
    "MAX_PREPROCESSOR_BYTES",
    "MAX_YAML_BYTES",
    "read_artifact_files",
    "safetensors_header",
]

MAX_YAML_BYTES = 1024 * 1024
MAX_PREPROCESSOR_BYTES = 64 * 1024 * 1024
MAX_ONNX_BYTES = 2 * 1024**3
MAX_HEADER_BYTES = 100 * 1024 * 1024
"""safetensors' own bound on the JSON header."""

_LAYOUT = re.compile(
    r"(?:[^/]+/)?(?:metadata\.yml|config\.yml|models/[^/]+/(?:metadata\.yml|model\.safetensors|"
    r"adapter\.safetensors|model\.onnx|preprocessor/[^/]+))"
)

_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


def _cap(name: str) -> int | None:
    """The most bytes the layout file *name* may hold (``None``: safetensors, checked
    against its header)."""
    if name.endswith(".yml"):
        return MAX_YAML_BYTES
    if name.endswith(".onnx"):
        return MAX_ONNX_BYTES
    if name.endswith(".safetensors"):
        return None
    return MAX_PREPROCESSOR_BYTES


def _read_bounded(open_member: Callable[[], IO[bytes]], size: int, name: str, where: str) -> bytes:
    """The bytes of the layout file *name* (said to be *size* long), within its bound."""
    cap = _cap(name)
    with open_member() as handle:
        if cap is None:
            return _read_safetensors(handle, size, f"{where}: {name}")
        if size > cap:
            raise ArtifactError(f"{where}: {name} is {size} bytes, more than the {cap} allowed.")
        data = handle.read(cap + 1)
    if len(data) > cap:
        raise ArtifactError(f"{where}: {name} holds more than the {cap} bytes allowed.")
    return data


def _not_safetensors(what: str, problem: str) -> ArtifactError:
    return ArtifactError(
        f"{what} is not a valid safetensors file ({problem}); it was damaged or replaced, and "
        "is refused unread. Use the artifact the run wrote."
    )


def safetensors_header(prefix: bytes, size: int, what: str) -> tuple[int, dict[str, Any]]:
    """The header length and the tensors (``{name: {dtype, shape, data_offsets}}``) of a
    safetensors file of *size* bytes starting with *prefix*; every tensor's extent checked."""
    if size < 8 or len(prefix) < 8:
        raise _not_safetensors(what, f"{size} bytes is too short")
    (length,) = struct.unpack("<Q", prefix[:8])
    if length > MAX_HEADER_BYTES or 8 + length > size:
        raise _not_safetensors(
            what, f"its header claims {length} bytes, more than the file's {size} or the limit"
        )
    try:
        header = json.loads(prefix[8 : 8 + length])
    except (UnicodeDecodeError, ValueError):
        raise _not_safetensors(what, "its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise _not_safetensors(what, "its header is not a mapping of tensors")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    end = 0
    for key, entry in tensors.items():
        end = max(end, _tensor_extent(key, entry, what))
    if 8 + length + end != size:
        raise _not_safetensors(
            what, f"the file is {size} bytes but its header declares {8 + length + end}"
        )
    return length, tensors


def _tensor_extent(key: str, entry: Any, what: str) -> int:
    """Where the data of tensor *key* ends, once its header entry is checked."""
    try:
        dtype, shape, (start, stop) = entry["dtype"], entry["shape"], entry["data_offsets"]
        count = 1
        for dim in shape:
            if not isinstance(dim, int) or dim < 0:
                raise ValueError
            count *= dim
        width = _DTYPE_BYTES[dtype]
        valid = isinstance(start, int) and isinstance(stop, int) and 0 <= start <= stop
    except (KeyError, TypeError, ValueError):
        valid = False
    if not valid or stop - start != count * width:
        raise _not_safetensors(what, f"the header entry of tensor '{key}' is malformed")
    return int(stop)


def _read_safetensors(handle: IO[bytes], size: int, what: str) -> bytes:
    """The safetensors file of *size* bytes open in *handle*: its header is read and checked
    (its size too) before its data."""
    prefix = handle.read(8)
    length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0
    prefix += handle.read(min(length, MAX_HEADER_BYTES, max(size - 8, 0)))
    safetensors_header(prefix, size, what)
    rest = handle.read(size - len(prefix) + 1)
    if len(prefix) + len(rest) != size:
        raise _not_safetensors(what, f"it is not {size} bytes as listed")
    return prefix + rest


def _opener(file: Path) -> Callable[[], IO[bytes]]:
    return lambda: file.open("rb")


def _folder_files(path: Path, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for file in regular_files(path):
        name = file.relative_to(path).as_posix()
        if not _LAYOUT.fullmatch(name) or not wanted(name):
            continue
        if not file.is_file():
            raise ArtifactError(f"artifact '{path}': {name} is not a regular file; refused.")
        files[name] = _read_bounded(_opener(file), file.stat().st_size, name, f"artifact '{path}'")
    return files


def _check_member(info: zipfile.ZipInfo, seen: set[str], where: str) -> None:
    name = info.filename
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or ".." in parts or re.match(r"[A-Za-z]:", name):
        raise ArtifactError(f"{where}: the entry '{name}' points outside the artifact; refused.")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ArtifactError(f"{where}: the entry '{name}' is a symbolic link; refused.")
    if name in seen:
        raise ArtifactError(f"{where}: the entry '{name}' is in the zip twice; refused.")
    seen.add(name)


def _zip_files(path: Path, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    where = f"artifact '{path}'"
    files: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            seen: set[str] = set()
            for info in archive.infolist():
                _check_member(info, seen, where)
                name = info.filename
                if not info.is_dir() and _LAYOUT.fullmatch(name) and wanted(name):
                    files[name] = _read_bounded(
                        functools.partial(archive.open, info), info.file_size, name, where
                    )
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as exc:
        raise ArtifactError(
            f"{where}: the zip is damaged ({exc}); use the one the run wrote."
        ) from None
    except (OSError, RuntimeError, zlib.error) as exc:  # damaged data, encrypted entries
        raise ArtifactError(f"{where}: cannot read the zip ({exc}).") from None
    return files


def _holds_layout(path: Path) -> bool:
    """Whether the folder *path* looks like an artifact (a ``metadata.yml`` or a ``models``
    folder), itself or in a folder right inside it (an unzipped artifact)."""

    def marked(folder: Path) -> bool:
        return (folder / "metadata.yml").is_file() or (folder / "models").is_dir()

    try:
        return marked(path) or any(marked(child) for child in path.iterdir() if child.is_dir())
    except OSError as exc:
        raise ArtifactError(f"cannot read the artifact folder '{path}': {exc.strerror}.") from None


def read_artifact_files(
    path: Path, wanted: Callable[[str], bool] = lambda name: True
) -> Mapping[str, bytes]:
    """The layout files of the artifact folder or zip *path* (those of them whose relative
    path *wanted* accepts: every one by default), by relative path. Every entry is checked,
    read or not."""
    if path.is_symlink():
        raise ArtifactError(f"artifact '{path}' is a symbolic link; pass the artifact itself.")
    if not path.exists():
        raise ArtifactError(
            f"no artifact at '{path}': pass an artifact folder (run.artifact_path) or the zip "
            "written by run.save_artifact()."
        )
    if path.is_dir():
        if not _holds_layout(path):  # before walking it: the folder could be a whole disk
            raise ArtifactError(
                f"'{path}' holds no artifact (expected models/<name>/metadata.yml inside): pass "
                "an artifact folder (run.artifact_path) or the zip written by "
                "run.save_artifact()."
            )
        return _folder_files(path, wanted)
    if zipfile.is_zipfile(path):
        return _zip_files(path, wanted)
    if path.suffix.lower() == ".zip":
        raise ArtifactError(
            f"artifact '{path}' is not a valid zip file (truncated or damaged); use the zip "
            "run.save_artifact() wrote."
        )
    raise ArtifactError(f"'{path}' is neither an artifact folder nor a zip file.")
