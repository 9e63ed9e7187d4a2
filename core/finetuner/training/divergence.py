"""A fit that diverged fails, naming where: a training or validation loss, an evaluation
metric, or the trained weights that became NaN or infinite. Without these checks the run
would finish with an artifact whose embeddings are NaN."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch

from ..errors import TrainingDivergedError

__all__ = ["HINT", "check_finite_metrics", "check_finite_weights", "when"]

HINT = (
    "lower the learning rate, clip the gradients (gradient_clip_norm=1.0), use precision='32', "
    "or check the data for extreme values"
)


def when(stage: str, epoch: int) -> str:
    """Words for the moment of an evaluation: ``before training``, ``at epoch 3``, ..."""
    if stage == "before":
        return "before training"
    if stage == "after":
        return f"after training (epoch {epoch + 1})"
    return f"at epoch {epoch + 1}" + (" (a step evaluation)" if stage == "step" else "")


def check_finite_metrics(metrics: Mapping[str, float], stage: str, epoch: int) -> None:
    """Raise :class:`TrainingDivergedError` when a metric of this evaluation is NaN or
    infinite."""
    bad = {key: value for key, value in metrics.items() if not math.isfinite(value)}
    if not bad:
        return
    shown = ", ".join(f"{key}={value}" for key, value in bad.items())
    cause = (
        "the evaluation data may have no query with a relevant document; "
        if set(bad) != {"val_loss"}
        else ""
    )
    raise TrainingDivergedError(f"the fit diverged: {shown} {when(stage, epoch)}; {cause}{HINT}.")


def check_finite_weights(
    modules: Mapping[str, torch.nn.Module] | Iterable[torch.nn.Module],
) -> None:
    """Raise :class:`TrainingDivergedError` when a trained parameter or buffer (batch-norm
    statistics, say) holds NaN or infinite values: every embedding of the model would."""
    named = modules.items() if isinstance(modules, Mapping) else enumerate(modules)
    for model_name, module in named:
        tensors = [*module.named_parameters(), *module.named_buffers()]
        for name, tensor in tensors:
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise TrainingDivergedError(
                    f"the fit diverged: the trained weights of model '{model_name}' hold NaN "
                    f"or infinite values ({name}), so its embeddings would be NaN; {HINT}."
                )
