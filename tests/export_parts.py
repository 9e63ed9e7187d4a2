"""What the export tests share: comparing vectors, and running an exported ONNX text model
the way a user would (its own tokenizer, onnxruntime)."""

from __future__ import annotations

import numpy as np


def max_diff(a, b) -> float:
    """The largest absolute difference between two equally shaped arrays."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


def onnx_text_vectors(folder, texts) -> np.ndarray:
    """*texts* embedded by the ``model.onnx`` of an export *folder*, tokenized by the
    tokenizer the folder holds (transformers' ``AutoTokenizer``)."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = tokenizer(list(texts), padding=True, truncation=True, return_tensors="np")
    (vectors,) = session.run(["embeddings"], {k: v.astype(np.int64) for k, v in feeds.items()})
    return vectors
