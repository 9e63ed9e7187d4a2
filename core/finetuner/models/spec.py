"""What a backbone is: :class:`ModelSpec` (a named model builder) and :class:`Preprocessor`
(raw items to model input).

The leaf of :mod:`finetuner.models`: the backbones, the registry and third-party plugins all
import it, and it imports nothing from finetuner, so none of them can form a cycle through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["ModelSpec", "Preprocessor", "is_text_list"]


@dataclass(frozen=True)
class ModelSpec:
    """A named backbone.

    ``resolve_options(options, input_shape)`` fills defaults and data-dependent options;
    ``input_shape`` is the shape of one training item (without the batch dimension), or ``None``
    when unknown (at inference). ``build(resolved_options)`` returns the module; the resolved
    options are what the artifact stores to rebuild it.
    """

    name: str
    task: str
    description: str
    build: Callable[[Mapping[str, Any]], nn.Module]
    resolve_options: Callable[[Mapping[str, Any], tuple[int, ...] | None], dict[str, Any]]
    output_dim: Callable[[Mapping[str, Any]], int | None] = field(default=lambda options: None)
    architecture: str = ""
    modality: str = "tensor"
    """What a single-tower model embeds: ``'tensor'``, ``'text'`` or ``'image'``."""
    towers: Mapping[str, str] = field(default_factory=dict)
    """Two-tower models: tower name -> modality (e.g. ``{'clip-text': 'text', ...}``); ``build``
    then returns an ``nn.ModuleDict`` keyed by tower name."""
    preprocessor: Callable[..., Preprocessor] | None = None
    """``preprocessor(options, tower, files)`` returns the :class:`Preprocessor` turning raw
    items into the module's input; *tower* is ``None`` for single-tower models and *files* the
    preprocessor files stored in an artifact (``None`` while training). ``None``: tensors."""
    for_rebuild: Callable[[Mapping[str, Any]], dict[str, Any]] = field(default=dict)
    """The options to rebuild the module from an artifact: nothing pretrained is loaded, as
    the artifact's weights replace it."""

    def build_preprocessor(
        self,
        options: Mapping[str, Any],
        tower: str | None = None,
        files: Mapping[str, bytes] | None = None,
    ) -> Preprocessor:
        """The preprocessor of this backbone (or *tower*): tensors as they are when the spec
        names none; *files* come from an artifact."""
        if self.preprocessor is None:
            return Preprocessor()
        return self.preprocessor(options, tower, files)

    def modality_of(self, tower: str | None) -> str:
        if tower is None or not self.towers:
            return self.modality
        return self.towers[tower]


class Preprocessor:
    """Turns a batch of raw items (a list of texts or image references, or a tensor) into
    what a module takes. Runs in ``DataLoader`` workers: keep it picklable and cheap to copy.

    ``files()`` returns what an artifact must store to rebuild it (e.g. a tokenizer), as
    ``{file name: bytes}``.
    """

    modality = "tensor"

    def __call__(self, values: Any) -> Any:
        if isinstance(values, torch.Tensor):
            return values.to(torch.float32)
        return torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in values])

    def files(self) -> dict[str, bytes]:
        return {}

    def sizes(self, values: Any) -> Sequence[int] | None:
        """The cost of each item in a batch, or None. ``encode`` batches items of similar size
        together (largest first), so each batch pads to little more than its items; the base
        class measures texts by their characters and leaves anything else in order."""
        if self.modality == "text" and is_text_list(values):
            return [len(v) for v in values]
        return None


def is_text_list(values: Any) -> bool:
    """Whether *values* is a list of texts (what ``sizes`` can measure)."""
    return isinstance(values, list) and all(isinstance(v, str) for v in values)
