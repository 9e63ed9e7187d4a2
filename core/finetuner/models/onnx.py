"""Export an embedding model to ONNX, checked against torch, and run it as a torch module.

:func:`export_onnx` traces a module with torch's TorchScript-based exporter
(``torch.onnx.export(..., dynamo=False)``: the ``torch.export``-based one needs ``onnxscript``,
which finetuner does not depend on), then runs the result with onnxruntime on the sample and on
an input of another batch size (and, for token inputs, another sequence length) and refuses an
export whose outputs differ from torch's. Tracing records one path through ``forward``: Python
branches on tensor values or shapes, and Python-side randomness, are frozen at export time, and
the check is what catches that.

:class:`OnnxModule` wraps the exported bytes as a parameterless ``torch.nn.Module`` taking the
same input as the torch model, so it can stand in for it where finetuner encodes.

onnx and onnxruntime are optional: ``pip install "finetuner[onnx]"``.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DataError, FinetunerError

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "OnnxModule",
    "export_onnx",
    "onnx_available",
    "require_onnx",
]

OUTPUT_NAME = "embeddings"
"""The name of the exported model's output."""
INPUT_NAME = "input"
"""The name of the exported model's input when the module takes one tensor."""
_INSTALL_HINT = 'pip install "finetuner[onnx]"'
_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}

ModelInput: TypeAlias = torch.Tensor | Mapping[str, torch.Tensor]


def require_onnx() -> tuple[Any, Any]:
    """The ``onnx`` and ``onnxruntime`` modules, or a ConfigError saying how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise ConfigError(
            f"ONNX export needs the onnx and onnxruntime packages ({exc}); install them with "
            f"`{_INSTALL_HINT}` (or `pip install onnx onnxruntime`)."
        ) from exc
    return onnx, onnxruntime


def onnx_available() -> bool:
    """Whether onnx and onnxruntime can be imported, so :func:`export_onnx` can run."""
    try:
        require_onnx()
    except ConfigError:
        return False
    return True


def _session(model: bytes, providers: Sequence[str]) -> Any:
    _, onnxruntime = require_onnx()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: no notes about unused initializers
    return onnxruntime.InferenceSession(model, sess_options=options, providers=list(providers))


def _input_names(sample: ModelInput) -> list[str]:
    return [INPUT_NAME] if isinstance(sample, torch.Tensor) else sorted(sample)


def _as_tensors(sample: ModelInput) -> dict[str, torch.Tensor]:
    """The sample as ``{input name: tensor}`` on the CPU, refusing anything else."""
    if isinstance(sample, torch.Tensor):
        return {INPUT_NAME: sample.detach().cpu()}
    if not isinstance(sample, Mapping) or not sample:
        raise DataError(
            f"export_onnx: the sample must be a tensor or a dict of tensors (a batch of what the "
            f"module takes), not {type(sample).__name__}."
        )
    tensors = {}
    for name in _input_names(sample):
        value = sample[name]
        if not isinstance(value, torch.Tensor):
            raise DataError(
                f"export_onnx: the sample's '{name}' is a {type(value).__name__}; every value of "
                "a dict sample must be a tensor."
            )
        tensors[name] = value.detach().cpu()
    return tensors


def _is_token_input(tensor: torch.Tensor) -> bool:
    """2-D integer tensors (token ids, masks) have a sequence axis as well as a batch axis."""
    return tensor.ndim == 2 and not torch.is_floating_point(tensor)


def _dynamic_axes(tensors: Mapping[str, torch.Tensor]) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {OUTPUT_NAME: {0: "batch"}}
    for name, tensor in tensors.items():
        if tensor.ndim == 0:
            continue
        axes[name] = {0: "batch", 1: "sequence"} if _is_token_input(tensor) else {0: "batch"}
    return axes


def _other_inputs(tensors: Mapping[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Inputs whose shapes differ from the sample's, to check that the export generalises: the
    first row alone (when the sample has several), and the sample with its first row appended
    and, for token inputs, the last position cut off (one position of padding added when there
    is only one; cutting never goes past the model's maximum length)."""
    first = next(iter(tensors.values()))
    if first.ndim == 0 or first.shape[0] == 0:
        return []
    others = []
    if first.shape[0] > 1:
        others.append({name: t[:1] if t.ndim else t for name, t in tensors.items()})
    grown = {}
    for name, tensor in tensors.items():
        if tensor.ndim == 0:
            grown[name] = tensor
            continue
        rows = torch.cat([tensor, tensor[:1]])
        if _is_token_input(tensor):
            length = rows.shape[1]
            rows = (
                rows[:, : length - 1]
                if length > 1
                else torch.cat([rows, rows.new_zeros(rows.shape[0], 1)], dim=1)
            )
        grown[name] = rows
    others.append(grown)
    return others


class _PositionalInputs(nn.Module):
    """Calls a dict-input module with positional tensors: ONNX inputs are positional."""

    def __init__(self, module: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.module = module
        self.names = tuple(names)

    def forward(self, *tensors: torch.Tensor) -> Any:
        return self.module(dict(zip(self.names, tensors)))


def _describe(tensors: Mapping[str, torch.Tensor]) -> str:
    return ", ".join(f"{name} {tuple(t.shape)}" for name, t in tensors.items())


def _max_difference(expected: np.ndarray, actual: np.ndarray) -> float:
    if expected.shape != actual.shape:
        return float("inf")
    if expected.size == 0:
        return 0.0
    both_nan = np.isnan(expected) & np.isnan(actual)
    difference = np.where(both_nan, 0.0, np.abs(expected.astype(np.float64) - actual))
    return float("inf") if np.isnan(difference).any() else float(difference.max())


def _torch_output(module: nn.Module, tensors: Mapping[str, torch.Tensor], dict_input: bool) -> Any:
    with torch.no_grad():
        return module(dict(tensors)) if dict_input else module(tensors[INPUT_NAME])


def export_onnx(
    module: nn.Module,
    sample: ModelInput,
    *,
    opset: int = 17,
    atol: float = 1e-4,
) -> bytes:
    """Export *module* to ONNX and return the model's bytes, checked against torch.

    *sample* is one batch of what the module takes: a tensor (input name ``'input'``) or a dict
    of tensors such as a text model's ``input_ids``/``attention_mask``/``token_type_ids``
    (input names: the keys, sorted). The batch axis is dynamic, and so is the sequence axis of
    2-D integer inputs; the output is named ``'embeddings'``. A deep copy of *module* is
    exported in eval mode on the CPU, so the caller's module keeps its device and mode.

    The export runs with onnxruntime on *sample* and on inputs of other batch sizes (and
    sequence lengths); a :class:`~finetuner.errors.FinetunerError` names the largest absolute
    difference from torch when it exceeds *atol*. Raises
    :class:`~finetuner.errors.ConfigError` when onnx or onnxruntime are not installed. The
    exporter's warnings are kept back; the first tracer warning (file and line) is part of the
    error when the check fails.
    """
    onnx, _ = require_onnx()
    what = type(module).__name__
    if isinstance(module, (nn.ModuleDict, nn.ModuleList)):
        raise ConfigError(
            f"export_onnx: got a {what} of towers; export each tower on its own "
            "(e.g. model['clip-text'] and model['clip-vision'])."
        )
    if not isinstance(module, nn.Module):
        raise ConfigError(f"export_onnx: expected a torch.nn.Module, not {what}.")
    tensors = _as_tensors(sample)
    dict_input = not isinstance(sample, torch.Tensor)
    model = copy.deepcopy(module).cpu().eval()
    reference = _torch_output(model, tensors, dict_input)
    if not isinstance(reference, torch.Tensor):
        raise ConfigError(
            f"export_onnx: {what} returns a {type(reference).__name__}; only "
            "modules returning one embedding tensor can be exported."
        )
    data, tracer_warnings = _trace(model, tensors, dict_input, opset=opset, what=what)
    try:
        onnx.checker.check_model(onnx.load_model_from_string(data))
    except Exception as exc:
        raise FinetunerError(f"the ONNX export of {what} is not a valid ONNX model: {exc}") from exc
    _check_against_torch(
        data, model, tensors, reference, dict_input, atol=atol, what=what, warned=tracer_warnings
    )
    return data


def _trace(
    model: nn.Module,
    tensors: Mapping[str, torch.Tensor],
    dict_input: bool,
    *,
    opset: int,
    what: str,
) -> tuple[bytes, list[str]]:
    """*model* exported by tracing it on *tensors*, and the tracer's warnings (file and line);
    the exporter's other warnings are kept back."""
    names = list(tensors)
    traced: nn.Module = _PositionalInputs(model, names) if dict_input else model
    # eval() again: export restores the wrapper's mode afterwards, and a wrapper left in
    # training mode would switch dropout on in the module inside it.
    traced.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            torch.onnx.export(
                traced,
                tuple(tensors[name] for name in names),
                buffer,  # type: ignore[arg-type]  # it takes file objects too
                dynamo=False,
                input_names=names,
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamic_axes=_dynamic_axes(tensors),
            )
        except Exception as exc:
            raise FinetunerError(
                f"exporting {what} to ONNX (opset {opset}) failed: {type(exc).__name__}: {exc}"
            ) from exc
    tracer_warnings = [
        f"{w.filename}:{w.lineno}: {w.message}"
        for w in caught
        if issubclass(w.category, torch.jit.TracerWarning)
    ]
    return buffer.getvalue(), tracer_warnings


def _check_against_torch(
    data: bytes,
    model: nn.Module,
    tensors: dict[str, torch.Tensor],
    reference: torch.Tensor,
    dict_input: bool,
    *,
    atol: float,
    what: str,
    warned: Sequence[str],
) -> None:
    """Run the export on *tensors* and on inputs of other shapes, refusing it where it differs
    from torch by more than *atol*; *warned* holds the tracer's warnings, the first of which
    usually names the line tracing froze."""
    runner = OnnxModule(data)
    for inputs in [tensors, *_other_inputs(tensors)]:
        expected = reference if inputs is tensors else _torch_output(model, inputs, dict_input)
        try:
            actual = runner(inputs if dict_input else inputs[INPUT_NAME])
        except Exception as exc:
            problem = f"onnxruntime failed: {type(exc).__name__}: {exc}"
        else:
            difference = _max_difference(expected.float().numpy(), actual.numpy())
            if difference <= atol:
                continue
            problem = (
                f"it gives shape {tuple(actual.shape)} where torch gives {tuple(expected.shape)}"
                if expected.shape != actual.shape
                else f"max abs difference {difference:.3g} > atol {atol:g}"
            )
        raise FinetunerError(
            f"the ONNX export of {what} disagrees with torch on an input of "
            f"{_describe(inputs)}: {problem}. Tracing froze a Python-side value or branch of "
            "forward() (randomness, or a branch on tensor values or shapes); write it with "
            "tensor operations, or raise atol if the difference is numerical noise."
            + (f" The tracer warned at {warned[0]}" if warned else "")
        )


class OnnxModule(nn.Module):
    """An exported model run by onnxruntime, as a ``torch.nn.Module`` without parameters.

    ``forward`` takes what the torch model took (a tensor, or the dict of tensors a text
    preprocessor makes; keys the ONNX model does not use are ignored) and returns a float32
    tensor on the input's device. ``.to()``, ``.eval()`` and ``.train()`` change nothing: the
    model always runs on *providers* (the CPU by default). ``model_bytes`` holds the ONNX
    model, to write to a ``.onnx`` file. Copies and pickles keep the bytes and open a new
    session when first used.
    """

    def __init__(
        self, model: bytes, *, providers: Sequence[str] = ("CPUExecutionProvider",)
    ) -> None:
        super().__init__()
        if not isinstance(model, (bytes, bytearray)):
            raise ConfigError(
                f"OnnxModule takes the bytes of an ONNX model (from export_onnx), not "
                f"{type(model).__name__}."
            )
        self.model_bytes = bytes(model)
        self.providers = tuple(providers)
        self._runtime: Any = _session(self.model_bytes, self.providers)

    def _ready(self) -> Any:
        if self._runtime is None:
            self._runtime = _session(self.model_bytes, self.providers)
        return self._runtime

    @property
    def input_names(self) -> list[str]:
        """The ONNX model's inputs, in order (inputs the graph does not use are left out)."""
        return [i.name for i in self._ready().get_inputs()]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_runtime"] = None  # an onnxruntime session neither copies nor pickles
        return state

    def _feeds(self, batch: Any) -> tuple[dict[str, np.ndarray], torch.device]:
        inputs = self._ready().get_inputs()
        if isinstance(batch, torch.Tensor):
            if len(inputs) != 1:
                raise DataError(
                    f"this ONNX model takes a dict with {', '.join(i.name for i in inputs)}, "
                    "not a tensor."
                )
            batch = {inputs[0].name: batch}
        if not isinstance(batch, Mapping):
            raise DataError(
                f"this ONNX model takes a tensor or a dict of tensors, not {type(batch).__name__}."
            )
        missing = [i.name for i in inputs if i.name not in batch]
        if missing:
            raise DataError(
                f"the input lacks {', '.join(missing)}; this ONNX model takes "
                f"{', '.join(i.name for i in inputs)} (it got {', '.join(map(str, batch))})."
            )
        feeds = {}
        device = torch.device("cpu")
        for spec in inputs:
            value = batch[spec.name]
            if isinstance(value, torch.Tensor):
                device = value.device
                array = value.detach().cpu().numpy()
            else:
                array = np.asarray(value)
            dtype = _NUMPY_TYPES.get(spec.type)
            feeds[spec.name] = array.astype(dtype, copy=False) if dtype is not None else array
        return feeds, device

    def forward(self, batch: ModelInput) -> torch.Tensor:
        feeds, device = self._feeds(batch)
        runtime = self._ready()
        (output,) = runtime.run([runtime.get_outputs()[0].name], feeds)
        return torch.from_numpy(np.asarray(output, dtype=np.float32)).to(device)

    def extra_repr(self) -> str:
        return f"inputs={self.input_names}, providers={list(self.providers)}"
