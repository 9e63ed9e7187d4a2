"""What an export starts from: one model of an artifact, rebuilt with its LoRA adapters merged,
and the parts of it that a target format has a place for."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ...errors import ConfigError
from ..artifact import ModelRecord, load_artifact_config, load_model_records, rebuild_module
from ..backbones.common import EmbeddingHead
from ..backbones.text import TextEncoder
from ..inference import check_truncate_dim, choose_model
from ..registry import get_spec
from ..spec import ModelSpec

__all__ = ["FORMATS", "ExportSource", "TextParts", "load_source", "refuse"]

FORMATS = ("sentence-transformers", "transformers", "onnx")
"""Every format an artifact exports to, in the order error messages list them."""


def refuse(target: str, model: str, what: str, *, fits: tuple[str, ...] = ()) -> ConfigError:
    """The error for a model part that format *target* cannot represent, naming those that can
    (*fits*; default: every other format)."""
    others = fits or tuple(f for f in FORMATS if f != target)
    return ConfigError(
        f"the {target} format cannot represent model '{model}': {what}. Export it as "
        + " or ".join(others)
        + " instead (--to FORMAT on the command line, format= of run.save_artifact)."
    )


@dataclass(frozen=True)
class TextParts:
    """A text backbone taken apart: the transformers model, the pooling of its token states,
    the projection head (``output_dim``) and whether the vectors are L2-normalised."""

    transformer: nn.Module
    pooling: str
    projection: nn.Linear | None
    normalize: bool
    hidden_size: int


@dataclass
class ExportSource:
    """One model of an artifact, ready to export."""

    artifact: Path
    record: ModelRecord
    module: nn.Module
    spec: ModelSpec | None
    truncate_dim: int | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.record.metadata.get("options") or {})

    @property
    def tower(self) -> str | None:
        return self.record.metadata.get("tower")

    @property
    def modality(self) -> str:
        return str(self.record.metadata.get("modality") or "tensor")

    @property
    def output_dim(self) -> int | None:
        size = self.record.metadata.get("output_dim")
        return int(size) if size else None

    @property
    def prompts(self) -> dict[str, str]:
        """``{'query': ..., 'document': ...}``: the model's prompt options, where it has them."""
        return {
            key[: -len("_prompt")]: value
            for key, value in self.options.items()
            if key in ("query_prompt", "document_prompt") and value
        }

    @property
    def tokenizer_json(self) -> str | None:
        data = self.record.files.get("tokenizer.json")
        return data.decode("utf-8") if data else None

    @property
    def matryoshka_dims(self) -> list[int] | None:
        """The sizes a ``MatryoshkaLoss`` trained, when the fit used one."""
        if self.config.get("loss") != "MatryoshkaLoss":
            return None
        dims = (self.config.get("loss_options") or {}).get("dims")
        return sorted(int(d) for d in dims) if dims else None

    def preprocessor(self) -> Any:
        """The model's preprocessor, rebuilt from the artifact's files."""
        assert self.spec is not None
        return self.spec.build_preprocessor(self.options, self.tower, self.record.files)

    def text_parts(self, target: str) -> TextParts:
        """The parts of a text backbone, or the error saying *target* needs one."""

        head = self.module
        if not (isinstance(head, EmbeddingHead) and isinstance(head.body, TextEncoder)):
            raise refuse(
                target,
                self.name,
                f"{self.kind()} is not a transformer text encoder",
                fits=("onnx",),
            )
        pooling = head.body.pooling.mode
        return TextParts(
            transformer=head.body.transformer,
            pooling=pooling,
            projection=head.projection,
            normalize=bool(head.normalize),
            hidden_size=int(head.body.transformer.config.hidden_size),
        )

    def kind(self) -> str:
        """What the model is, in words, for error messages."""
        registry = self.record.metadata.get("registry_name")
        if registry:
            return f"the registry model '{registry}'" + (f" ({self.tower})" if self.tower else "")
        return f"a custom module ({self.record.metadata.get('class', 'unknown class')})"


def load_source(
    artifact: str | os.PathLike[str],
    *,
    select_model: str | None = None,
    truncate_dim: int | None = None,
) -> ExportSource:
    """The model *select_model* of *artifact* (the only one when it holds one), LoRA merged."""
    records, _ = load_model_records(artifact)
    chosen = choose_model([r.name for r in records], select_model, "the artifact")
    record = next(r for r in records if r.name == chosen)
    registry_name = record.metadata.get("registry_name")
    if not registry_name:
        cls = record.metadata.get("class", "a custom module")
        raise ConfigError(
            f"the artifact's model '{record.name}' is a custom module ({cls}); no export format "
            "can rebuild it without its class. Load it with get_model(artifact, "
            "model=YourModule(...)) and export the module with "
            "finetuner.models.onnx.export_onnx(module, sample)."
        )
    module = rebuild_module(record, merge=True).eval()
    size = record.metadata.get("output_dim")
    check_truncate_dim(truncate_dim, int(size) if size else None)
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return ExportSource(
        artifact=Path(artifact),
        record=record,
        module=module,
        spec=get_spec(registry_name),
        truncate_dim=truncate_dim,
        config=load_artifact_config(artifact),
    )
