"""Small file helpers: atomic writes, so no file that matters is ever half-written, write
failures reported as :class:`~finetuner.errors.RunError` naming the path, and YAML written so
that ``yaml.safe_load`` reads it back."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .errors import ArtifactError, RunError

__all__ = [
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "dump_yaml",
    "fsync_dir",
    "regular_files",
    "replace_dir",
    "reported_write",
]


@contextmanager
def reported_write(operation: str, path: str | os.PathLike[str]) -> Iterator[None]:
    """A block whose OSError (a full disk, a read-only folder, a path under a file) becomes a
    RunError: ``could not <operation> PATH: <the system's reason>``."""
    try:
        yield
    except RunError:
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        where = exc.filename if exc.filename is not None else path
        raise RunError(
            f"could not {operation} {where}: {reason}; free disk space or make the folder "
            "writable, then try again."
        ) from exc


def _umask() -> int:
    """The process's umask, read without changing it where Linux tells it."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and put back at once
    os.umask(mask)
    return mask


def fsync_dir(path: Path) -> None:
    """Flush a directory entry to disk, so a rename inside it survives a crash."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished folder *tmp* to *final*, replacing an older *final* whole: readers see
    the old folder or the new one, never a mix."""
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)


@contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary file handle whose content replaces *path* only when the block succeeds.

    The data goes to a temporary file in the same folder, is synced, and is renamed over
    *path*: readers see either the old file or the whole new one, never a part. On an error
    the temporary file is removed and *path* is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            # mkstemp makes 0o600; the file takes the mode open() would give it
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write *data* to *path* atomically (see :func:`atomic_open`)."""
    with atomic_open(path) as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write *text* (UTF-8) to *path*."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically write *obj* as indented JSON to *path*."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def dump_yaml(obj: Any) -> str:
    """*obj* as YAML (artifact files, a run's ``source.yml``): keys in their order, values made
    plain (see :func:`_plain`), so ``yaml.safe_load`` reads it back."""
    import yaml  # here, not at the top: reading runs needs no YAML

    return yaml.safe_dump(_plain(obj), sort_keys=False, allow_unicode=True)


def _plain(obj: Any) -> Any:
    """Make *obj* safe for ``yaml.safe_dump``: mappings, lists, scalars; others as strings."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None:
        return None
    for kind in (bool, int, float, str):  # subclasses (e.g. torch's version string) as plain
        if isinstance(obj, kind):
            return kind(obj)
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return obj.item()
        except (ValueError, RuntimeError):
            pass
    return str(obj)


def regular_files(folder: Path) -> list[Path]:
    """Every file under *folder*, sorted; a symbolic link anywhere in it is an
    :class:`~finetuner.errors.ArtifactError` (it could point at any file of the machine)."""
    found: list[Path] = []
    for top, dirs, files in os.walk(folder):
        for entry in (*dirs, *files):
            if os.path.islink(os.path.join(top, entry)):
                link = Path(top, entry).relative_to(folder).as_posix()
                raise ArtifactError(
                    f"artifact '{folder}': {link} is a symbolic link; artifacts hold plain "
                    "files only, so it is refused. Replace the link by the file itself, or use "
                    "the artifact the run wrote."
                )
        found.extend(Path(top, f) for f in files)
    return sorted(found)
