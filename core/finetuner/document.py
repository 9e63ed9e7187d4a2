"""``Document`` and ``DocumentArray``: docarray types in the shape of the classic API."""

from __future__ import annotations

from typing import Any

from docarray import BaseDoc, DocList
from docarray.typing import AnyEmbedding, AnyTensor
from pydantic import Field

__all__ = ["Document", "DocumentArray"]


class Document(BaseDoc):
    """A document with the classic fields: ``text``, ``uri``, ``tensor``, ``tags`` and an
    ``embedding`` that :func:`finetuner.encode` fills. The class label lives in
    ``tags['finetuner_label']``."""

    text: str | None = None
    uri: str | None = None
    tensor: AnyTensor | None = None
    tags: dict[str, Any] = Field(default_factory=dict)
    embedding: AnyEmbedding | None = None


def DocumentArray(docs: Any = ()) -> DocList[Document]:
    """A ``DocList[Document]``: ``DocumentArray([Document(tensor=..., tags={...})])``."""
    return DocList[Document](list(docs))
