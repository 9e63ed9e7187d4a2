"""Running a model on data outside the training step: the device, eval mode, batched encoding.

Shared by :func:`finetuner.encode` (after training) and ``ctx.encode`` (during a fit), so a
model embeds data the same way in both.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import ConfigError, PluginError

__all__ = [
    "PRECISIONS",
    "autocast",
    "check_precision",
    "encode_items",
    "evaluating",
    "resolve_device",
    "to_device",
]

PRECISIONS = ("32", "bf16", "16-mixed")
"""The numeric precisions a model trains and encodes in (``precision=``)."""


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(
            f"device={device!r} is not a device: use 'auto', 'cpu', 'cuda' or 'cuda:N'."
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device='{device}' but no CUDA device is available; use device='auto' or 'cpu'."
        )
    return resolved


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a *precision* that *device* can not run, saying what to use instead."""
    if precision not in PRECISIONS:
        raise ConfigError(
            f"precision {precision!r} is not one of {', '.join(repr(p) for p in PRECISIONS)}."
        )
    if precision == "16-mixed" and device.type != "cuda":
        raise ConfigError(
            f"precision='16-mixed' needs a CUDA device, and this one is '{device}'; use "
            "precision='bf16' (the CPU runs bfloat16) or '32'."
        )
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError(
                f"precision='bf16' needs a GPU that supports bfloat16, and '{device}' does not; "
                "use precision='16-mixed' or '32'."
            )
        if device.type not in ("cpu", "cuda"):
            raise ConfigError(
                f"precision='bf16' runs on the CPU and CUDA devices, not on '{device}'; use "
                "precision='32' there."
            )


def autocast(precision: str, device: torch.device) -> Any:
    """The autocast context of *precision* on *device* (a no-op context for ``'32'``)."""
    if precision == "32":
        return contextlib.nullcontext()  # not autocast(enabled=False): 4 us a step for nothing
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


@contextmanager
def evaluating(*modules: nn.Module) -> Iterator[None]:
    """Run a block with *modules* in eval mode and without gradients, then put each module
    back in the mode it was in, even when the block raises."""
    modes = [module.training for module in modules]
    for module in modules:
        module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, mode in zip(modules, modes):
            module.train(mode)


def to_device(batch: Any, device: torch.device) -> Any:
    """A preprocessed batch (a tensor, or a dict of tensors) on *device*."""
    if device.type == "cpu":
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    return batch


class _Slices:
    """*values* cut into consecutive batches of *size* (a map-style data set of batches)."""

    def __init__(self, values: Any, size: int) -> None:
        self.values, self.size = values, size
        self.total = int(values.shape[0]) if isinstance(values, torch.Tensor) else len(values)

    def __len__(self) -> int:
        return math.ceil(self.total / self.size)

    def __getitem__(self, i: int) -> Any:
        return self.values[i * self.size : (i + 1) * self.size]


def _item_sizes(preprocess: Any, cost: Any, count: int) -> np.ndarray:
    """*cost* from ``preprocess.sizes`` as one number per item, or a PluginError: a wrong
    count would drop or repeat items when they are put in order."""
    where = f"{type(preprocess).__name__}.sizes()"
    try:
        sizes = np.asarray(cost, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PluginError(f"{where} must return one number per item: {exc}.") from exc
    if sizes.shape != (count,) or not np.isfinite(sizes).all():
        raise PluginError(
            f"{where} must return one finite number per item; for {count} items it returned "
            f"shape {sizes.shape}{'' if np.isfinite(sizes).all() else ' with NaN or infinity'}. "
            "Return None to keep the items in order."
        )
    return sizes


def encode_items(
    module: nn.Module,
    preprocess: Any,
    values: Any,
    *,
    batch_size: int,
    device: torch.device | None = None,
    num_workers: int = 0,
    precision: str = "32",
) -> np.ndarray:
    """Embed *values* (a tensor, or a list of texts or images) in batches with *module* in
    eval mode and without gradients, autocast to *precision*; *preprocess* turns a slice of
    values into model input. The vectors are float32 whatever the precision."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, not {batch_size}.")
    device = device or next((p.device for p in module.parameters()), torch.device("cpu"))
    check_precision(precision, device)
    order: np.ndarray | None = None
    sizes = getattr(preprocess, "sizes", None)
    cost = (
        sizes(values) if callable(sizes) and isinstance(values, list) and len(values) > 1 else None
    )
    if cost is not None:
        # largest items first, so each batch pads to similar lengths; the order is restored below
        order = np.argsort(-_item_sizes(preprocess, cost, len(values)), kind="stable")
        values = [values[i] for i in order]
    slices = _Slices(values, batch_size)
    batches: Any = (preprocess(slices[i]) for i in range(len(slices)))
    if num_workers > 0 and len(slices) > 1:
        from torch.utils.data import DataLoader

        # batch_size=None: each slice is one batch, preprocessed in a worker
        batches = DataLoader(
            slices,  # type: ignore[arg-type]
            batch_size=None,
            collate_fn=preprocess,
            num_workers=num_workers,
        )
    chunks = []
    with evaluating(module), autocast(precision, device):
        for batch in batches:
            out = module(to_device(batch, device))
            chunks.append(out.detach().to("cpu", torch.float32))
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    embeddings = torch.cat(chunks).numpy()
    if order is not None:
        restored = np.empty_like(embeddings)
        restored[order] = embeddings
        return restored
    return embeddings
