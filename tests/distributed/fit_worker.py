"""One rank of a distributed fit for tests/test_distributed.py (also run as a single process).

Usage: ``python fit_worker.py SPEC.json OUT_DIR``. SPEC holds ``fit``'s options, with
``train_data`` given as ``{"digits": N}`` (the first N scikit-learn digits, as tensors with
labels) and callbacks as ``[[class name, options], ...]``. Every rank writes
``OUT_DIR/rank-R.json``: the final weights, the run's status and metrics, and what the rank saw.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from sklearn.datasets import load_digits

import finetuner
from finetuner import callback as callbacks_module


def digits(count: int, offset: int = 0) -> list:
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x[offset : offset + count] / 16.0, dtype=torch.float32)
    return [(x[i], int(y[offset + i])) for i in range(len(x))]


def build(spec: dict) -> dict:
    options = dict(spec)
    for key in ("train_data", "eval_data"):
        if isinstance(options.get(key), dict):
            options[key] = digits(**options[key])
    made = []
    for name, kwargs in options.pop("callbacks", []):
        kwargs = dict(kwargs)
        if isinstance(kwargs.get("query_data"), dict):
            kwargs["query_data"] = digits(**kwargs["query_data"])
        made.append(getattr(callbacks_module, name)(**kwargs))
    options["callbacks"] = made
    return options


def main() -> None:
    spec, out = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
    rank = int(os.environ.get("RANK", "0"))
    options = build(spec)
    if os.environ.get("FAIL_ON_RANK") == str(rank):
        options["callbacks"].append(_Failing())
    seen: dict = {}
    options["callbacks"].append(_Watcher(seen))
    run = finetuner.fit(**options)
    weights = {
        name: {k: v.tolist() for k, v in module.state_dict().items()}
        for name, module in seen.pop("models").items()
    }
    result = {
        "rank": rank,
        "run": run.name,
        "status": run.status(),
        "metrics": run.metrics() if rank == 0 else None,
        "weights": weights,
        **seen,
    }
    (out / f"rank-{rank}.json").write_text(json.dumps(result, default=str))


class _Watcher(finetuner.callback.Callback):
    def __init__(self, seen: dict) -> None:
        self.seen = seen
        seen["epochs"] = []
        seen["losses"] = []

    def finetuner_on_fit_begin(self, ctx, event):
        self.seen["ctx"] = {
            "rank": ctx.rank,
            "world_size": ctx.world_size,
            "main": ctx.is_main_process,
        }

    def finetuner_on_train_batch_end(self, ctx, event):
        self.seen["losses"].append(event.loss)

    def finetuner_on_epoch_end(self, ctx, event):
        self.seen["epochs"].append(event.epoch)

    def finetuner_on_fit_end(self, ctx, event):
        self.seen["models"] = dict(ctx.models)


class _Failing(finetuner.callback.Callback):
    def finetuner_on_train_batch_end(self, ctx, event):
        if event.batch_index == int(os.environ.get("FAIL_AT_BATCH", "3")):
            if os.environ.get("FAIL_HOW") == "kill":
                os.kill(os.getpid(), 9)
            raise ValueError("the test's plugin failed on purpose")


if __name__ == "__main__":
    main()
