"""Pushed data sets: ``push_data``, ``list_data`` and ``delete_data``.

A pushed data set is converted once and kept in the data store (see
:mod:`finetuner.data.store` for where and in which format); afterwards its name works wherever
data is accepted (``train_data='my-data'``). :func:`push_data` converts, then stores, so it
sits above both :mod:`~finetuner.data.convert` and :mod:`~finetuner.data.store`; the store's
public names are re-exported here, which makes this module the old ``finetuner.datastore``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .convert import load_dataset
from .store import DATA_DIR_ENV as DATA_DIR_ENV
from .store import FORMAT_VERSION as FORMAT_VERSION
from .store import delete_data, list_data, load_pushed, pushed_names, target_folder, write_dataset
from .store import resolve_data_dir as resolve_data_dir

__all__ = [
    "delete_data",
    "list_data",
    "load_pushed",
    "push_data",
    "pushed_names",
]


def push_data(
    name: str,
    data: Any,
    *,
    csv_options: Any = None,
    overwrite: bool = False,
    data_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Store *data* (any form ``fit`` accepts) under *name* and return its folder."""
    target = target_folder(name, overwrite=overwrite, data_dir=data_dir)
    dataset = load_dataset(data, name=name, csv_options=csv_options)
    return write_dataset(dataset, target)
