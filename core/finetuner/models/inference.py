"""Using models after training: ``get_model``, ``build_model``, ``encode`` and ``cos_sim``."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from ..data import encodable_values
from ..encoding import encode_items, resolve_device
from ..errors import ArtifactError, ConfigError, DataError, FinetunerError
from .artifact import ModelRecord, load_model_records, rebuild_module
from .onnx import OnnxModule
from .prompts import check_prompt_role, with_prompt
from .registry import get_spec
from .spec import Preprocessor

__all__ = [
    "EmbeddingModel",
    "build_model",
    "check_truncate_dim",
    "choose_model",
    "cos_sim",
    "encode",
    "get_model",
    "truncate_embeddings",
]


def check_truncate_dim(truncate_dim: Any, size: int | None) -> int | None:
    """*truncate_dim* checked: ``None``, or an integer from 1 to the embedding *size* (when
    known)."""
    if truncate_dim is None:
        return None
    known = f" of the model's embedding size {size}" if size else ""
    if isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int) or truncate_dim < 1:
        raise ConfigError(
            f"truncate_dim must be a positive integer (the number of leading components to "
            f"keep){known}, not {truncate_dim!r}."
        )
    if size is not None and truncate_dim > size:
        raise ConfigError(
            f"truncate_dim={truncate_dim} is larger than the model's embedding size {size}; "
            f"give a truncate_dim from 1 to {size}, or None for the full vectors."
        )
    return truncate_dim


def truncate_embeddings(embeddings: np.ndarray, truncate_dim: int) -> np.ndarray:
    """The first *truncate_dim* components of each row of *embeddings*, scaled back to unit
    L2 norm (Matryoshka truncation); float32."""
    check_truncate_dim(truncate_dim, int(embeddings.shape[1]) if embeddings.size else None)
    head = np.asarray(embeddings[:, :truncate_dim], dtype=np.float32)
    norms = np.linalg.norm(head, axis=1, keepdims=True)
    return (head / np.clip(norms, 1e-12, None)).astype(np.float32)


class EmbeddingModel:
    """A model ready for inference: the module, its preprocessor (tokenizer, image resizing,
    or none for tensors), its name and metadata, a device and a default batch size.
    ``finetuner.encode(model, data)`` or ``model.encode(data)`` embed data.

    *truncate_dim* makes every encoding keep the first that many components, renormalised to
    unit length (for Matryoshka-trained models); ``None`` keeps the full vectors."""

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        name: str = "model",
        metadata: dict[str, Any] | None = None,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        preprocessor: Any = None,
        truncate_dim: int | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an integer of at least 1, not {batch_size!r}.")
        self.device = resolve_device(str(device)) if device is not None else resolve_device("auto")
        self.module = module.to(self.device).eval()
        self.name = name
        self.metadata = dict(metadata or {})
        self.batch_size = batch_size
        self.preprocessor = preprocessor if preprocessor is not None else Preprocessor()
        self.truncate_dim = check_truncate_dim(truncate_dim, self.embedding_size)

    @property
    def embedding_size(self) -> int | None:
        """The size of the full vectors, when the metadata records it (artifacts do)."""
        size = self.metadata.get("output_dim")
        return int(size) if size else None

    @property
    def prompts(self) -> dict[str, str]:
        """The model's ``query_prompt`` and ``document_prompt`` options, where it has them."""
        options = self.metadata.get("options") or {}
        return {k: v for k, v in options.items() if k.endswith("_prompt") and v}

    @property
    def modality(self) -> str:
        return str(
            self.metadata.get("modality") or getattr(self.preprocessor, "modality", "tensor")
        )

    def encode(
        self,
        data: Any,
        batch_size: int | None = None,
        precision: str = "32",
        *,
        truncate_dim: int | None = None,
        prompt: str | None = None,
    ) -> Any:
        return encode(
            self,
            data,
            batch_size=batch_size or self.batch_size,
            precision=precision,
            truncate_dim=truncate_dim,
            prompt=prompt,
        )

    def __repr__(self) -> str:
        return (
            f"EmbeddingModel(name={self.name!r}, module={type(self.module).__name__}, "
            f"modality={self.modality!r}, device='{self.device}')"
        )


def choose_model(names: list[str], select_model: str | None, what: str) -> str:
    """The name *select_model* picks among *names* of *what*: the only one when there is one."""
    if select_model is not None:
        if select_model not in names:
            raise ConfigError(f"{what} has no model '{select_model}'; it holds {', '.join(names)}.")
        return select_model
    if len(names) == 1:
        return names[0]
    raise ConfigError(
        f"{what} holds several models ({', '.join(names)}); choose one with select_model=..."
    )


def _check_artifact_argument(artifact: Any) -> None:
    if isinstance(artifact, (str, os.PathLike)):
        return
    if hasattr(artifact, "artifact_path"):
        raise ConfigError(
            "get_model takes an artifact's path, not a run; pass run.artifact_path "
            "(or the zip written by run.save_artifact())."
        )
    raise ConfigError(
        f"get_model takes the path of an artifact folder or zip, not {type(artifact).__name__}; "
        "pass run.artifact_path or the zip written by run.save_artifact()."
    )


def get_model(
    artifact: str | os.PathLike[str],
    *,
    batch_size: int = 32,
    select_model: str | None = None,
    device: str | None = None,
    model: torch.nn.Module | None = None,
    is_onnx: bool = False,
    merge_lora: bool = False,
    truncate_dim: int | None = None,
) -> EmbeddingModel:
    """Load a model from an artifact folder or zip (``run.artifact_path``, ``run.save_artifact()``).

    Registry models are rebuilt from the stored options, with their preprocessor (e.g. the
    tokenizer) from the artifact; for a custom module, pass an instance of it as *model* and
    its weights are loaded into it. *select_model* picks one model of a two-tower artifact
    (``'clip-text'`` or ``'clip-vision'``). *is_onnx* runs the artifact's ONNX export with
    onnxruntime instead of torch (the run must have been fit with ``to_onnx=True``).

    A model trained with LoRA comes back with its adapters (peft layers); *merge_lora* folds
    them into the base weights and returns a plain module computing the same embeddings.

    *truncate_dim* makes the model keep the first that many components of each vector,
    renormalised to unit length (see :func:`encode`). The model's prompt options
    (``query_prompt``, ``document_prompt``) come back with it.
    """
    _check_artifact_argument(artifact)
    records, _ = load_model_records(artifact)
    chosen = choose_model([r.name for r in records], select_model, "the artifact")
    record = next(r for r in records if r.name == chosen)
    module: torch.nn.Module
    if is_onnx:
        if record.onnx is None:
            raise ConfigError(
                f"the artifact's model '{record.name}' has no ONNX export; fit with "
                "to_onnx=True, or load it with is_onnx=False."
            )
        module = OnnxModule(record.onnx)
    else:
        module = rebuild_module(record, model, merge=merge_lora)
    registry_name = record.metadata.get("registry_name")
    preprocessor = (
        _stored_preprocessor(record, registry_name)
        if registry_name and model is None
        else Preprocessor()
    )
    return EmbeddingModel(
        module,
        name=record.name,
        metadata=record.metadata,
        batch_size=batch_size,
        device=device,
        preprocessor=preprocessor,
        truncate_dim=truncate_dim,
    )


def _stored_preprocessor(record: ModelRecord, registry_name: str) -> Any:
    """The preprocessor of *record* from its stored files (a tokenizer), which must load."""
    try:
        return get_spec(registry_name).build_preprocessor(
            record.metadata.get("options") or {}, record.metadata.get("tower"), record.files
        )
    except FinetunerError:
        raise
    except Exception as exc:  # tokenizers and image libraries raise their own errors
        raise ArtifactError(
            f"{record.source or 'the artifact'}: its preprocessor files "
            f"({', '.join(sorted(record.files)) or 'none'}) do not load "
            f"({type(exc).__name__}: {exc}); they were edited or damaged."
        ) from None


def build_model(
    name: str,
    model_options: dict[str, Any] | None = None,
    *,
    batch_size: int = 32,
    select_model: str | None = None,
    device: str | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> EmbeddingModel:
    """Build a registry model (with its initial, not fine-tuned, weights) for inference;
    *select_model* picks a tower of a two-tower model. *input_shape*, the shape of one tensor
    item, sizes models that take it from the data (``mlp``)."""
    if not isinstance(name, str):
        raise ConfigError(
            f"build_model takes a registry model name or a local model folder, not "
            f"{type(name).__name__}; see finetuner.describe_models()."
        )
    spec = get_spec(name)
    options = spec.resolve_options(model_options or {}, input_shape)
    built = spec.build(options)
    if spec.towers:
        tower: str | None = choose_model(list(spec.towers), select_model, f"model '{name}'")
        module = built[tower]  # type: ignore[index]
    else:
        if select_model is not None:
            raise ConfigError(
                f"model '{name}' has a single tower; select_model applies to two-tower models."
            )
        tower, module = None, built
    preprocessor = spec.build_preprocessor(options, tower)
    return EmbeddingModel(
        module,
        name=tower or name,
        metadata={
            "registry_name": name,
            "tower": tower,
            "modality": spec.modality_of(tower),
            "options": options,
        },
        batch_size=batch_size,
        device=device,
        preprocessor=preprocessor,
    )


def encode(
    model: EmbeddingModel | torch.nn.Module,
    data: Any,
    batch_size: int = 32,
    precision: str = "32",
    *,
    truncate_dim: int | None = None,
    prompt: str | None = None,
) -> Any:
    """Embed *data* with *model*.

    A ``DocList`` gets its documents' ``embedding`` filled in place and is returned; a list of
    texts or image paths, a tensor, a numpy array or a list of tensors gives a ``(n, dim)``
    float32 numpy array. *precision* ``'bf16'`` (CPU or CUDA) or ``'16-mixed'`` (CUDA)
    autocasts the forward pass, which is faster where the hardware has it; the vectors differ
    from float32 ones in their low bits and are returned as float32.

    *truncate_dim* keeps the first that many components of each vector and scales them back
    to unit L2 norm (default: the model's own ``truncate_dim``, else the full vectors).
    *prompt* ``'query'`` or ``'document'`` puts the model's ``query_prompt`` or
    ``document_prompt`` option before each text (nothing when the model has none); ``None``
    encodes the texts as they are.
    """
    check_prompt_role(prompt)
    options: dict[str, Any] = {}
    if isinstance(model, EmbeddingModel):
        module, preprocessor, modality = model.module, model.preprocessor, model.modality
        options = model.metadata.get("options") or {}
        if truncate_dim is None:
            truncate_dim = model.truncate_dim
        check_truncate_dim(truncate_dim, model.embedding_size)
    elif isinstance(model, torch.nn.Module):
        module, preprocessor, modality = model, Preprocessor(), "tensor"
        check_truncate_dim(truncate_dim, None)
    else:
        raise ConfigError(
            f"encode needs a model from get_model/build_model or a torch.nn.Module, got {type(model).__name__}."
        )
    values, docs = encodable_values(data, modality)
    total = int(values.shape[0]) if isinstance(values, torch.Tensor) else len(values)
    _check_tensor_batch(values, options)
    embeddings = (
        _encode_values(
            module, with_prompt(preprocessor, options, prompt), values, batch_size, precision
        )
        if total
        else np.zeros((0, 0), np.float32)
    )
    _check_finite_embeddings(embeddings)
    if truncate_dim is not None and total:
        embeddings = truncate_embeddings(embeddings, truncate_dim)
    if docs is None:
        return embeddings
    for doc, vector in zip(docs, embeddings):
        doc.embedding = vector
    return docs


def _encode_values(
    module: torch.nn.Module, preprocessor: Any, values: Any, batch_size: int, precision: str
) -> np.ndarray:
    """The embeddings of *values*; a tensor batch the module cannot take is a DataError."""
    try:
        return encode_items(
            module, preprocessor, values, batch_size=batch_size, precision=precision
        )
    except (RuntimeError, IndexError) as exc:
        if not isinstance(values, torch.Tensor) or isinstance(exc, torch.OutOfMemoryError):
            raise
        raise DataError(
            f"the model cannot embed tensors of shape {tuple(values.shape[1:])} (data of shape "
            f"{tuple(values.shape)}): {exc}. Give items of the shape the model was trained on."
        ) from exc


def _check_tensor_batch(values: Any, options: dict[str, Any]) -> None:
    """A tensor batch is ``(n, ...)``, with the model's ``input_size`` last where it has one."""
    if not isinstance(values, torch.Tensor):
        return
    if values.ndim < 2:
        raise DataError(
            f"encode takes a batch of items, shape (n, ...), not a tensor of shape "
            f"{tuple(values.shape)}; for one item pass x[None] (or x.unsqueeze(0))."
        )
    size = options.get("input_size")
    if isinstance(size, int) and values.shape[0] and values.shape[-1] != size:
        raise DataError(
            f"the data's items have {values.shape[-1]} features (shape {tuple(values.shape)}), "
            f"but the model takes {size}; encode items of the size it was trained on."
        )


def _check_finite_embeddings(embeddings: np.ndarray) -> None:
    if not embeddings.size:
        return
    bad = np.flatnonzero(~np.isfinite(embeddings).all(axis=1))
    if len(bad):
        raise DataError(
            f"the embeddings of {len(bad)} item(s) (positions {', '.join(map(str, bad[:5]))}"
            f"{', ...' if len(bad) > 5 else ''}) are NaN or infinite: check those items for NaN "
            "or infinite values, or the model's weights (a fit that diverged)."
        )


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
