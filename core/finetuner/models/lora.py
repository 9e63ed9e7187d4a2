"""LoRA adapters through peft: low-rank updates of a transformer's projections train while
its own weights stay frozen.

``model_options={'lora': {'r': 8, 'alpha': 16, 'dropout': 0.05, 'target_modules': [...]}}``
(each key optional) adapts the text and CLIP backbones, and a module of one's own when
``target_modules`` names its layers. :func:`resolve_lora` checks the options and fills the
defaults, :func:`inject_lora` adds the adapters, :func:`adapter_state` is what an artifact
stores beside the base model, and :func:`merge_lora` folds the adapters back into plain layers.

peft is optional (``pip install "finetuner[lora]"``) and loads only when LoRA is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, close_matches_hint

__all__ = [
    "LORA_OPTIONS",
    "adapter_state",
    "count_parameters",
    "has_lora",
    "inject_lora",
    "load_adapter",
    "merge_lora",
    "refuse_lora",
    "require_peft",
    "resolve_lora",
]

LORA_OPTIONS = ("r", "alpha", "dropout", "target_modules")
_DEFAULTS: dict[str, Any] = {"r": 8, "alpha": 16, "dropout": 0.05}
_INSTALL_HINT = 'pip install "finetuner[lora]"'
_ADAPTER_PREFIX = "lora_"
"""How peft names the adapters' tensors (``lora_A``, ``lora_B``, ...)."""
_BASE_MARK = "_finetuner_lora_base"
"""Set on the module the adapters were injected into: its own tensors are the base model's."""
# The attention projections of model types missing from peft's own table.
_MORE_TARGETS = {
    "clip": ["q_proj", "v_proj"],
    "clip_text_model": ["q_proj", "v_proj"],
    "clip_vision_model": ["q_proj", "v_proj"],
    "distilbert": ["q_lin", "v_lin"],
    "mpnet": ["q", "v"],
}
_ADAPTABLE = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d)


def require_peft() -> Any:
    """The ``peft`` module, or a ConfigError saying how to install it."""
    try:
        import peft
    except ImportError as exc:
        raise ConfigError(
            f"LoRA needs the peft package ({exc}); install it with `{_INSTALL_HINT}`."
        ) from exc
    return peft


def refuse_lora(model: str) -> None:
    """The error for ``lora`` on a backbone that is no transformer."""
    raise ConfigError(
        f"model_options: '{model}' takes no 'lora': LoRA is for transformer backbones (the text "
        "models and the CLIP towers); drop 'lora' to fine-tune it fully."
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _targets(value: Any) -> list[str]:
    if (
        not isinstance(value, list | tuple)
        or not value
        or not all(isinstance(v, str) and v for v in value)
    ):
        raise ConfigError(
            "model_options: lora target_modules must be a list of layer names (e.g. "
            f"['query', 'value']), not {value!r}."
        )
    return list(dict.fromkeys(value))


def _default_targets(model_type: str | None) -> list[str] | None:
    if model_type is None:
        return None
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    found = PEFT_TARGETS.get(model_type) or _MORE_TARGETS.get(model_type)
    return list(found) if isinstance(found, list | tuple) else None


def resolve_lora(value: Any, *, model_type: str | None) -> dict[str, Any]:
    """The LoRA options *value* with their defaults, checked; ``target_modules`` defaults to
    the attention projections of *model_type* (``None`` where unknown: then they must be
    given, which :func:`inject_lora` says, listing the layers)."""
    require_peft()  # a missing peft fails while options are checked, before anything is built
    if not isinstance(value, Mapping):
        raise ConfigError(
            "model_options: lora must be a mapping of r, alpha, dropout and target_modules "
            f"(each optional, e.g. {{'r': 8}}), not {value!r}."
        )
    for key in value:
        if key not in LORA_OPTIONS:
            raise ConfigError(
                f"model_options: lora has no option '{key}'; its options are "
                f"{', '.join(LORA_OPTIONS)}.{close_matches_hint(str(key), LORA_OPTIONS)}"
            )
    lora = {**_DEFAULTS, **value}
    if not isinstance(lora["r"], int) or isinstance(lora["r"], bool) or lora["r"] < 1:
        raise ConfigError(
            f"model_options: lora r (the rank) must be a positive integer, not {lora['r']!r}."
        )
    if not _number(lora["alpha"]) or lora["alpha"] <= 0:
        raise ConfigError(
            f"model_options: lora alpha must be a positive number, not {lora['alpha']!r}."
        )
    if not _number(lora["dropout"]) or not 0 <= lora["dropout"] < 1:
        raise ConfigError(
            f"model_options: lora dropout must be a number in [0, 1), not {lora['dropout']!r}."
        )
    targets = value.get("target_modules")
    lora["target_modules"] = (
        _targets(targets) if targets is not None else _default_targets(model_type)
    )
    return lora


def _adaptable_layers(module: nn.Module) -> dict[str, str]:
    """The layers of *module* LoRA can adapt, by name: their last name component."""
    return {
        name: name.rpartition(".")[2]
        for name, sub in module.named_modules()
        if name and (isinstance(sub, _ADAPTABLE) or type(sub).__name__ == "Conv1D")
    }


def _check_targets(module: nn.Module, targets: list[str] | None, model: str) -> list[str]:
    layers = _adaptable_layers(module)
    names = sorted(set(layers.values()))
    if not targets:
        raise ConfigError(
            f"model_options: LoRA on '{model}' needs lora target_modules (it has no default "
            f"for this model): the names of the layers to adapt, among {', '.join(names)}."
        )
    unknown = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in layers)]
    if unknown:
        raise ConfigError(
            f"model_options: lora target_modules {unknown} name no layer of '{model}'; its "
            f"Linear, Conv1D, Conv and Embedding layers are {', '.join(names)}."
            f"{close_matches_hint(unknown[0], names)}"
        )
    return targets


def has_lora(module: nn.Module) -> bool:
    """Whether *module* holds LoRA adapters (checked without importing peft)."""
    return any(getattr(sub, _BASE_MARK, False) for sub in module.modules())


def inject_lora(module: nn.Module, lora: Mapping[str, Any], *, model: str) -> nn.Module:
    """Add LoRA adapters (resolved options *lora*) to *module*, in place, and freeze all of
    *module* but the adapters; returns *module*. *model* names it in errors."""
    peft = require_peft()
    if has_lora(module):
        raise ConfigError(
            f"'{model}' holds LoRA adapters already (it was trained with LoRA before); pass a "
            "new instance of the module."
        )
    targets = _check_targets(module, lora.get("target_modules"), model)
    config = peft.LoraConfig(
        r=int(lora["r"]),
        lora_alpha=lora["alpha"],
        lora_dropout=float(lora["dropout"]),
        target_modules=targets,
    )
    try:
        peft.inject_adapter_in_model(config, module)
    except (ValueError, TypeError) as exc:  # e.g. a target of a kind peft cannot adapt
        raise ConfigError(
            f"model_options: LoRA cannot adapt {targets} of '{model}': {exc}; choose other "
            "target_modules."
        ) from exc
    for name, parameter in module.named_parameters():
        parameter.requires_grad_(_is_adapter_key(name))
    setattr(module, _BASE_MARK, True)
    return module


def _is_adapter_key(key: str) -> bool:
    return any(part.startswith(_ADAPTER_PREFIX) for part in key.split("."))


def adapter_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of *module* that its base model does not hold: the adapters, and the
    weights outside the adapted model (a projection head, GeM pooling's ``p``)."""
    bases = [name for name, sub in module.named_modules() if getattr(sub, _BASE_MARK, False)]

    def in_base(key: str) -> bool:
        return any(not base or key.startswith(f"{base}.") for base in bases)

    return {
        key: tensor
        for key, tensor in module.state_dict().items()
        if _is_adapter_key(key) or not in_base(key)
    }


def load_adapter(module: nn.Module, tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """Load the adapter *tensors* into *module*, whose base model is in place; exactly the
    tensors :func:`adapter_state` names, else a ConfigError starting with *what*."""
    expected = set(adapter_state(module))
    missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or extra:
        detail = f"missing {', '.join(missing[:3])}" if missing else ""
        detail += ("; " if missing and extra else "") + (
            f"unexpected {', '.join(extra[:3])}" if extra else ""
        )
        raise ConfigError(f"{what} {type(module).__name__}: {detail}.")
    module.load_state_dict(dict(tensors), strict=False)


def merge_lora(module: nn.Module) -> nn.Module:
    """Fold the adapters of *module* into its base weights and take the peft layers out, in
    place: a plain module computing the same function. Returns *module*."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, sub in list(module.named_modules()):
        if isinstance(sub, BaseTunerLayer):
            sub.merge()
            parent, _, child = name.rpartition(".")
            setattr(module.get_submodule(parent), child, sub.get_base_layer())
    for sub in module.modules():
        for attribute in (_BASE_MARK, "peft_config"):
            if attribute in sub.__dict__:
                delattr(sub, attribute)
    return module


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameters of *module*."""
    parameters = list(module.parameters())
    return (
        sum(p.numel() for p in parameters if p.requires_grad),
        sum(p.numel() for p in parameters),
    )
