"""``WiSEFTCallback``: robust fine-tuning by merging pre-trained and fine-tuned weights."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import finetuner
from finetuner.callback import Callback
from finetuner.errors import ConfigError, PluginError
from finetuner.plugins.kit import WeightSnapshot

if TYPE_CHECKING:
    import torch

__all__ = ["WiSEFTCallback", "merge_weights"]
__version__ = "0.1.0"


def merge_weights(
    pretrained: Mapping[str, torch.Tensor], finetuned: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * pretrained + alpha * finetuned`` for every floating-point tensor.

    Integer buffers (counters such as ``num_batches_tracked``) keep the fine-tuned value. The
    two state dicts must have the same keys and shapes.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"WiSE-FT: alpha must be between 0 and 1, not {alpha!r}.")
    if set(pretrained) != set(finetuned):
        only_pre = sorted(set(pretrained) - set(finetuned))
        only_ft = sorted(set(finetuned) - set(pretrained))
        raise PluginError(
            "WiSE-FT: the pre-trained and fine-tuned weights have different keys "
            f"(only pre-trained: {', '.join(only_pre[:5]) or '-'}; only fine-tuned: "
            f"{', '.join(only_ft[:5]) or '-'}); the model's structure changed during training.",
            plugin="WiSEFTCallback",
        )
    merged = {}
    for key, tuned in finetuned.items():
        base = pretrained[key]
        if base.shape != tuned.shape:
            raise PluginError(
                f"WiSE-FT: '{key}' has shape {tuple(base.shape)} before and {tuple(tuned.shape)} "
                "after training.",
                plugin="WiSEFTCallback",
            )
        if tuned.is_floating_point():
            merged[key] = (1.0 - alpha) * base.to(tuned.device, tuned.dtype) + alpha * tuned
        else:
            merged[key] = tuned
    return merged


class WiSEFTCallback(Callback):
    """Merge weights after training: ``theta = (1 - alpha) * theta_pretrained + alpha * theta_finetuned``.

    :param alpha: the weight of the fine-tuned model, ``0 <= alpha <= 1`` (``0`` keeps the
        pre-trained model, ``1`` the fine-tuned one).

    The pre-trained weights are copied when the fit begins. The merge runs in the ``trylast``
    tier of ``finetuner_on_train_end``, after ``BestModelCheckpoint`` restored the best epoch
    (``tryfirst``), so it merges the best fine-tuned weights; the "after" metrics and the
    artifact use the merged model.
    """

    def __init__(self, alpha: float = 0.4) -> None:
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, (int, float))
            or not 0.0 <= alpha <= 1.0
        ):
            raise ConfigError(
                f"WiSEFTCallback: alpha must be a number between 0 and 1, not {alpha!r}."
            )
        self.alpha = float(alpha)
        self._pretrained = WeightSnapshot("WiSEFTCallback")

    def finetuner_on_fit_begin(self, ctx: Any) -> None:
        if not self._pretrained.taken:  # a resumed run restored the original weights already
            self._pretrained.take(ctx.models)

    @finetuner.hookimpl(trylast=True)
    def finetuner_on_train_end(self, ctx: Any) -> None:
        for name, module in ctx.models.items():
            module.load_state_dict(
                merge_weights(self._pretrained.weights(name), module.state_dict(), self.alpha)
            )
        ctx.logger.info(
            f"WiSE-FT: merged pre-trained and fine-tuned weights with alpha={self.alpha}"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"pretrained": self._pretrained.state_dict() or None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._pretrained.load_state_dict(state.get("pretrained"))
