"""The model side of mining: which model a ``model`` argument names, encoding with progress."""

from __future__ import annotations

__all__ = ["encode_texts", "progress_bar", "resolve_model"]

import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

_CALLER = "mine_hard_negatives"


def _is_artifact(path: Path) -> bool:
    return (path.suffix == ".zip" and path.is_file()) or (path / "models").is_dir()


def resolve_model(model: Any, model_options: Mapping[str, Any] | None, batch_size: int) -> Any:
    """An EmbeddingModel for *model*: itself, a run's or artifact's model, or a registry one."""
    from ..models.inference import EmbeddingModel, build_model, get_model

    if isinstance(model, EmbeddingModel):
        return model
    artifact = getattr(model, "artifact_path", None)
    if artifact is not None and not isinstance(model, (str, os.PathLike)):
        return get_model(artifact, batch_size=batch_size)
    if isinstance(model, (str, os.PathLike)):
        if _is_artifact(Path(model)):
            return get_model(model, batch_size=batch_size)
        return build_model(str(model), dict(model_options or {}), batch_size=batch_size)
    raise ConfigError(
        f"{_CALLER}: model must be a model name, an artifact path, a run or a model from "
        f"finetuner.get_model/build_model, got {type(model).__name__}."
    )


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """``task(description, total)`` returns ``advance(n)``; a bar only on a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    show = enabled and sys.stderr.isatty()
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not show,
    ) as bar:

        def task(description: str, total: int) -> Callable[[int], None]:
            task_id = bar.add_task(description, total=total)
            return lambda n: bar.update(task_id, advance=n)

        yield task


def encode_texts(
    model: Any, texts: list[str], batch_size: int, advance: Callable[[int], None]
) -> Any:
    from ..models.inference import encode

    chunk = batch_size * 16
    parts = []
    for start in range(0, len(texts), chunk):
        parts.append(encode(model, texts[start : start + chunk], batch_size=batch_size))
        advance(min(chunk, len(texts) - start))
    return np.concatenate(parts).astype(np.float32, copy=False)
