"""Gradient checkpointing (``fit(..., gradient_checkpointing=True)``): keep fewer activations in
the forward pass and recompute them in the backward pass, trading time for memory.

Hugging Face models implement it themselves (``gradient_checkpointing_enable``); so may a
module of one's own. It is switched on for training only: Hugging Face models recompute only in
training mode, and an artifact rebuilds its model without it.
"""

from __future__ import annotations

import inspect

from torch import nn

from ..errors import ConfigError

__all__ = ["enable_gradient_checkpointing"]

# Non-reentrant checkpointing recomputes correctly when no input needs a gradient (frozen
# embeddings, LoRA), which the reentrant variant does not.
_CHECKPOINT_KWARGS = {"use_reentrant": False}
# The method and its keyword: transformers 5 renamed gradient_checkpointing_enable, keeping
# the old name as a deprecated alias; older versions and modules of one's own have the old name.
_METHODS = (
    ("activation_checkpointing_enable", "activation_checkpointing_kwargs"),
    ("gradient_checkpointing_enable", "gradient_checkpointing_kwargs"),
)


def _enable(module: nn.Module) -> bool:
    """Call *module*'s checkpointing switch, if it has one; whether it had."""
    for method, keyword in _METHODS:
        enable = getattr(module, method, None)
        if callable(enable):
            takes_kwargs = keyword in inspect.signature(enable).parameters
            enable(**({keyword: dict(_CHECKPOINT_KWARGS)} if takes_kwargs else {}))
            return True
    return False


def enable_gradient_checkpointing(module: nn.Module, model: str) -> list[str]:
    """Switch on gradient checkpointing in *module*: in the module itself when it has a
    ``gradient_checkpointing_enable`` (or ``activation_checkpointing_enable``) method, else in
    each outermost submodule that has one (the transformer of a text model, the model of a CLIP
    tower). Returns their names (``''`` for *module* itself); *model* names the model in the
    error raised when none has one."""
    enabled: list[str] = []
    for name, sub in module.named_modules():
        if any(not done or name.startswith(f"{done}.") for done in enabled):
            continue  # inside a model that checkpoints already
        try:
            if _enable(sub):
                enabled.append(name)
        except ValueError as exc:  # a Hugging Face model without support says so
            raise ConfigError(
                f"gradient_checkpointing=True: '{model}' cannot checkpoint its "
                f"{type(sub).__name__} ({exc}); drop the option."
            ) from exc
    if not enabled:
        raise ConfigError(
            f"gradient_checkpointing=True applies to Hugging Face backbones (the text models "
            f"and the CLIP towers clip-text and clip-vision) and to modules with a "
            f"gradient_checkpointing_enable method; '{model}' has none, so drop the option."
        )
    return enabled
