"""Artifacts: a folder (or its zip) with weights as safetensors and the metadata to rebuild them.

Layout::

    config.yml            the resolved fit config
    metadata.yml          run, versions, duration, device, plugins used
    metrics.yml           {before: {...}, after: {...}}
    README.md             the model card (see :mod:`~finetuner.models.card`); loading never reads it
    example-results.yml   gathered example results, if any
    models/<name>/model.safetensors
    models/<name>/adapter.safetensors  LoRA runs: the adapters and the weights beside the base
    models/<name>/metadata.yml   registry name and resolved options, or the module's class
    models/<name>/preprocessor/  what the preprocessor needs, e.g. tokenizer.json (no code)
    models/<name>/model.onnx     with to_onnx=True: the model exported to ONNX

A LoRA run (``model_options={'lora': ...}``) stores ``adapter.safetensors``; where its base
model is the unchanged pretrained model of a folder on this machine (metadata
``adapter.base_weights: model_path``) that is all it stores, and loading rebuilds the base from
the folder; otherwise ``model.safetensors`` holds all the weights as well.

Loading reads YAML with a safe, bounded loader and tensors with safetensors: nothing is
unpickled, and the artifact is treated as untrusted input (see :mod:`.artifact_files`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write_bytes, atomic_write_text, dump_yaml, regular_files, replace_dir
from ..errors import ArtifactError, ConfigError
from .artifact_checks import (
    build_from_metadata,
    check_model_metadata,
    check_weights_fit,
    parse_metadata,
)
from .artifact_files import read_artifact_files
from .card import CARD_FILE, CardFacts, render_card
from .lora import adapter_state, inject_lora, load_adapter, merge_lora
from .registry import get_spec

__all__ = [
    "ModelRecord",
    "artifact_size",
    "check_declared_model",
    "dump_yaml",
    "load_artifact_config",
    "load_model_records",
    "load_record_weights",
    "load_weights",
    "rebuild_module",
    "write_artifact",
]

FORMAT_VERSION = 1
BASE_FROM_FOLDER = "model_path"
"""``adapter.base_weights`` of a LoRA model whose base is rebuilt from ``options.model_path``."""


@dataclass
class ModelRecord:
    """One model of an artifact: its metadata and tensors (not yet in a module)."""

    name: str
    metadata: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    files: dict[str, bytes] = field(default_factory=dict)
    """The preprocessor's files (e.g. ``tokenizer.json``)."""
    onnx: bytes | None = None
    """The ONNX export, when the run was fit with ``to_onnx=True``."""
    adapter: dict[str, torch.Tensor] = field(default_factory=dict)
    """LoRA runs: the adapters and the weights outside the base model."""
    source: str = ""
    """Where the model's metadata was read from, for error messages."""

    @property
    def lora(self) -> dict[str, Any] | None:
        """The resolved LoRA options the model was trained with, or ``None``."""
        return (self.metadata.get("options") or {}).get("lora")


def write_artifact(
    target: Path,
    *,
    models: Mapping[str, torch.nn.Module],
    model_metadata: Mapping[str, Mapping[str, Any]],
    config: Mapping[str, Any],
    metadata: Mapping[str, Any],
    metrics: Mapping[str, Any],
    examples: Mapping[str, Any] | None = None,
    preprocessor_files: Mapping[str, Mapping[str, bytes]] | None = None,
    onnx: Mapping[str, bytes] | None = None,
    card: CardFacts | None = None,
) -> Path:
    """Write the artifact into a temporary folder beside *target*, then rename it into place.

    The model card ``README.md`` is written last, from everything else the artifact holds and
    the fit's *card* facts."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / "models").mkdir(parents=True)
        atomic_write_text(tmp / "config.yml", dump_yaml(config))
        atomic_write_text(
            tmp / "metadata.yml", dump_yaml({"format_version": FORMAT_VERSION, **metadata})
        )
        atomic_write_text(tmp / "metrics.yml", dump_yaml(metrics))
        if examples:
            atomic_write_text(tmp / "example-results.yml", dump_yaml(examples))
        for name, module in models.items():
            folder = tmp / "models" / name
            folder.mkdir(parents=True)
            _write_weights(folder, module, model_metadata[name].get("adapter"))
            atomic_write_text(
                folder / "metadata.yml", dump_yaml({"name": name, **model_metadata[name]})
            )
            files = (preprocessor_files or {}).get(name) or {}
            if files:
                (folder / "preprocessor").mkdir()
                for file_name, data in files.items():
                    atomic_write_bytes(folder / "preprocessor" / file_name, data)
            if onnx and name in onnx:
                atomic_write_bytes(folder / "model.onnx", onnx[name])
        written = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        text = render_card(
            config=config,
            metadata=metadata,
            metrics=metrics,
            models=model_metadata,
            files=written,
            facts=card,
        )
        atomic_write_text(tmp / CARD_FILE, text)
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed write leaves no temporary folder
        raise
    return target


def _write_weights(
    folder: Path, module: torch.nn.Module, adapter: Mapping[str, Any] | None
) -> None:
    """``model.safetensors`` (all weights), unless the base model is rebuilt from its folder;
    and for a LoRA model ``adapter.safetensors``."""
    from safetensors.torch import save_file

    def save(state: Mapping[str, torch.Tensor], file: str) -> None:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
        save_file(_dedupe_shared(tensors), str(folder / file))

    if adapter:
        save(adapter_state(module), "adapter.safetensors")
    if not adapter or adapter.get("base_weights") != BASE_FROM_FOLDER:
        save(module.state_dict(), "model.safetensors")


def _dedupe_shared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing memory (tied weights): store each storage once
    by cloning the later names."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for key, tensor in state.items():
        ident = (tensor.untyped_storage().data_ptr(), int(tensor.storage_offset()))
        out[key] = tensor.clone() if ident in seen and tensor.numel() else tensor
        seen.add(ident)
    return out


def artifact_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in regular_files(path))


def load_model_records(
    artifact: str | os.PathLike[str],
) -> tuple[list[ModelRecord], dict[str, Any]]:
    """Read every model of an artifact folder or zip, plus its ``metadata.yml``."""
    path = Path(artifact)
    files = read_artifact_files(path)
    # Find the artifact root: the folder holding models/ (zips may add a top folder).
    roots = {
        key.split("models/")[0]
        for key in files
        if "models/" in key and key.endswith("metadata.yml")
    }
    if len(roots) != 1:
        raise ArtifactError(
            f"'{path}' holds no artifact (expected models/<name>/metadata.yml inside)."
        )
    root = roots.pop()
    prefix = f"{root}models/"
    names = sorted({key[len(prefix) :].split("/")[0] for key in files if key.startswith(prefix)})
    records = [_model_record(path, files, f"{prefix}{name}/", name) for name in names]
    metadata = parse_metadata(files.get(f"{root}metadata.yml"), f"artifact '{path}': metadata.yml")
    return records, metadata


def load_artifact_config(artifact: str | os.PathLike[str]) -> dict[str, Any]:
    """The resolved fit config (``config.yml``) of an artifact folder or zip; ``{}`` without."""
    path = Path(artifact)
    # config.yml alone: the export has read the weights already, through load_model_records
    files = read_artifact_files(path, lambda name: name.rpartition("/")[2] == "config.yml")
    found = sorted(files, key=len)
    if not found:
        return {}
    return parse_metadata(files[found[0]], f"artifact '{path}': {found[0]}")


def _tensors(
    path: Path, files: Mapping[str, bytes], key: str, name: str
) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file *key*, or none where the artifact lacks it."""
    from safetensors.torch import load as load_bytes

    if key not in files:
        return {}
    try:
        return load_bytes(files[key])
    except Exception as exc:  # safetensors refuses anything but its own format
        raise ArtifactError(
            f"artifact '{path}': models/{name}/{key.rpartition('/')[2]} is not a valid "
            f"safetensors file ({exc}); it was damaged or replaced, and is refused unread. Use "
            "the artifact the run wrote."
        ) from None


def _model_record(path: Path, files: Mapping[str, bytes], folder: str, name: str) -> ModelRecord:
    """The model *name* of the artifact *path*, from its *files* under *folder*."""
    meta_key, weights_key = f"{folder}metadata.yml", f"{folder}model.safetensors"
    adapter_key = f"{folder}adapter.safetensors"
    if meta_key not in files or (weights_key not in files and adapter_key not in files):
        raise ArtifactError(
            f"artifact '{path}': model '{name}' lacks metadata.yml or model.safetensors."
        )
    where = f"artifact '{path}': models/{name}/metadata.yml"
    meta = parse_metadata(files[meta_key], where)
    check_model_metadata(meta, where)
    pre = f"{folder}preprocessor/"
    return ModelRecord(
        name=name,
        metadata=meta,
        tensors=_tensors(path, files, weights_key, name),
        files={k[len(pre) :]: v for k, v in files.items() if k.startswith(pre)},
        onnx=files.get(f"{folder}model.onnx"),
        adapter=_tensors(path, files, adapter_key, name),
        source=where,
    )


def _base_folder_options(record: ModelRecord) -> Mapping[str, Any]:
    """The options that rebuild the base model of an adapter-only *record* from its folder."""
    options = record.metadata.get("options") or {}
    folder = options.get("model_path")
    if not folder or not (Path(folder) / "config.json").is_file():
        raise ConfigError(
            f"the artifact's model '{record.name}' stores only its LoRA adapter; its base "
            f"model is the pretrained model of the folder '{folder}', which is not on this "
            "machine. Put that model folder back at that path to load the artifact."
        )
    return options


def rebuild_module(
    record: ModelRecord, module: torch.nn.Module | None = None, *, merge: bool = False
) -> torch.nn.Module:
    """Rebuild a model from the registry (or fill the given *module*) and load its weights;
    *merge* folds LoRA adapters into plain layers."""
    registry_name = record.metadata.get("registry_name")
    if module is None:
        if not registry_name:
            cls = record.metadata.get("class", "a custom module")
            raise ConfigError(
                f"the artifact's model '{record.name}' is a custom module ({cls}), which cannot "
                "be rebuilt from the registry; create the module yourself and pass it: "
                f"get_model(artifact, model=YourModule(...))."
            )
        module = _rebuild_registered(record, registry_name)
    elif record.lora:
        inject_lora(module, record.lora, model=type(module).__name__)
    load_record_weights(
        module, record, f"the weights of model '{record.name}' do not fit the module"
    )
    return merge_lora(module) if merge and record.lora else module


def _declared_builder(record: ModelRecord, registry_name: str) -> Callable[[], torch.nn.Module]:
    """What builds the registry model *record*'s metadata declares; a builder that fails on
    tampered metadata raises an ArtifactError naming the file."""
    what = record.source or f"the artifact's model '{record.name}'"
    try:
        spec = get_spec(registry_name)
    except ConfigError as exc:
        raise ArtifactError(f"{what}: 'registry_name': {exc}") from None
    options = record.metadata.get("options") or {}
    tower = record.metadata.get("tower")

    # All weights stored: build nothing pretrained. Adapter only: the pretrained base.
    if record.tensors:
        resolved = build_from_metadata(lambda: spec.for_rebuild(options), what)
    else:
        resolved = _base_folder_options(record)

    def build() -> torch.nn.Module:
        built = spec.build(resolved)
        if tower and (not isinstance(built, torch.nn.ModuleDict) or tower not in built):
            raise ArtifactError(f"{what}: the model '{registry_name}' has no tower '{tower}'.")
        return built[tower] if tower else built  # type: ignore[index]

    return lambda: build_from_metadata(build, what)


def check_declared_model(record: ModelRecord) -> None:
    """Refuse a *record* whose weights do not fit the model its metadata declares, checked on
    the ``meta`` device (so a tampered metadata builds nothing large)."""
    registry_name = record.metadata.get("registry_name")
    if registry_name and record.tensors:
        what = record.source or f"the artifact's model '{record.name}'"
        check_weights_fit(_declared_builder(record, registry_name), record.tensors, what)


def _rebuild_registered(record: ModelRecord, registry_name: str) -> torch.nn.Module:
    """The registry model *record*'s metadata declares, once its weights are known to fit."""
    check_declared_model(record)
    return _declared_builder(record, registry_name)()


def load_record_weights(module: torch.nn.Module, record: ModelRecord, what: str) -> None:
    """Load the weights of *record* into *module*: all of them, or, for an adapter-only LoRA
    record, the adapter into a module whose base model is in place."""
    if record.tensors:
        load_weights(module, record.tensors, what)
    else:
        load_adapter(module, record.adapter, what)


def load_weights(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """Load *tensors* into *module* exactly (every key, every shape), or raise a
    ``ConfigError`` starting with *what*."""
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"{what} {type(module).__name__}: {str(exc).splitlines()[0]}") from exc
