"""Copies of the models' weights that a plugin keeps and puts back.

:class:`WeightSnapshot` is what ``BestModelCheckpoint`` (the best epoch's weights) and
``WiSEFTCallback`` (the pre-trained weights) keep. It only calls tensor and module methods,
so importing it does not import torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import PluginError

if TYPE_CHECKING:
    import torch

__all__ = ["WeightSnapshot"]


class WeightSnapshot:
    """A copy, on the CPU, of every model's weights (``ctx.models``: name -> module).

    ::

        snapshot = WeightSnapshot("BestModelCheckpoint")
        snapshot.take(ctx.models)      # e.g. when the monitored metric improves
        snapshot.restore(ctx.models)   # in finetuner_on_train_end

    The copy does not change when training changes the weights, and restoring leaves it
    intact. :meth:`state_dict` and :meth:`load_state_dict` keep it in training checkpoints
    (``{model name: {parameter: tensor}}``), so a resumed run restores the same weights.

    :param owner: the plugin's name, for error messages.
    """

    def __init__(self, owner: str = "WeightSnapshot") -> None:
        self.owner = owner
        self._weights: dict[str, dict[str, torch.Tensor]] = {}

    @property
    def taken(self) -> bool:
        """Whether the snapshot holds weights (taken, or loaded from a checkpoint)."""
        return bool(self._weights)

    @property
    def model_names(self) -> list[str]:
        return list(self._weights)

    def take(self, models: Mapping[str, torch.nn.Module]) -> None:
        """Copy the current weights of every model, replacing what the snapshot held."""
        self._weights = {
            name: {
                key: value.detach().to("cpu", copy=True)
                for key, value in module.state_dict().items()
            }
            for name, module in models.items()
        }

    def weights(self, name: str) -> dict[str, torch.Tensor]:
        """The copied state dict of the model *name*."""
        if name not in self._weights:
            held = ", ".join(self._weights) or "nothing (no snapshot was taken)"
            raise PluginError(
                f"{self.owner}: the weight snapshot has no model '{name}'; it holds {held}.",
                plugin=self.owner,
            )
        return self._weights[name]

    def restore(self, models: Mapping[str, torch.nn.Module]) -> None:
        """Load the copied weights back into every model (the snapshot stays as it is)."""
        for name, module in models.items():
            module.load_state_dict(self.weights(name))

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """The copied weights, for a training checkpoint (empty when none were taken)."""
        return dict(self._weights)

    def load_state_dict(self, state: Mapping[str, Mapping[str, Any]] | None) -> None:
        """Take back what :meth:`state_dict` gave (``None`` or empty: no snapshot)."""
        self._weights = {name: dict(weights) for name, weights in (state or {}).items()}
