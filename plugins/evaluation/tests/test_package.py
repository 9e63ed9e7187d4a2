"""The public face: a light import, a short __all__, exactly the eight metric keys."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

import finetuner_evaluation
from finetuner_evaluation import METRIC_NAMES, EvaluationResult, evaluate_embeddings

ROOT = Path(__file__).resolve().parents[1]


def test_import_does_not_load_annoy():
    code = "import sys, finetuner_evaluation; print('annoy' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_public_names():
    assert set(finetuner_evaluation.__all__) >= {
        "AUTO_ANNOY_MIN_INDEX_ROWS",
        "DEFAULT_N_TREES",
        "DEFAULT_SEARCH_K_FACTOR",
        "DISTANCES",
        "METRIC_NAMES",
        "SEARCHES",
        "EvaluationResult",
        "evaluate_embeddings",
    }
    for name in finetuner_evaluation.__all__:
        assert hasattr(finetuner_evaluation, name)


def test_every_search_returns_the_same_eight_float_metrics():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(50, 4)).astype(np.float32)
    labels = rng.integers(0, 3, size=50)
    for search in ("exact", "annoy", "auto"):
        metrics = evaluate_embeddings(points, labels, search=search)
        assert list(metrics) == list(METRIC_NAMES)
        assert all(type(value) is float for value in metrics.values())


def test_details_are_read_only_facts():
    points = np.eye(4, dtype=np.float32)
    result = evaluate_embeddings(points, [0, 0, 1, 1], limit=2, return_details=True)
    assert isinstance(result, EvaluationResult)
    assert result.indices.shape == result.scores.shape == (4, 2)
    assert not result.indices.flags.writeable
    assert not result.scores.flags.writeable
    try:
        result.metrics["recall_at_k"] = 0.0  # type: ignore[index]
    except TypeError:
        pass
    else:
        raise AssertionError("metrics of a result must not be writable")
