"""Many fits in one process keep their memory: no tensors, modules or runs left behind."""

from __future__ import annotations

import gc

import pytest
import torch

import finetuner
from finetuner.testing import make_tiny_data

psutil = pytest.importorskip("psutil")

FITS = 20
WARMUP = 5
RSS_BOUND_MIB = 20.0
"""RSS growth allowed from the warm-up fit to the last (15 fits); 20 tiny fits measured
+0.2 MiB (bench/bench_soak.py). The count of live tensors catches a leaked model, optimizer
or batch of these tiny fits at once; the RSS bound catches growth outside torch."""


def _live() -> tuple[float, int]:
    gc.collect()
    tensors = sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))
    return psutil.Process().memory_info().rss / 2**20, tensors


@pytest.mark.slow
def test_twenty_fits_in_one_process_keep_their_memory(tmp_path):
    data = make_tiny_data()
    marks = {}
    for i in range(1, FITS + 1):
        finetuner.fit(
            "mlp",
            data,
            model_options={"hidden_sizes": [16]},
            epochs=1,
            batch_size=8,
            seed=i,
            runs_dir=tmp_path,
        )
        if i in (WARMUP, FITS):
            marks[i] = _live()
    (rss_warm, tensors_warm), (rss_last, tensors_last) = marks[WARMUP], marks[FITS]
    assert tensors_last <= tensors_warm, f"live tensors grew: {tensors_warm} -> {tensors_last}"
    assert rss_last - rss_warm < RSS_BOUND_MIB, f"RSS grew {rss_last - rss_warm:.1f} MiB"
    assert len(finetuner.list_runs(runs_dir=tmp_path)) == FITS
