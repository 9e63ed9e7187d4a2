"""The model card: the ``README.md`` of every artifact, for people and for model hubs.

The card is Markdown that reads as plain text, with YAML front matter a model hub reads
(``library_name``, ``base_model`` where the base is a hub model, ``tags``). It says what the
model was trained from, on how much data, with which loss and options, the metrics before and
after, how to load it and which plugins took part. It is written from what the artifact itself
records (config, metadata, metrics, each model's metadata) plus the few facts only the fit knows
(:class:`CardFacts`); anything unknown is left out, never guessed.

Loading never reads the card: ``get_model`` needs only the files the artifact layout names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from .._io import dump_yaml

__all__ = [
    "CARD_FILE",
    "CardFacts",
    "escape_markdown",
    "hub_model_id",
    "render_card",
    "sentence_transformers_folders",
]

CARD_FILE = "README.md"
SENTENCE_TRANSFORMERS_MARKER = "modules.json"
"""The file that makes a folder a sentence-transformers model folder."""

_HIDDEN_OPTIONS = frozenset({"config"})
"""Model options left off the card: a text model's whole architecture config, for instance."""
_SHORT = 100
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_\[\]{}<>|#~!])")


@dataclass(frozen=True)
class CardFacts:
    """What the fit knows about its data and optimizer that the config record does not."""

    data_kind: str | None = None
    """``labeled``, ``pairs``, ``scored``, ``triplets`` or ``retrieval``."""
    data_kind_text: str | None = None
    """The kind in words, e.g. ``items with class labels``."""
    training_rows: int | None = None
    validation_rows: int | None = None
    validation_source: str | None = None
    """Where the validation rows came from: ``eval_data`` or ``val_split``."""
    learning_rate: float | None = None
    """The optimizer's base learning rate, given or its default."""
    epochs_completed: int | None = None
    """The epochs trained, fewer than the option's when training stopped early."""


# ------------------------------------------------------------------------- text helpers


def escape_markdown(text: Any) -> str:
    """*text* as one line of Markdown that shows as written: line breaks become spaces, and the
    characters that would start emphasis, links, HTML, headings or table cells are escaped."""
    one_line = " ".join(str(text).split())
    return _MARKDOWN_SPECIALS.sub(r"\\\1", one_line.replace("&", "&amp;"))


def _code(text: Any) -> str:
    """*text* as inline code, or escaped text where a code span could not hold it."""
    value = " ".join(str(text).split())
    if not value or "`" in value or "|" in value:
        return escape_markdown(value)
    return f"`{value}`"


def _value(value: Any) -> str:
    """A config value, short, as inline code (JSON for containers, so it reads as given)."""
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    if len(text) > _SHORT:
        text = text[: _SHORT - 3] + "..."
    return _code(text)


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return escape_markdown(value)
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _bullets(items: Iterable[tuple[str, str | None]]) -> list[str]:
    """``- label: value`` lines, leaving out the values that are unknown."""
    return [f"- {label}: {value}" for label, value in items if value is not None]


# ------------------------------------------------------------------------- front matter


def hub_model_id(model: Any) -> str | None:
    """*model* where it names a Hugging Face Hub model (``owner/name``, not a folder here)."""
    if not isinstance(model, str) or model.count("/") != 1 or model.startswith((".", "/", "~")):
        return None
    return None if Path(model).exists() else model


def _front_matter(config: Mapping[str, Any], models: Mapping[str, Mapping[str, Any]]) -> str:
    modalities = sorted({"text", "image"} & {str(m.get("modality")) for m in models.values()})
    matter: dict[str, Any] = {"library_name": "finetuner"}
    base = hub_model_id(config.get("model"))
    if base:
        matter["base_model"] = base
    matter["tags"] = ["finetuner", "embeddings", *modalities]
    return f"---\n{dump_yaml(matter)}---\n"


# ------------------------------------------------------------------------- sections


def _title(config: Mapping[str, Any], metadata: Mapping[str, Any]) -> list[str]:
    name = metadata.get("run_name") or config.get("run_name")
    lines = [f"# {escape_markdown(name) if name else 'Fine-tuned embedding model'}", ""]
    about = "An embedding model fine-tuned with finetuner"
    if metadata.get("finetuner_version"):
        about += f" {escape_markdown(metadata['finetuner_version'])}"
    experiment = metadata.get("experiment_name")
    if name:
        about += f", run {_code(name)}" + (
            f" of experiment {_code(experiment)}" if experiment else ""
        )
    lines += [about + ".", ""]
    if config.get("description"):
        lines += [f"Description: {escape_markdown(config['description'])}", ""]
    return lines


def _base_model(config: Mapping[str, Any], models: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = ["## Base model", ""]
    if config.get("model") is not None:
        lines += [f"- Fine-tuned from: {_code(config['model'])}"]
    for name, meta in models.items():
        built = meta.get("registry_name") or meta.get("class")
        details = [
            f"{what} {_code(meta[key])}"
            for key, what in (("modality", "embeds"), ("output_dim", "output size"))
            if meta.get(key) is not None
        ]
        if built:
            details.insert(
                0, f"{'registry model' if meta.get('registry_name') else 'class'} {_code(built)}"
            )
        label = f"- Model {_code(name)} of the artifact"
        lines.append(label + (f": {', '.join(details)}" if details else ""))
        options = {
            k: v
            for k, v in (meta.get("options") or {}).items()
            if k not in _HIDDEN_OPTIONS and v is not None
        }
        if options:
            lines.append("  - Options:")
        lines += [f"    - {_code(key)}: {_value(value)}" for key, value in options.items()]
    return [*lines, ""]


def _data(config: Mapping[str, Any], facts: CardFacts) -> list[str]:
    kind = None
    if facts.data_kind:
        kind = _code(facts.data_kind)
        kind += f" ({escape_markdown(facts.data_kind_text)})" if facts.data_kind_text else ""
    validation = None
    if facts.validation_rows is not None:
        validation = str(facts.validation_rows)
        if facts.validation_source == "val_split":
            validation += f" (held out of the training data, val_split {config.get('val_split')})"
        elif facts.validation_source:
            validation += f" (from {_code(facts.validation_source)})"
    lines = _bullets(
        [
            ("Kind", kind),
            ("Training data", _data_source(config.get("train_data"))),
            ("Training rows", None if facts.training_rows is None else str(facts.training_rows)),
            ("Validation data", _data_source(config.get("eval_data"))),
            ("Validation rows", validation),
        ]
    )
    return ["## Training data", "", *(lines or ["Nothing is recorded about the data."]), ""]


def _data_source(record: Any) -> str | None:
    """The config's record of a data argument: its name or path, or its type and size."""
    if record is None:
        return None
    if isinstance(record, Mapping):
        size = record.get("size")
        kind = record.get("type") or "data"
        return f"a {_code(kind)}" + (f" of {size} rows" if size is not None else "")
    return _code(record)


def _named(config: Mapping[str, Any], key: str) -> str | None:
    """A class name the config chose (loss, miner, ...) with its options, or ``None``."""
    name = config.get(key)
    if not name:
        return None
    options = config.get(f"{key}_options")
    return _code(name) + (f" with {_value(options)}" if options else "")


def _training(
    config: Mapping[str, Any], metadata: Mapping[str, Any], facts: CardFacts
) -> list[str]:
    def option(key: str) -> str | None:
        value = config.get(key)
        return None if value is None else _code(value)

    lr = facts.learning_rate if facts.learning_rate is not None else config.get("learning_rate")
    accumulate = config.get("accumulate_grad_batches")
    duration = metadata.get("duration_s")
    items = [
        ("Loss", _named(config, "loss")),
        ("Miner", _named(config, "miner")),
        ("Optimizer", _named(config, "optimizer")),
        ("Learning rate", None if lr is None else _code(lr)),
        ("Scheduler", _named(config, "scheduler")),
        ("Epochs", _epochs(config.get("epochs"), facts.epochs_completed)),
        ("Batch size", option("batch_size")),
        ("Batches per optimizer step", _code(accumulate) if accumulate not in (None, 1) else None),
        ("Sampler", option("sampler")),
        ("Precision", option("precision")),
        ("Seed", option("seed")),
        ("Device", option("device") if not metadata.get("device") else _code(metadata["device"])),
        ("Duration", None if duration is None else f"{escape_markdown(duration)} s"),
    ]
    lines = _bullets(items) or ["Nothing is recorded about the training options."]
    return ["## Training", "", *lines, ""]


def _epochs(planned: Any, done: int | None) -> str | None:
    if planned is None:
        return None if done is None else _code(done)
    if done is None or done == planned:
        return _code(planned)
    return f"{_code(done)} of {_code(planned)} (stopped early)"


def _metrics(metrics: Mapping[str, Any]) -> list[str]:
    before = metrics.get("before") or {}
    after = metrics.get("after") or {}
    lines = ["## Metrics", ""]
    if not before and not after:
        return [
            *lines,
            "No metrics were recorded: the run had no evaluation (no validation data and no",
            "evaluation callback).",
            "",
        ]
    rows = []
    for key in [*before, *(k for k in after if k not in before)]:
        old, new = before.get(key), after.get(key)
        change = f"{new - old:+.4f}" if _is_number(old) and _is_number(new) else ""
        shown = [_number(v) if v is not None else "" for v in (old, new)]
        rows.append([_code(key), *shown, change])
    lines += ["Before and after fine-tuning (`metrics.yml` holds the exact values):", ""]
    return lines + _table(["metric", "before", "after", "change"], rows) + [""]


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _example_input(meta: Mapping[str, Any]) -> tuple[str, str]:
    """An import line (or none) and an example batch for a model of this modality."""
    modality = meta.get("modality")
    if modality == "text":
        return "", '["a first text", "a second text"]'
    if modality == "image":
        return "", '["photo-1.jpg", "photo-2.jpg"]'
    shape = meta.get("input_shape")
    if shape and all(isinstance(n, int) for n in shape):
        return "import torch\n", f"torch.rand(2, {', '.join(str(n) for n in shape)})"
    return "", "[...]  # a batch of items the model takes"


def _load_call(name: str, meta: Mapping[str, Any], several: bool) -> str:
    arguments = ['"path/to/artifact"']
    if several:
        arguments.append(f"select_model={json.dumps(name)}")
    if not meta.get("registry_name"):
        cls = str(meta.get("class") or "YourModule").rpartition(".")[2]
        arguments.append(f"model={cls}(...)")
    return f"finetuner.get_model({', '.join(arguments)})".replace("`", "'")


def _loading(models: Mapping[str, Mapping[str, Any]], files: Sequence[str]) -> list[str]:
    lines = [
        "## How to load",
        "",
        "`finetuner.get_model` takes this folder, or the zip that `run.save_artifact()`",
        "writes of it; `finetuner.encode` embeds a batch into a `(n, dim)` numpy array.",
        "",
    ]
    if any(not meta.get("registry_name") for meta in models.values()):
        lines += [
            "A model of your own is not rebuilt from a name: pass an instance of its class",
            "to receive the weights.",
            "",
        ]
    code = ["import finetuner"]
    for name, meta in models.items():
        imports, batch = _example_input(meta)
        if imports and imports.strip() not in code:
            code.insert(0, imports.strip())
        code += ["", f"model = {_load_call(name, meta, len(models) > 1)}"]
        code.append(f"embeddings = finetuner.encode(model, {batch})")
    lines += ["```python", *code, "```", ""]
    if any(f.endswith("/model.onnx") for f in files):
        lines += [
            "The artifact holds ONNX exports (`models/<name>/model.onnx`):",
            '`finetuner.get_model("path/to/artifact", is_onnx=True)` runs them with onnxruntime.',
            "",
        ]
    for folder in sentence_transformers_folders(files):
        lines += [
            f"The folder {_code(folder + '/')} is a sentence-transformers model: "
            f'`SentenceTransformer("path/to/artifact/{folder}")` loads it.',
            "",
        ]
    return lines


def sentence_transformers_folders(files: Iterable[str]) -> list[str]:
    """The folders among the artifact's *files* (relative paths) that sentence-transformers
    loads, found by their ``modules.json``."""
    return sorted(
        f.rpartition("/")[0] for f in files if f.rpartition("/")[2] == SENTENCE_TRANSFORMERS_MARKER
    )


def _plugins(metadata: Mapping[str, Any]) -> list[str]:
    plugins = metadata.get("plugins") or []
    lines = ["## Plugins and versions", ""]
    versions = [
        (what, metadata.get(key))
        for what, key in (
            ("finetuner", "finetuner_version"),
            ("torch", "torch_version"),
            ("Python", "python_version"),
        )
    ]
    lines += _bullets((what, _code(v) if v else None) for what, v in versions)
    if plugins:
        rows = [
            [escape_markdown(p.get(k) or "") for k in ("name", "kind", "distribution", "version")]
            for p in plugins
        ]
        lines += ["", *_table(["plugin", "kind", "distribution", "version"], rows)]
    return [*lines, ""]


def render_card(
    *,
    config: Mapping[str, Any],
    metadata: Mapping[str, Any],
    metrics: Mapping[str, Any],
    models: Mapping[str, Mapping[str, Any]],
    files: Sequence[str] = (),
    facts: CardFacts | None = None,
) -> str:
    """The card of an artifact, from its *config*, *metadata*, *metrics*, each model's metadata
    (*models*), the relative paths of its *files* and the fit's *facts*."""
    facts = facts or CardFacts()
    sections = [
        _title(config, metadata),
        _base_model(config, models),
        _data(config, facts),
        _training(config, metadata, facts),
        _metrics(metrics),
        _loading(models, files),
        _plugins(metadata),
    ]
    body = "\n".join(line for section in sections for line in section).rstrip("\n")
    return f"{_front_matter(config, models)}\n{body}\n"
