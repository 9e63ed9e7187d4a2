"""GradCache: the gradients of an in-batch-negative loss on a large batch, computed
``mini_batch_size`` items at a time, so that only one mini-batch's activations are in memory.

1. Each column is embedded mini-batch by mini-batch without gradients; the random number
   generators' state is saved before each mini-batch, so dropout can be replayed.
2. The loss is computed on the full batch of (detached) embeddings and back-propagated to
   them: this gives the gradient of the loss for every embedding (and the loss's own
   parameters, such as CLIP's temperature, get their gradients).
3. Each mini-batch is embedded again, with gradients and the saved random state, and
   back-propagated with its cached embedding gradients into the model.

The gradients equal those of the uncached loss; the price is a second forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager as ContextManager
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["RandomState", "cached_backward", "count_rows", "slice_items"]

Forward = Callable[[str, Any], torch.Tensor]
"""Embeds the (preprocessed) items of a mini-batch with the named model."""


@dataclass(frozen=True)
class RandomState:
    """The CPU generator's state and, on CUDA, the device generator's."""

    cpu: torch.Tensor
    cuda: torch.Tensor | None
    device: torch.device

    @classmethod
    def capture(cls, device: torch.device) -> RandomState:
        on_cuda = device.type == "cuda"
        cuda = torch.cuda.get_rng_state(device) if on_cuda else None
        return cls(torch.random.get_rng_state(), cuda, device)

    def replay(self, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        """*fn* run with this state; the generators are left as they were."""
        devices = [self.device] if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.random.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            return fn()


def slice_items(items: Any, start: int, stop: int) -> Any:
    """Rows *start* to *stop* of preprocessed items: a tensor, a dict of tensors (tokenised
    text), or a list."""
    if isinstance(items, torch.Tensor):
        return items[start:stop]
    if isinstance(items, Mapping):
        return {k: slice_items(v, start, stop) for k, v in items.items()}
    return items[start:stop]


def count_rows(items: Any) -> int:
    """The number of rows of preprocessed items (see :func:`slice_items`)."""
    if isinstance(items, torch.Tensor):
        return int(items.shape[0])
    if isinstance(items, Mapping):
        return count_rows(next(iter(items.values())))
    return len(items)


def _bounds(size: int, mini_batch_size: int) -> list[tuple[int, int]]:
    return [(i, min(i + mini_batch_size, size)) for i in range(0, size, mini_batch_size)]


def cached_backward(
    forward: Forward,
    routes: Sequence[str],
    columns: Sequence[Any],
    *,
    loss_fn: Callable[..., torch.Tensor],
    mini_batch_size: int,
    backward: Callable[[torch.Tensor], None],
    device: torch.device,
    hold: Callable[[str], ContextManager[Any]] | None = None,
) -> torch.Tensor:
    """Back-propagate ``loss_fn(*embeddings)`` of a batch (one entry of *columns* per
    column, embedded by the model of *routes*) with GradCache; *backward*
    back-propagates the loss (it may divide or scale it, as the step's precision and
    accumulation do). ``hold(name)``, when given, is a block in which model *name* keeps
    its gradients to itself: every replay but each model's last runs in it, so a
    distributed model averages its gradients over the ranks once. Returns the loss,
    detached."""
    bounds = _bounds(count_rows(columns[0]), mini_batch_size)
    embeddings, states = [], []
    for name, items in zip(routes, columns):
        parts, column_states = [], []
        for start, stop in bounds:
            column_states.append(RandomState.capture(device))
            with torch.no_grad():
                parts.append(forward(name, slice_items(items, start, stop)))
        embeddings.append(torch.cat(parts).detach().requires_grad_())
        states.append(column_states)
    loss = loss_fn(*embeddings)
    backward(loss)
    replays = [
        (name, items, embedding.grad, column_states)
        for name, items, embedding, column_states in zip(routes, columns, embeddings, states)
        if embedding.grad is not None  # None: the loss does not depend on this column
    ]
    last = {name: i for i, (name, *_) in enumerate(replays)}
    for i, (name, items, grad, column_states) in enumerate(replays):
        for j, ((start, stop), state) in enumerate(zip(bounds, column_states)):
            final = i == last[name] and j == len(bounds) - 1
            chunk = slice_items(items, start, stop)
            with nullcontext() if hold is None or final else hold(name):
                out = state.replay(lambda: forward(name, chunk))  # noqa: B023 (called at once)
                out.backward(grad[start:stop])
    return loss.detach()
