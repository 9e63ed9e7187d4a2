"""Document types: ``Document`` and ``DocumentArray`` in the shape of the classic API, and the
typed forms for scored pairs, triplets and retrieval examples.

This module imports docarray, so :mod:`finetuner.data` does not import it: docarray loads when
a ``DocList`` is converted or ``finetuner.Document`` is used.
"""

from __future__ import annotations

from typing import Any

from docarray import BaseDoc, DocList
from docarray.typing import AnyEmbedding, AnyTensor
from pydantic import Field

__all__ = ["Document", "DocumentArray", "RetrievalExample", "ScoredPair", "Triplet"]


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


class RetrievalExample(BaseDoc):
    """A query, the documents relevant to it (``pos``, one or more) and optional irrelevant
    ones (``neg``; every example of a data set has as many). Each positive makes one row
    ``(query, positive, *negatives)`` of retrieval data, trained with in-batch-negative
    losses such as ``MultipleNegativesRankingLoss``. Texts, or image paths."""

    query: str
    pos: list[str]
    neg: list[str] = Field(default_factory=list)


def DocumentArray(docs: Any = ()) -> DocList[Document]:
    """A ``DocList[Document]``: ``DocumentArray([Document(text=..., tags={...})])``."""
    return DocList[Document](list(docs))
