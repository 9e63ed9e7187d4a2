"""Prompts: a fixed text put before each query or document before tokenizing.

Text backbones take ``model_options={'query_prompt': 'query: ', 'document_prompt': 'passage: '}``
(as E5 or BGE models expect). The options are stored with the model's other options, so an
artifact keeps them. :class:`PromptedPreprocessor` wraps a preprocessor to prepend one of them;
:func:`column_roles` says which role each column of training data plays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError
from .spec import Preprocessor

__all__ = [
    "PROMPT_OPTIONS",
    "PROMPT_ROLES",
    "PromptedPreprocessor",
    "check_prompt_role",
    "column_roles",
    "resolve_prompts",
    "with_prompt",
]

PROMPT_ROLES = ("query", "document")
"""What an item is to a prompt: a query, or a document searched for it."""
PROMPT_OPTIONS = tuple(f"{role}_prompt" for role in PROMPT_ROLES)
"""The model options naming the prompt of each role."""


def resolve_prompts(options: Mapping[str, Any]) -> dict[str, str]:
    """The prompt options of *options*, checked: each a string (an empty one is no prompt)."""
    resolved: dict[str, str] = {}
    for name in PROMPT_OPTIONS:
        value = options.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ConfigError(
                f"model_options: {name} must be a string put before each text (e.g. "
                f"'query: '), not {value!r}."
            )
        if value:
            resolved[name] = value
    return resolved


def check_prompt_role(prompt: Any) -> str | None:
    """*prompt* as given to ``encode``: ``'query'``, ``'document'`` or ``None``."""
    if prompt is None or prompt in PROMPT_ROLES:
        return prompt
    raise ConfigError(
        f"prompt must be 'query', 'document' or None (no prompt), not {prompt!r}; the "
        "prompt texts are the model options query_prompt and document_prompt."
    )


class PromptedPreprocessor(Preprocessor):
    """*inner* with *prompt* put before each text; anything else is *inner*'s. Picklable."""

    def __init__(self, inner: Any, prompt: str) -> None:
        self.inner = inner
        self.prompt = prompt
        self.modality = getattr(inner, "modality", "tensor")

    def _prompted(self, values: Any) -> Any:
        if isinstance(values, (list, tuple)) and all(isinstance(v, str) for v in values):
            return [self.prompt + v for v in values]
        return values  # not texts: the inner preprocessor says what is wrong

    def __call__(self, values: Any) -> Any:
        return self.inner(self._prompted(values))

    def sizes(self, values: Any) -> Sequence[int] | None:
        sizes = getattr(self.inner, "sizes", None)
        return sizes(self._prompted(values)) if callable(sizes) else None

    def files(self) -> dict[str, bytes]:
        return dict(self.inner.files())


def with_prompt(preprocessor: Any, options: Mapping[str, Any] | None, role: str | None) -> Any:
    """*preprocessor* putting the *role*'s prompt of *options* before each text, or
    *preprocessor* itself when there is no role or the model has no such prompt."""
    role = check_prompt_role(role)
    if role is None or not options:
        return preprocessor
    prompt = options.get(f"{role}_prompt")
    if not prompt or getattr(preprocessor, "modality", None) != "text":
        return preprocessor
    return PromptedPreprocessor(preprocessor, prompt)


def column_roles(kind: str, modalities: Sequence[str]) -> list[str | None]:
    """The prompt role of each column of training data of *kind*: retrieval data has its
    query first and documents after it; text-image pairs have text queries; other kinds
    (labeled items, scored pairs, triplets) get no prompt."""
    if kind == "retrieval":
        roles: list[str | None] = ["query"]
        return roles + ["document"] * (len(modalities) - 1)
    if kind == "pairs":
        return ["query" if m == "text" else "document" for m in modalities]
    return [None] * len(modalities)
