"""CLIP-style two-tower models: a text tower (``clip-text``) and an image tower
(``clip-vision``) embedding into one space.

Pretrained towers come from a local CLIP folder or the Hugging Face cache (never downloaded).
``pretrained=False`` with a ``config`` builds randomly initialised towers of any size, with
the tokenizer of a local folder (``tokenizer=``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError
from ..images import ImagePreprocessor
from ..lora import inject_lora, resolve_lora
from ..spec import ModelSpec
from .common import check_options
from .model_folders import quiet_transformers, read_tokenizer, resolve_text_model
from .text import TextPreprocessor

__all__ = ["SPECS", "TEXT_TOWER", "VISION_TOWER", "CLIPTextTower", "CLIPVisionTower"]

TEXT_TOWER, VISION_TOWER = "clip-text", "clip-vision"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_OPTIONS = {"pretrained", "model_path", "config", "tokenizer", "max_length", "normalize", "lora"}
_EOS_TOKENS = ("<|endoftext|>", "</s>", "[SEP]")


class CLIPTextTower(nn.Module):
    def __init__(self, config: Mapping[str, Any], normalize: bool) -> None:
        super().__init__()
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection

        self.model = CLIPTextModelWithProjection(CLIPTextConfig(**config))
        self.normalize = normalize

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        out = self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).text_embeds
        return nn.functional.normalize(out, dim=-1) if self.normalize else out


class CLIPVisionTower(nn.Module):
    def __init__(self, config: Mapping[str, Any], normalize: bool) -> None:
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        self.model = CLIPVisionModelWithProjection(CLIPVisionConfig(**config))
        self.normalize = normalize

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixels).image_embeds
        return nn.functional.normalize(out, dim=-1) if self.normalize else out


def _tokenizer_folder(value: Any) -> Path:
    path = Path(str(value))
    if path.is_dir() or path.is_file():
        return path
    return resolve_text_model(str(value))


def _clip_folder(model: str, repo: str) -> Path:
    try:
        return resolve_text_model(repo)
    except ConfigError:
        raise ConfigError(
            f"the pretrained weights of '{model}' ({repo}) are not on this machine (not in the "
            "Hugging Face cache) and finetuner never downloads. Copy that model folder here and "
            "pass model_options={'model_path': '/path/to/folder'}, or train randomly "
            "initialised towers with model_options={'pretrained': False, 'config': {...}, "
            "'tokenizer': '/path/to/tokenizer'}."
        ) from None


def _eos_id(tokenizer_json: str) -> int | None:
    vocab = json.loads(tokenizer_json).get("model", {}).get("vocab", {})
    for token in _EOS_TOKENS:
        if isinstance(vocab, dict) and token in vocab:
            return int(vocab[token])
    return None


def _resolve(model: str, repo: str, options: Mapping[str, Any]) -> dict[str, Any]:
    check_options(model, options, _OPTIONS)
    pretrained = options.get("pretrained", True)
    if not isinstance(pretrained, bool):
        raise ConfigError(f"model_options: pretrained must be true or false, not {pretrained!r}.")
    overrides = dict(options.get("config") or {})
    folder: Path | None = None
    if pretrained or options.get("model_path"):
        folder = Path(options.get("model_path") or _clip_folder(model, repo))
        try:
            base = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"'{folder}' has no config.json; it is not a CLIP folder.") from None
    elif overrides:
        base = {}
    else:
        raise ConfigError(
            f"model_options: '{model}' with pretrained=False needs a 'config' (text_config, "
            "vision_config, projection_dim) and a 'tokenizer' folder, or a model_path."
        )
    text_config = {**(base.get("text_config") or {}), **(overrides.get("text_config") or {})}
    vision_config = {**(base.get("vision_config") or {}), **(overrides.get("vision_config") or {})}
    projection = overrides.get("projection_dim", base.get("projection_dim", 512))
    text_config["projection_dim"] = vision_config["projection_dim"] = int(projection)
    for config in (text_config, vision_config):
        for key in ("_name_or_path", "transformers_version", "architectures", "model_type"):
            config.pop(key, None)
    tokenizer_source = options.get("tokenizer") or folder
    if tokenizer_source is None:
        raise ConfigError(
            f"model_options: '{model}' with pretrained=False needs 'tokenizer': the folder (or "
            "tokenizer.json) of a tokenizer, e.g. the folder of "
            "'sentence-transformers/all-MiniLM-L6-v2'."
        )
    tokenizer_path = _tokenizer_folder(tokenizer_source)
    if "eos_token_id" not in text_config or not pretrained:
        tokenizer_json = read_tokenizer(tokenizer_path)
        eos = _eos_id(tokenizer_json)
        if eos is not None and "eos_token_id" not in (overrides.get("text_config") or {}):
            text_config["eos_token_id"] = eos
    max_length = int(options.get("max_length", text_config.get("max_position_embeddings", 77)))
    lora = {"lora": resolve_lora(options["lora"], model_type="clip")} if "lora" in options else {}
    return {
        "pretrained": pretrained,
        "model_path": str(folder) if folder is not None else None,
        "tokenizer": str(tokenizer_path),
        "text_config": text_config,
        "vision_config": vision_config,
        "max_length": max_length,
        "normalize": bool(options.get("normalize", True)),
        "image_size": int(vision_config.get("image_size", 224)),
        **lora,
    }


def _build(options: Mapping[str, Any]) -> nn.ModuleDict:
    towers = nn.ModuleDict(
        {
            TEXT_TOWER: CLIPTextTower(options["text_config"], options["normalize"]),
            VISION_TOWER: CLIPVisionTower(options["vision_config"], options["normalize"]),
        }
    )
    if options.get("pretrained") and options.get("model_path"):
        from transformers import (
            CLIPTextConfig,
            CLIPTextModelWithProjection,
            CLIPVisionConfig,
            CLIPVisionModelWithProjection,
        )

        try:
            with quiet_transformers():  # the merged configs: overrides apply
                towers[TEXT_TOWER].model = CLIPTextModelWithProjection.from_pretrained(
                    options["model_path"],
                    config=CLIPTextConfig(**options["text_config"]),
                    local_files_only=True,
                )
                towers[VISION_TOWER].model = CLIPVisionModelWithProjection.from_pretrained(
                    options["model_path"],
                    config=CLIPVisionConfig(**options["vision_config"]),
                    local_files_only=True,
                )
        except Exception as exc:
            raise ConfigError(
                f"could not load the CLIP weights from '{options['model_path']}': {exc}"
            ) from exc
    if options.get("lora"):
        for name, tower in towers.items():
            inject_lora(tower.get_submodule("model"), options["lora"], model=name)
    return towers


def _preprocessor(
    options: Mapping[str, Any], tower: str | None, files: Mapping[str, bytes] | None
) -> Any:
    if tower == VISION_TOWER:
        size = int(options["image_size"])
        return ImagePreprocessor(height=size, width=size, mean=CLIP_MEAN, std=CLIP_STD)
    if files and "tokenizer.json" in files:
        tokenizer_json = files["tokenizer.json"].decode("utf-8")
    else:
        tokenizer_json = read_tokenizer(Path(options["tokenizer"]))
    return TextPreprocessor(tokenizer_json, int(options["max_length"]))


def _spec(name: str, repo: str, description: str, dim: int) -> ModelSpec:
    return ModelSpec(
        name=name,
        task="text-to-image",
        description=description,
        build=_build,
        resolve_options=lambda options, shape: _resolve(name, repo, options),
        output_dim=lambda options: int(
            (options.get("text_config") or {}).get("projection_dim", dim)
        ),
        architecture="CLIP",
        towers={TEXT_TOWER: "text", VISION_TOWER: "image"},
        preprocessor=_preprocessor,
        for_rebuild=lambda options: {**options, "pretrained": False},
    )


SPECS: dict[str, ModelSpec] = {
    "clip-base-en": _spec(
        "clip-base-en",
        "openai/clip-vit-base-patch32",
        "CLIP ViT-B/32 (openai/clip-vit-base-patch32, 512 dims) from a local copy or the "
        "Hugging Face cache; towers clip-text and clip-vision; or random towers of any size "
        "with pretrained=False, config and tokenizer",
        512,
    ),
    "clip-large-en": _spec(
        "clip-large-en",
        "openai/clip-vit-large-patch14",
        "CLIP ViT-L/14 (openai/clip-vit-large-patch14, 768 dims) from a local copy or the "
        "Hugging Face cache; towers clip-text and clip-vision",
        768,
    ),
}
