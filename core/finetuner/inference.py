"""Using models after training: ``get_model``, ``build_model``, ``encode`` and ``cos_sim``."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from .artifacts import load_model_records, rebuild_module
from .errors import ConfigError, DataError

__all__ = ["EmbeddingModel", "build_model", "cos_sim", "encode", "get_model"]


class EmbeddingModel:
    """A model ready for inference: the module, its name and metadata, a device and a default
    batch size. ``finetuner.encode(model, data)`` or ``model.encode(data)`` embed data."""

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        name: str = "model",
        metadata: dict[str, Any] | None = None,
        batch_size: int = 32,
        device: str | torch.device | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, not {batch_size}.")
        from .trainer import resolve_device

        self.device = resolve_device(str(device)) if device is not None else resolve_device("auto")
        self.module = module.to(self.device).eval()
        self.name = name
        self.metadata = dict(metadata or {})
        self.batch_size = batch_size

    def encode(self, data: Any, batch_size: int | None = None) -> Any:
        return encode(self, data, batch_size=batch_size or self.batch_size)

    def __repr__(self) -> str:
        return f"EmbeddingModel(name={self.name!r}, module={type(self.module).__name__}, device='{self.device}')"


def get_model(
    artifact: str | os.PathLike[str],
    *,
    batch_size: int = 32,
    select_model: str | None = None,
    device: str | None = None,
    model: torch.nn.Module | None = None,
) -> EmbeddingModel:
    """Load a model from an artifact folder or zip (``run.artifact_path``, ``run.save_artifact()``).

    Registry models are rebuilt from the stored options; for a custom module, pass an instance
    of it as *model* and its weights are loaded into it. *select_model* picks one model of a
    multi-model artifact by name.
    """
    records, _ = load_model_records(artifact)
    if select_model is not None:
        chosen = [r for r in records if r.name == select_model]
        if not chosen:
            raise ConfigError(
                f"the artifact has no model '{select_model}'; it holds {', '.join(r.name for r in records)}."
            )
        record = chosen[0]
    elif len(records) == 1:
        record = records[0]
    else:
        raise ConfigError(
            f"the artifact holds several models ({', '.join(r.name for r in records)}); choose one "
            "with select_model=..."
        )
    module = rebuild_module(record, model)
    return EmbeddingModel(
        module, name=record.name, metadata=record.metadata, batch_size=batch_size, device=device
    )


def build_model(
    name: str,
    model_options: dict[str, Any] | None = None,
    *,
    batch_size: int = 32,
    select_model: str | None = None,
    device: str | None = None,
) -> EmbeddingModel:
    """Build a registry model (with its initial, not fine-tuned, weights) for inference."""
    from .models import get_spec

    if select_model is not None:
        raise ConfigError(
            f"model '{name}' has a single tower; select_model applies to two-tower models."
        )
    spec = get_spec(name)
    options = spec.resolve_options(model_options or {}, None)
    module = spec.build(options)
    return EmbeddingModel(
        module,
        name=name,
        metadata={"registry_name": name, "options": options},
        batch_size=batch_size,
        device=device,
    )


def _inputs(data: Any) -> tuple[torch.Tensor, Any]:
    """Inputs as one tensor, plus the DocList to fill (or None)."""
    from docarray import DocList

    if isinstance(data, DocList):
        if len(data) == 0:
            return torch.zeros(0), data
        tensors = []
        for i, doc in enumerate(data):
            tensor = getattr(doc, "tensor", None)
            if tensor is None:
                raise DataError(f"data[{i}] (id {doc.id}) has no tensor to encode.")
            tensors.append(
                torch.as_tensor(np.asarray(tensor))
                if not isinstance(tensor, torch.Tensor)
                else tensor
            )
        if not hasattr(data[0], "embedding"):
            raise DataError(
                f"documents of type {type(data[0]).__name__} have no `embedding` field to fill; "
                "use finetuner.Document or add `embedding: AnyEmbedding | None = None`."
            )
        return torch.stack([t.to(torch.float32) for t in tensors]), data
    if isinstance(data, torch.Tensor):
        return data.to(torch.float32), None
    if isinstance(data, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)), None
    if isinstance(data, (list, tuple)):
        if not data:
            return torch.zeros(0), None
        if all(isinstance(t, (torch.Tensor, np.ndarray)) for t in data):
            return torch.stack(
                [torch.as_tensor(np.asarray(t), dtype=torch.float32) for t in data]
            ), None
        if all(isinstance(t, str) for t in data):
            raise DataError(
                "this model takes tensors, not text; text backbones come with the text models."
            )
    raise DataError(
        f"cannot encode data of type {type(data).__name__}: pass a DocList, a tensor, a numpy "
        "array or a list of tensors."
    )


def encode(model: EmbeddingModel | torch.nn.Module, data: Any, batch_size: int = 32) -> Any:
    """Embed *data* with *model*.

    A ``DocList`` gets its documents' ``embedding`` filled in place and is returned; a tensor,
    numpy array or list of tensors gives a ``(n, dim)`` float32 numpy array.
    """
    from .trainer import encode_tensors

    module = model.module if isinstance(model, EmbeddingModel) else model
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(
            f"encode needs a model from get_model/build_model or a torch.nn.Module, got {type(model).__name__}."
        )
    inputs, docs = _inputs(data)
    embeddings = (
        encode_tensors(module, inputs, batch_size=batch_size)
        if len(inputs)
        else np.zeros((0, 0), np.float32)
    )
    if docs is None:
        return embeddings
    for doc, vector in zip(docs, embeddings):
        doc.embedding = vector
    return docs


def cos_sim(a: Any, b: Any) -> np.ndarray | float:
    """Cosine similarity between vectors (a float) or between the rows of two matrices."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    single = x.ndim == 1 and y.ndim == 1
    x2, y2 = np.atleast_2d(x), np.atleast_2d(y)
    if x2.shape[-1] != y2.shape[-1]:
        raise DataError(
            f"cos_sim: vectors have different sizes ({x2.shape[-1]} and {y2.shape[-1]})."
        )
    xn = x2 / np.clip(np.linalg.norm(x2, axis=-1, keepdims=True), 1e-12, None)
    yn = y2 / np.clip(np.linalg.norm(y2, axis=-1, keepdims=True), 1e-12, None)
    sims = xn @ yn.T
    return float(sims[0, 0]) if single else sims
