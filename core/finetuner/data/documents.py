"""Document types: ``Document`` and ``DocumentArray`` in the shape of the classic API, and the
typed forms for scored pairs and triplets.

This module imports docarray, so :mod:`finetuner.data` does not import it: docarray loads when
a ``DocList`` is converted or ``finetuner.Document`` is used.
"""

from __future__ import annotations

from typing import Any

from docarray import BaseDoc, DocList
from docarray.typing import AnyEmbedding, AnyTensor
from pydantic import Field

__all__ = ["Document", "DocumentArray", "ScoredPair", "Triplet"]


class Document(BaseDoc):
    """A document with the classic fields: ``text``, ``uri`` (an image path or ``file://``
    URI), ``tensor``, ``tags`` and an ``embedding`` that :func:`finetuner.encode` fills. The
    class label lives in ``tags['finetuner_label']``. A document with both ``text`` and ``uri``
    is a text-image pair."""

    text: str | None = None
    uri: str | None = None
    tensor: AnyTensor | None = None
    tags: dict[str, Any] = Field(default_factory=dict)
    embedding: AnyEmbedding | None = None


class ScoredPair(BaseDoc):
    """Two items and how similar they are (``score``, e.g. in [0, 1] or [-1, 1]); trained with
    ``CosineSimilarityLoss``."""

    a: Document
    b: Document
    score: float


class Triplet(BaseDoc):
    """A query, a relevant and an irrelevant item, and ``margin``: a teacher's score of the
    positive minus its score of the negative; trained with ``MarginMSELoss``."""

    query: Document
    positive: Document
    negative: Document
    margin: float


def DocumentArray(docs: Any = ()) -> DocList[Document]:
    """A ``DocList[Document]``: ``DocumentArray([Document(text=..., tags={...})])``."""
    return DocList[Document](list(docs))
