"""The numeric precision of a training step: autocast, and the gradient scaler of ``16-mixed``.

``'32'`` runs as plain float32. ``'bf16'`` autocasts the forward pass to bfloat16 on the CPU or
a GPU; bfloat16 has float32's range, so gradients need no scaling. ``'16-mixed'`` autocasts to
float16 on CUDA, whose small range needs a gradient scaler: the loss is multiplied before the
backward pass, the gradients divided back before clipping and the optimizer step, and a step
whose gradients overflowed is skipped while the scale is lowered. In every precision the
weights and the optimizer's state stay float32, so the artifact is float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..encoding import autocast

__all__ = ["StepPrecision"]


class StepPrecision:
    """Runs the parts of a training step that depend on the precision."""

    def __init__(self, precision: str, device: torch.device, *, scaler: bool | None = None):
        self.precision, self.device = precision, device
        use_scaler = precision == "16-mixed" if scaler is None else scaler
        self.scaler = torch.amp.GradScaler(device.type) if use_scaler else None

    def autocast(self) -> Any:
        """The context the forward pass runs in."""
        return autocast(self.precision, self.device)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """Bring the gradients back to their true size (before clipping or measuring them)."""
        if self.scaler is not None:
            for optimizer in optimizers:
                self.scaler.unscale_(optimizer)

    def step(self, optimizers: Sequence[torch.optim.Optimizer]) -> bool:
        """Step every optimizer; False when the scaler skipped the step for non-finite
        gradients (and lowered its scale)."""
        if self.scaler is None:
            for optimizer in optimizers:
                optimizer.step()
            return True
        scale = self.scaler.get_scale()
        for optimizer in optimizers:
            self.scaler.step(optimizer)
        self.scaler.update()
        return self.scaler.get_scale() >= scale

    @property
    def scale(self) -> float | None:
        """The gradient scaler's current loss scale, or None without a scaler."""
        return float(self.scaler.get_scale()) if self.scaler is not None else None

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
