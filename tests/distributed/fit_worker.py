"""One rank of a distributed fit for tests/test_distributed.py (also run as a single process).

Usage: ``python fit_worker.py SPEC.json OUT_DIR``. SPEC holds ``fit``'s options, with
``train_data`` given as ``{"digits": N}`` (the first N scikit-learn digits, as tensors with
labels) and callbacks as ``[[class name, options], ...]``. Every rank writes
``OUT_DIR/rank-R.json``: the final weights, the run's status and metrics, and what the rank saw.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
from sklearn.datasets import load_digits

import finetuner
from finetuner import callback as callbacks_module


def digits(count: int, offset: int = 0) -> list:
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x[offset : offset + count] / 16.0, dtype=torch.float32)
    return [(x[i], int(y[offset + i])) for i in range(len(x))]


def pairs(count: int) -> list:
    """Query-passage pairs of made-up words, every text distinct."""
    words = ["red", "blue", "green", "fast", "slow", "big", "small", "warm", "cold", "new"]
    return [
        {
            "query": f"{words[i % 10]} {words[i // 10 % 10]} item {i}",
            "pos": [f"a {words[i // 10 % 10]} thing that is {words[i % 10]}, number {i}"],
        }
        for i in range(count)
    ]


def tiny_text(dropout: bool) -> dict:
    """A tiny BERT; without dropout, one process and several train alike."""
    from finetuner.testing import tiny_text_model_options

    options = tiny_text_model_options()
    if not dropout:
        options["config"].update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return options


def build(spec: dict) -> dict:
    options = dict(spec)
    for key in ("train_data", "eval_data"):
        if isinstance(options.get(key), dict):
            options[key] = digits(**options[key])
    if "pairs" in options:
        options["train_data"] = pairs(options.pop("pairs"))
    tiny = options.pop("tiny_text", None)
    if tiny:
        options["model_options"] = tiny_text(dropout=tiny == "dropout")
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
        options["callbacks"].append(_Failing(out))
    if os.environ.get("STOP_ON_RANK") == str(rank):
        options["callbacks"].append(_Stopping())
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
    """Fails (or, with FAIL_HOW=kill, SIGKILLs its own process) at FAIL_AT_BATCH of epoch
    FAIL_AT_EPOCH, writing the time it did so to OUT_DIR/failed-at."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def finetuner_on_train_batch_end(self, ctx, event):
        epoch = int(os.environ.get("FAIL_AT_EPOCH", "0"))
        if event.epoch == epoch and event.batch_index == int(os.environ.get("FAIL_AT_BATCH", "3")):
            (self.out / "failed-at").write_text(repr(time.time()))
            if os.environ.get("FAIL_HOW") == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise ValueError("the test's plugin failed on purpose")


class _Stopping(finetuner.callback.Callback):
    """Asks to stop at the end of the first epoch, on this rank only."""

    def finetuner_on_train_epoch_end(self, ctx, event):
        ctx.control.request_stop(f"rank {ctx.rank} asked to stop", source="test")


if __name__ == "__main__":
    main()
