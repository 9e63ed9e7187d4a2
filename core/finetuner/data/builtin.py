"""Built-in data sets, usable by name wherever data is accepted.

``digits-train`` and ``digits-eval`` split scikit-learn's bundled handwritten digits (8x8
images, 10 classes, 1,797 items, no download) 80/20, stratified, always the same way. The
``products-*`` sets are a text retrieval task (:mod:`finetuner.data.builtin_text`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .builtin_text import TEXT_DATASETS, load_text_builtin
from .dataset import Dataset

__all__ = ["BUILTIN_DATASETS", "load_builtin"]

BUILTIN_DATASETS = {
    "digits-train": "scikit-learn digits, 80% split (1,437 items, 8x8 pixels as 64 values in [0, 1])",
    "digits-eval": "scikit-learn digits, the other 20% (360 items)",
    **TEXT_DATASETS,
}


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(2024)
    eval_idx = []
    for label in range(10):
        members = np.flatnonzero(y == label)
        rng.shuffle(members)
        eval_idx.extend(members[: round(len(members) * 0.2)].tolist())
    mask = np.zeros(len(y), dtype=bool)
    mask[eval_idx] = True
    return x[~mask], y[~mask], x[mask], y[mask]


def load_builtin(name: str) -> Dataset:
    """The built-in data set *name*, one of :data:`BUILTIN_DATASETS`."""
    if name in TEXT_DATASETS:
        return load_text_builtin(name)
    x_train, y_train, x_eval, y_eval = _digits()
    x, y = (x_train, y_train) if name == "digits-train" else (x_eval, y_eval)
    prefix = "train" if name == "digits-train" else "eval"
    return Dataset.from_tensors(
        torch.from_numpy(x.copy()),
        y.copy(),
        list(range(10)),
        [f"{prefix}-{i}" for i in range(len(y))],
        source=name,
    )
