"""Extra memory stays bounded: 10,000 queries against a 100,000 x 384 index use < 1 GiB more.

tracemalloc does not see torch's allocations, so a fresh subprocess reports its peak resident
set (``VmHWM``) against its resident set just before the call. Not ``ru_maxrss``: Linux keeps
that across exec, so a child of a large pytest process would report the parent's size. A full score matrix would be
4 GB; the chunked search needs a few hundred MB at most.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, time
import torch
from finetuner_evaluation import evaluate_embeddings

def status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])

g = torch.Generator().manual_seed(0)
queries = torch.randn(10_000, 384, generator=g)
index = torch.randn(100_000, 384, generator=g)
query_labels = torch.randint(0, 1_000, (10_000,), generator=g).numpy()
index_labels = torch.randint(0, 1_000, (100_000,), generator=g).numpy()
try:  # start the peak afresh, so the data's own creation is not counted
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
except OSError:
    pass
before = status_kib("VmRSS")
start = time.perf_counter()
result = evaluate_embeddings(queries, query_labels, index, index_labels, return_details=True)
seconds = time.perf_counter() - start
peak = status_kib("VmHWM")  # this process image's peak, in KiB
print(json.dumps({"extra_mib": (peak - before) / 1024, "seconds": seconds,
                  "scored": result.num_queries_scored}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_extra_peak_memory_stays_under_one_gib():
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["scored"] == 10_000
    assert report["extra_mib"] < 1024, report
