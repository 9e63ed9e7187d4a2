"""The store of pushed data sets: a :class:`~finetuner.data.dataset.Dataset` kept on disk
under a name.

A data set is stored under the data store (``data_dir``, else ``$FINETUNER_DATA_DIR``, else
``./finetuner-data``)::

    <name>/dataset.json        kind, columns (texts and image paths inline), classes, ids
    <name>/tensors.safetensors tensor columns, label codes and scores

Nothing is pickled; image files stay where they are and are referenced by absolute path. This
module only writes, reads, lists and deletes converted data sets: converting comes before it
(:func:`finetuner.data.pushed.push_data`), and :func:`~finetuner.data.convert.load_dataset`
reads names through it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_write_bytes, atomic_write_text, replace_dir
from ..errors import ConfigError, DataError, close_matches_hint
from .builtin import BUILTIN_DATASETS
from .dataset import TENSOR, Column, Dataset

__all__ = [
    "DATA_DIR_ENV",
    "FORMAT_VERSION",
    "check_name",
    "delete_data",
    "list_data",
    "load_pushed",
    "pushed_names",
    "resolve_data_dir",
    "target_folder",
    "write_dataset",
]

DATA_DIR_ENV = "FINETUNER_DATA_DIR"
FORMAT_VERSION = 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data store's folder: *data_dir*, else ``$FINETUNER_DATA_DIR``, else
    ``./finetuner-data``, as an absolute path."""
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or "finetuner-data"
    return Path(data_dir).expanduser().absolute()


def check_name(name: Any) -> str:
    """*name* if a data set may be stored under it: a safe folder name that is neither a
    built-in data set nor looks like a CSV file."""
    # fullmatch: `$` would let a trailing newline through, and the name becomes a folder
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise ConfigError(
            f"data set name {name!r} is not allowed: use 1 to 100 letters, digits, '.', '_' or "
            "'-', starting with a letter or digit (no path separators, no '..')."
        )
    if name in BUILTIN_DATASETS:
        raise ConfigError(f"'{name}' is a built-in data set; push under another name.")
    if name.lower().endswith((".csv", ".tsv")):
        raise ConfigError(f"data set name '{name}' ends like a CSV file; choose another name.")
    return name


def target_folder(
    name: str, *, overwrite: bool = False, data_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The folder a data set named *name* is stored in, once the name is checked and, unless
    *overwrite*, known to be free (checked before any data is converted)."""
    check_name(name)
    target = resolve_data_dir(data_dir) / name
    if target.exists() and not overwrite:
        raise ConfigError(
            f"a data set named '{name}' exists already ({target}); pass overwrite=True to "
            f"replace it, or delete it with finetuner.delete_data('{name}')."
        )
    return target


def write_dataset(dataset: Dataset, target: Path) -> Path:
    """Store *dataset* in the folder *target* (from :func:`target_folder`), replacing what is
    there at once: the folder is written under a temporary name and renamed."""
    from safetensors.torch import save

    tensors, manifest = _stored_form(dataset, target.name)
    root = target.parent
    tmp = root / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        atomic_write_bytes(tmp / "tensors.safetensors", save(tensors) if tensors else save({}))
        atomic_write_text(tmp / "dataset.json", json.dumps(manifest, ensure_ascii=False))
        replace_dir(tmp, target)
    except BaseException as exc:  # an interrupted or failed push leaves nothing behind
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise DataError(
                f"could not store the data set '{target.name}' in {root}: "
                f"{exc.strerror or exc}; free some space or choose another data_dir."
            ) from exc
        raise
    return target


def _stored_form(dataset: Dataset, name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the manifest that store *dataset*; refuses what a file cannot hold."""
    for label in dataset.classes:
        if not isinstance(label, (str, int, float, bool)):
            raise DataError(
                f"{name}: the label {label!r} is a {type(label).__name__}; pushed data sets keep "
                "labels that are strings or numbers."
            )
    tensors: dict[str, torch.Tensor] = {}
    columns: list[dict[str, Any]] = []
    for i, column in enumerate(dataset.columns):
        if column.modality == TENSOR:
            tensors[f"column{i}"] = column.values.contiguous()
            columns.append({"modality": TENSOR, "tensor": f"column{i}"})
        else:
            values = column.values
            if not all(isinstance(v, str) for v in values):
                raise DataError(
                    f"{name}: image column {i} holds in-memory images; pushed data sets keep "
                    "image paths. Save the images as files and push their paths."
                )
            columns.append({"modality": column.modality, "values": list(values)})
    if dataset.labels is not None:
        tensors["labels"] = torch.as_tensor(dataset.labels, dtype=torch.long)
    if dataset.scores is not None:
        tensors["scores"] = torch.as_tensor(dataset.scores, dtype=torch.float32)
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "kind": dataset.kind,
        "source": dataset.source,
        "size": len(dataset),
        "pushed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "columns": columns,
        "classes": list(dataset.classes),
        "ids": list(dataset.ids),
    }
    return tensors, manifest


def _check_stored(
    manifest: dict[str, Any], columns: list[Column], labels: Any, scores: Any
) -> None:
    """What was read back agrees with itself: every column, the labels, the scores and the
    ids have one entry per row, and every label code names one of the classes."""
    size = manifest["size"]
    sizes = {"ids": len(manifest["ids"])}
    sizes.update({f"column {i}": len(c.values) for i, c in enumerate(columns)})
    if labels is not None:
        sizes["labels"] = len(labels)
    if scores is not None:
        sizes["scores"] = len(scores)
    wrong = {what: n for what, n in sizes.items() if n != size}
    if wrong:
        what, n = next(iter(wrong.items()))
        raise DataError(f"{what} has {n} rows, the data set {size}")
    if labels is not None and len(labels):
        bad = np.flatnonzero((labels < 0) | (labels >= len(manifest["classes"])))
        if bad.size:
            raise DataError(
                f"row {int(bad[0])} has the label code {int(labels[bad[0]])}, but there are "
                f"{len(manifest['classes'])} classes"
            )


def pushed_names(data_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """The names of the pushed data sets, sorted."""
    root = resolve_data_dir(data_dir)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if not p.name.startswith(".") and (p / "dataset.json").is_file()
    )


def list_data(data_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """The pushed data sets: name, kind, size, modalities and when each was pushed."""
    rows = []
    for name in pushed_names(data_dir):
        manifest = _manifest(name, data_dir)
        rows.append(
            {
                "name": name,
                "kind": manifest.get("kind"),
                "size": manifest.get("size"),
                "modalities": [c.get("modality") for c in manifest.get("columns", [])],
                "pushed_at": manifest.get("pushed_at"),
            }
        )
    return rows


def _missing(name: str, data_dir: str | os.PathLike[str] | None) -> DataError:
    names = pushed_names(data_dir)
    return DataError(
        f"no pushed data set named '{name}' in {resolve_data_dir(data_dir)}; pushed: "
        f"{', '.join(names) or '(none)'}.{close_matches_hint(name, names)}"
    )


def _manifest(name: str, data_dir: str | os.PathLike[str] | None) -> dict[str, Any]:
    path = resolve_data_dir(data_dir) / name / "dataset.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _missing(name, data_dir) from None
    except (OSError, ValueError) as exc:
        raise DataError(
            f"the data set '{name}' is damaged ({path}: {exc}); push it again."
        ) from None


def delete_data(name: str, *, data_dir: str | os.PathLike[str] | None = None) -> None:
    """Delete the pushed data set *name* (its image files, stored elsewhere, stay)."""
    check_name(name)
    target = resolve_data_dir(data_dir) / name
    if not (target / "dataset.json").is_file():
        raise _missing(name, data_dir)
    trash = target.with_name(f".{name}.deleted-{os.getpid()}")
    try:
        os.replace(target, trash)
    except OSError as exc:
        raise DataError(
            f"could not delete the data set '{name}' ({target}): {exc.strerror or exc}."
        ) from exc
    shutil.rmtree(trash, ignore_errors=True)


def load_pushed(name: str, data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """The :class:`~finetuner.data.dataset.Dataset` pushed as *name*."""
    from safetensors.torch import load_file

    check_name(name)
    manifest = _manifest(name, data_dir)
    folder = resolve_data_dir(data_dir) / name
    try:
        tensors = load_file(str(folder / "tensors.safetensors"))
        columns = [
            Column(c["modality"], tensors[c["tensor"]] if "tensor" in c else list(c["values"]))
            for c in manifest["columns"]
        ]
        labels = tensors["labels"].numpy().astype(np.int64) if "labels" in tensors else None
        scores = tensors["scores"].numpy() if "scores" in tensors else None
        _check_stored(manifest, columns, labels, scores)
    except DataError as exc:
        raise DataError(
            f"the data set '{name}' is damaged ({folder}: {exc}); push it again."
        ) from None
    except (OSError, KeyError, TypeError, ValueError, AttributeError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise DataError(
            f"the data set '{name}' is damaged ({folder}: {what}); push it again."
        ) from None
    return Dataset(
        columns,
        labels,
        list(manifest["classes"]),
        list(manifest["ids"]),
        kind=manifest["kind"],
        scores=scores,
        source=name,
    )
