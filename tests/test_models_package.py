"""The models package: its layout (old paths, light import, no cycles) and the pieces it was
split into (the spec, the MLP, the registry, model folders, the artifact's YAML)."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import finetuner
from finetuner.errors import ConfigError, RunError
from finetuner.models import MLP, ModelSpec, Preprocessor, get_spec, list_models, register_model
from finetuner.models.artifact import (
    dump_yaml,
    load_model_records,
    rebuild_module,
    write_artifact,
)
from finetuner.models.backbones.model_folders import (
    read_json,
    read_tokenizer,
    resolve_text_model,
    sentence_transformers_defaults,
)
from finetuner.models.mlp import MLP_SPEC
from finetuner.models.registry import _registered

PACKAGE = Path(finetuner.__file__).parent
MODELS = PACKAGE / "models"

# --------------------------------------------------------------------------------------------
# Layout

OLD_PATHS = {
    "finetuner.artifacts": "finetuner.models.artifact",
    "finetuner.images": "finetuner.models.images",
    "finetuner.inference": "finetuner.models.inference",
    "finetuner.onnx_export": "finetuner.models.onnx",
    "finetuner.backbones": "finetuner.models.backbones",
    "finetuner.backbones.clip": "finetuner.models.backbones.clip",
    "finetuner.backbones.common": "finetuner.models.backbones.common",
    "finetuner.backbones.text": "finetuner.models.backbones.text",
    "finetuner.backbones.vision": "finetuner.models.backbones.vision",
}

# What each old module offered; its new module keeps every name.
OLD_NAMES = {
    "finetuner.models": [
        "MLP",
        "MODELS_GROUP",
        "ModelSpec",
        "Preprocessor",
        "describe_models",
        "get_spec",
        "is_text_list",
        "list_models",
        "register_model",
    ],
    "finetuner.artifacts": [
        "FORMAT_VERSION",
        "ModelRecord",
        "artifact_size",
        "load_model_records",
        "load_weights",
        "rebuild_module",
        "write_artifact",
    ],
    "finetuner.images": ["IMAGENET_MEAN", "IMAGENET_STD", "ImagePreprocessor", "load_image"],
    "finetuner.inference": ["EmbeddingModel", "build_model", "cos_sim", "encode", "get_model"],
    "finetuner.onnx_export": [
        "INPUT_NAME",
        "OUTPUT_NAME",
        "ModelInput",
        "OnnxModule",
        "export_onnx",
        "onnx_available",
    ],
    "finetuner.backbones.common": [
        "EmbeddingHead",
        "check_freeze",
        "check_options",
        "check_output_dim",
        "freeze_parameters",
    ],
    "finetuner.backbones.text": [
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
    ],
    "finetuner.backbones.clip": [
        "CLIP_MEAN",
        "CLIP_STD",
        "SPECS",
        "TEXT_TOWER",
        "VISION_TOWER",
        "CLIPTextTower",
        "CLIPVisionTower",
    ],
    "finetuner.backbones.vision": [
        "POOLINGS",
        "PRETRAINED_FILES",
        "SPECS",
        "WEIGHTS_DIR_ENV",
        "EfficientNet",
        "GeneralizedMeanPooling",
        "GlobalPooling",
        "ImageEmbedder",
        "ResNet",
        "efficientnet_b4",
        "efficientnet_b7",
        "find_pretrained_weights",
        "load_weights",
        "make_pooling",
        "resnet50",
        "resnet152",
        "weight_dirs",
    ],
}


@pytest.mark.parametrize(("old", "new"), sorted(OLD_PATHS.items()))
def test_an_old_module_path_is_the_new_module(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)


def test_an_old_submodule_imports_with_from_syntax():
    from finetuner.backbones.text import TextPreprocessor
    from finetuner.models.backbones.text import TextPreprocessor as moved

    assert TextPreprocessor is moved


@pytest.mark.parametrize("old", sorted(OLD_NAMES))
def test_every_name_of_an_old_module_is_still_there(old):
    module = importlib.import_module(old)
    missing = [name for name in OLD_NAMES[old] if not hasattr(module, name)]
    assert missing == []


def test_require_onnx_and_dump_yaml_are_public():
    from finetuner.models.onnx import __all__ as onnx_names

    assert "require_onnx" in onnx_names
    assert "dump_yaml" in importlib.import_module("finetuner.models.artifact").__all__


def test_importing_models_leaves_the_heavy_libraries_unloaded():
    code = (
        "import sys, finetuner.models\n"
        "finetuner.models.list_models()\n"
        "heavy = ('transformers', 'torchvision', 'onnx', 'onnxruntime', 'tokenizers')\n"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The finetuner modules an import statement of *path* names (not the parents that Python
    imports on the way, which every submodule imports)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "finetuner"]
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
    target = ".".join(p for p in (base, node.module or "") if p)
    if target.split(".")[0] != "finetuner":
        return []
    names = [target]
    for alias in node.names:  # `from .backbones import text` imports the submodule text
        candidate = PACKAGE.parent.joinpath(*f"{target}.{alias.name}".split("."))
        if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
            names.append(f"{target}.{alias.name}")
    return names


def _top_level_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update(_imported(path, node))
    return found


def _file_of(module: str) -> Path | None:
    path = PACKAGE.parent.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_the_models_package_has_no_import_cycle():
    graph: dict[str, set[str]] = {}
    todo = [_module_name(p) for p in MODELS.rglob("*.py")]
    while todo:
        module = todo.pop()
        if module in graph:
            continue
        path = _file_of(module)
        graph[module] = set() if path is None else _top_level_imports(path)
        todo.extend(graph[module])

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            module, trail = stack.pop()
            for imported in graph.get(module, ()):
                if imported == start:
                    return [*trail, start]
                if imported not in trail:
                    stack.append((imported, [*trail, imported]))
        return None

    cycles = [c for m in sorted(graph) if m.startswith("finetuner.models") if (c := cycle_from(m))]
    assert cycles == []


def test_the_models_package_imports_finetuner_modules_at_the_top_only():
    inside = []
    for path in sorted(MODELS.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and _imported(path, node):
                    inside.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert inside == []


# --------------------------------------------------------------------------------------------
# The spec and the MLP


def test_a_spec_without_a_preprocessor_takes_tensors():
    spec = ModelSpec(
        name="tiny",
        task="any",
        description="",
        build=lambda options: torch.nn.Identity(),
        resolve_options=lambda options, shape: dict(options),
    )
    pre = spec.build_preprocessor({})
    assert type(pre) is Preprocessor
    batch = pre([np.ones(2, dtype=np.int64), np.zeros(2, dtype=np.int64)])
    assert batch.dtype == torch.float32 and batch.shape == (2, 2)
    assert spec.modality_of(None) == "tensor"
    assert spec.output_dim({}) is None


def test_the_mlp_spec_infers_its_input_size_and_checks_the_data():
    resolved = MLP_SPEC.resolve_options({}, (2, 3))
    assert resolved == {
        "hidden_sizes": [128, 64],
        "activation": "relu",
        "bias": True,
        "l2": False,
        "input_size": 6,
    }
    assert MLP_SPEC.output_dim(resolved) == 64
    module = MLP_SPEC.build(resolved)
    assert isinstance(module, MLP)
    assert module(torch.zeros(5, 2, 3)).shape == (5, 64)
    with pytest.raises(ConfigError, match=r"input_size=4 but the data's items have shape \(2, 3\)"):
        MLP_SPEC.resolve_options({"input_size": 4}, (2, 3))
    with pytest.raises(ConfigError, match="needs 'input_size' when there is no data"):
        MLP_SPEC.resolve_options({}, None)
    with pytest.raises(ConfigError, match="activation 'selu' is not one of relu, gelu, tanh"):
        MLP_SPEC.resolve_options({"activation": "selu"}, (3,))


def test_an_l2_mlp_gives_unit_vectors():
    torch.manual_seed(0)
    out = MLP(4, [3], l2=True)(torch.randn(6, 4))
    assert torch.allclose(out.norm(dim=-1), torch.ones(6))


# --------------------------------------------------------------------------------------------
# The registry


def test_a_registered_model_is_listed_and_found(monkeypatch):
    monkeypatch.setattr("finetuner.models.registry._registered", dict(_registered))
    spec = ModelSpec(
        name="test-identity",
        task="any",
        description="the identity",
        build=lambda options: torch.nn.Identity(),
        resolve_options=lambda options, shape: dict(options),
    )
    register_model(spec)
    assert "test-identity" in list_models()
    assert get_spec("test-identity") is spec


def test_a_model_folder_is_a_text_model(tmp_path):
    spec = get_spec(str(tmp_path))
    assert spec.name == str(tmp_path)
    assert spec.modality == "text" and spec.task == "text-to-text"


def test_an_unknown_model_lists_the_close_names():
    with pytest.raises(
        ConfigError, match=r"unknown model 'resnet-bsae'.*Did you mean 'resnet-base'"
    ):
        get_spec("resnet-bsae")


# --------------------------------------------------------------------------------------------
# Model folders


def test_a_missing_json_file_reads_as_none(tmp_path):
    assert read_json(tmp_path / "config.json") is None
    (tmp_path / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    assert read_json(tmp_path / "config.json") == {"model_type": "bert"}


def test_sentence_transformers_files_give_the_defaults(tmp_path):
    assert sentence_transformers_defaults(tmp_path) == {
        "pooling": "mean",
        "normalize": False,
        "max_length": None,
    }
    modules = [
        {"type": "sentence_transformers.models.Transformer", "path": ""},
        {"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"},
        {"type": "sentence_transformers.models.Normalize", "path": "2_Normalize"},
    ]
    (tmp_path / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_cls_token": True}), encoding="utf-8"
    )
    (tmp_path / "sentence_bert_config.json").write_text('{"max_seq_length": 128}', encoding="utf-8")
    assert sentence_transformers_defaults(tmp_path) == {
        "pooling": "cls",
        "normalize": True,
        "max_length": 128,
    }


def test_a_model_folder_needs_its_config(tmp_path):
    with pytest.raises(ConfigError, match=r"is a folder without config\.json"):
        resolve_text_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    assert resolve_text_model(str(tmp_path)) == tmp_path.absolute()


def test_a_tokenizer_is_read_from_its_file_or_its_folder(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0"}', encoding="utf-8")
    assert read_tokenizer(tmp_path / "tokenizer.json") == '{"version": "1.0"}'
    assert read_tokenizer(tmp_path) == '{"version": "1.0"}'


# --------------------------------------------------------------------------------------------
# The artifact's YAML


def test_dump_yaml_writes_plain_values_in_their_order():
    class Named:
        def __str__(self) -> str:
            return "named"

    text = dump_yaml(
        {
            "b": (1, 2.5),
            "a": {3: np.float32(0.5), "t": torch.tensor(7)},
            "none": None,
            "obj": Named(),
            "ü": True,
        }
    )
    assert list(yaml.safe_load(text)) == ["b", "a", "none", "obj", "ü"]
    assert yaml.safe_load(text) == {
        "b": [1, 2.5],
        "a": {"3": 0.5, "t": 7},
        "none": None,
        "obj": "named",
        "ü": True,
    }
    assert "ü" in text  # unicode as it is, not escaped


# --------------------------------------------------------------------------------------------
# Reading artifacts


def _write_mlp_artifact(target: Path) -> MLP:
    torch.manual_seed(0)
    options = MLP_SPEC.resolve_options({"hidden_sizes": [3]}, (4,))
    module = MLP_SPEC.build(options)
    write_artifact(
        target,
        models={"model": module},
        model_metadata={"model": {"registry_name": "mlp", "options": options}},
        config={"model": "mlp"},
        metadata={"run": "r1"},
        metrics={},
        preprocessor_files={"model": {"vocab.txt": b"a b"}},
        onnx={"model": b"not really onnx"},
    )
    assert isinstance(module, MLP)
    return module


def test_an_artifact_reads_back_from_its_folder_and_from_a_zip_with_a_top_folder(tmp_path):
    module = _write_mlp_artifact(tmp_path / "artifact")
    archive = tmp_path / "artifact.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for file in (tmp_path / "artifact").rglob("*"):
            out.write(file, f"top/{file.relative_to(tmp_path / 'artifact').as_posix()}")

    for source in (tmp_path / "artifact", archive):
        (record,), metadata = load_model_records(source)
        assert metadata == {"format_version": 1, "run": "r1"}
        assert record.name == "model" and record.metadata["registry_name"] == "mlp"
        assert record.files == {"vocab.txt": b"a b"}
        assert record.onnx == b"not really onnx"
        rebuilt = rebuild_module(record)
        for key, value in module.state_dict().items():
            assert torch.equal(rebuilt.state_dict()[key], value), (source, key)


def test_what_is_not_an_artifact_is_named(tmp_path):
    with pytest.raises(RunError, match="no artifact at"):
        load_model_records(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(RunError, match="neither an artifact folder nor a zip file"):
        load_model_records(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match=r"holds no artifact \(expected models/<name>/metadata"):
        load_model_records(tmp_path / "empty")
    _write_mlp_artifact(tmp_path / "artifact")
    (tmp_path / "artifact" / "models" / "model" / "model.safetensors").unlink()
    with pytest.raises(RunError, match=r"model 'model' lacks metadata\.yml or model\.safetensors"):
        load_model_records(tmp_path / "artifact")
