"""The exceptions this package raises: finetuner's own, both subclasses of ``ValueError``.

``ConfigError`` is for a bad option (``limit``, ``distance``, ``search``...), ``DataError`` for data
that cannot be used as given (shapes, label counts, non-finite values).
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "unknown_choice_message"]

from collections.abc import Sequence

from finetuner.errors import ConfigError, DataError, close_matches_hint


def unknown_choice_message(option: str, value: object, choices: Sequence[str]) -> str:
    """``"unknown distance 'cosin'; use one of 'cosine', ... Did you mean 'cosine'?"``."""
    allowed = ", ".join(f"'{c}'" for c in choices)
    hint = close_matches_hint(value, choices) if isinstance(value, str) else ""
    return f"evaluate_embeddings: unknown {option} {value!r}; use one of {allowed}.{hint}"
