"""The local run store: real folders in tmp_path, real threads and a real second process."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from finetuner.errors import (
    ConfigError,
    ExperimentNotFoundError,
    RunError,
    RunFailedError,
    RunInProgressError,
    RunNotFoundError,
)
from finetuner.runs import (
    Experiment,
    Run,
    RunStatus,
    RunWriter,
    create_experiment,
    create_run,
    delete_experiment,
    delete_run,
    ensure_experiment,
    generate_run_name,
    get_experiment,
    get_run,
    list_experiments,
    list_runs,
    resolve_runs_dir,
    validate_name,
)

CORE = Path(__file__).resolve().parents[1] / "core"
NAME_RE = r"[a-z]+-[a-z]+-\d{4}"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


def _log(run: Run, event: str, level: str = "info", **fields) -> None:
    record = {
        "timestamp": "2024-05-01T12:00:00.000000Z",
        "level": level,
        "event": event,
        "logger": "finetuner.trainer",
        **fields,
    }
    with open(run.log_path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def _finished_run(store: Path, name: str = "done") -> Run:
    run = create_run({"model": "mlp"}, run_name=name, runs_dir=store)
    RunWriter(run).set_status(RunStatus.STARTED)
    (run.artifact_dir / "models" / "model").mkdir(parents=True)
    (run.artifact_dir / "config.yml").write_text("model: mlp\n")
    (run.artifact_dir / "models" / "model" / "model.safetensors").write_bytes(b"\x00weights")
    RunWriter(run).set_status(RunStatus.FINISHED)
    return run


# ----------------------------------------------------------------- creation and names


def test_create_run_writes_config_and_created_status(store: Path) -> None:
    run = create_run({"model": "mlp", "epochs": 3}, run_name="first", runs_dir=store)
    assert run.path == store / "default" / "first"
    assert run.name == "first"
    assert run.experiment_name == "default"
    assert json.loads((run.path / "config.json").read_text()) == {"model": "mlp", "epochs": 3}
    assert run.config == {"model": "mlp", "epochs": 3}
    status = run.status()
    assert status["status"] == "CREATED"
    assert status["created_at"] == status["updated_at"]
    for key in ("started_at", "finished_at", "pid", "reason", "plugin", "hook"):
        assert status[key] is None
    assert json.loads((store / "default" / "experiment.json").read_text())["name"] == "default"
    assert run.checkpoint_dir == run.path / "checkpoints"
    assert run.artifact_dir == run.path / "artifact"
    assert run.log_path == run.path / "logs.jsonl"
    assert run.metrics_path == run.path / "metrics.jsonl"
    assert repr(run) == "Run(name='first', experiment='default', status='CREATED')"


def test_generated_run_names_are_readable_and_distinct(store: Path) -> None:
    import re

    names = {generate_run_name() for _ in range(50)}
    assert len(names) > 40
    assert all(re.fullmatch(NAME_RE, name) for name in names)
    assert generate_run_name(random.Random(7)) == generate_run_name(random.Random(7))
    run = create_run({}, runs_dir=store)
    assert re.fullmatch(NAME_RE, run.name)
    assert run.path.parent == store / "default"


def test_seeding_random_does_not_fix_generated_names() -> None:
    random.seed(0)
    first = [generate_run_name() for _ in range(3)]
    random.seed(0)
    second = [generate_run_name() for _ in range(3)]
    assert first != second


def test_explicit_run_name_that_exists_is_refused(store: Path) -> None:
    create_run({}, run_name="taken", experiment_name="exp", runs_dir=store)
    with pytest.raises(ConfigError) as info:
        create_run({}, run_name="taken", experiment_name="exp", runs_dir=store)
    message = str(info.value)
    assert "a run named 'taken' already exists in experiment 'exp'" in message
    assert "finetuner.delete_run('taken', experiment_name='exp')" in message


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../x", "path separator"),
        ("a/b", "path separator"),
        (".hidden", "starts with '.'"),
        ("", "is empty"),
        ("..", "starts with '.'"),
        ("has space", "contains ' '"),
        ("x" * 129, "129 characters"),
    ],
)
def test_invalid_names_are_refused(store: Path, name: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_name(name, "run")
    assert problem in str(info.value)
    assert "A-Z" in str(info.value)  # says which characters are allowed
    with pytest.raises(ConfigError):
        create_run({}, run_name=name, runs_dir=store)
    with pytest.raises(ConfigError):
        create_experiment(name, runs_dir=store)
    assert not (store / "default" / "x").exists()
    assert not (store.parent / "x").exists()


def test_valid_names_pass() -> None:
    for name in ("a", "Run_1.v2-final", "9" * 128):
        assert validate_name(name, "run") == name


def test_non_mapping_config_is_refused(store: Path) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        create_run(["not", "a", "dict"], runs_dir=store)  # type: ignore[arg-type]


def test_run_requires_a_status_file(tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    with pytest.raises(RunNotFoundError, match=r"status\.json"):
        Run(tmp_path / "half")


# ----------------------------------------------------------------- status


def test_status_transitions(store: Path) -> None:
    run = create_run({}, run_name="r", runs_dir=store)
    started = RunWriter(run).set_status(RunStatus.STARTED)
    assert started["status"] == "STARTED"
    assert started["pid"] == os.getpid()
    assert started["started_at"] is not None
    assert started["finished_at"] is None
    assert run.status() == started

    failed = RunWriter(run).set_status(
        "FAILED", reason="loss is NaN", plugin="early", hook="on_epoch_end"
    )
    assert failed["status"] == "FAILED"
    assert failed["finished_at"] >= failed["started_at"]
    assert (failed["reason"], failed["plugin"], failed["hook"]) == (
        "loss is NaN",
        "early",
        "on_epoch_end",
    )
    assert failed["created_at"] == started["created_at"]

    # a resumed run starts afresh: the earlier failure is cleared
    again = RunWriter(run).set_status(RunStatus.STARTED, epoch=2)
    assert again["reason"] is None and again["finished_at"] is None and again["epoch"] == 2
    assert RunWriter(run).set_status(RunStatus.FINISHED)["epoch"] == 2  # extra fields are kept
    assert repr(run) == "Run(name='r', experiment='default', status='FINISHED')"

    with pytest.raises(RunError, match="unknown run status 'DONE'"):
        RunWriter(run).set_status("DONE")


def test_status_file_is_replaced_atomically(store: Path) -> None:
    run = create_run({}, run_name="atomic", runs_dir=store)
    status_file = run.path / "status.json"
    inode = status_file.stat().st_ino
    RunWriter(run).set_status(RunStatus.STARTED)
    assert status_file.stat().st_ino != inode  # a new file renamed over the old one

    seen: list[str] = []
    broken: list[str] = []
    stop = threading.Event()

    def read_continuously() -> None:
        while not stop.is_set():
            text = status_file.read_text()
            try:
                seen.append(json.loads(text)["status"])
            except (json.JSONDecodeError, KeyError):
                broken.append(text)

    reader = threading.Thread(target=read_continuously)
    reader.start()
    try:
        for i in range(150):
            RunWriter(run).set_status(RunStatus.STARTED, step=i, padding="x" * 2000)
    finally:
        stop.set()
        reader.join()
    assert seen and not broken
    assert [p.name for p in run.path.iterdir() if p.name.endswith(".tmp")] == []


# ----------------------------------------------------------------- metrics


def test_metrics_pick_last_before_and_after(store: Path) -> None:
    run = create_run({}, run_name="m", runs_dir=store)
    assert run.metrics() == {}
    RunWriter(run).append_metrics("before", 0, 0, {"mlp_precision_at_k": 0.1})
    RunWriter(run).append_metrics("epoch", 0, 10, {"mlp_precision_at_k": 0.3, "train_loss": 1.5})
    assert run.metrics() == {"before": {"mlp_precision_at_k": 0.1}}
    RunWriter(run).append_metrics("after", 1, 20, {"mlp_precision_at_k": 0.4})
    RunWriter(run).append_metrics("after", 1, 20, {"mlp_precision_at_k": 0.5}, skipped={"x": 2})
    assert run.metrics() == {
        "before": {"mlp_precision_at_k": 0.1},
        "after": {"mlp_precision_at_k": 0.5},
    }


def test_metric_history_keeps_every_record_in_order(store: Path) -> None:
    run = create_run({}, run_name="h", runs_dir=store)
    RunWriter(run).append_metrics("before", 0, 0, {"a": 1})
    RunWriter(run).append_metrics("step", 0, 5, {"a": 2})
    RunWriter(run).append_metrics("epoch", 0, 10, {"a": 3}, skipped={"a": 4})
    RunWriter(run).append_metrics("after", 0, 10, {"a": 5})
    history = run.metric_history()
    assert [(r["stage"], r["epoch"], r["step"], r["metrics"]["a"]) for r in history] == [
        ("before", 0, 0, 1.0),
        ("step", 0, 5, 2.0),
        ("epoch", 0, 10, 3.0),
        ("after", 0, 10, 5.0),
    ]
    assert history[2]["skipped"] == {"a": 4}
    assert "skipped" not in history[0]
    assert all(isinstance(r["timestamp"], str) for r in history)
    lines = run.metrics_path.read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line) for line in lines)
    with pytest.raises(RunError, match="unknown metrics stage 'middle'"):
        RunWriter(run).append_metrics("middle", 0, 0, {})


def test_a_partly_written_last_metrics_line_is_ignored(store: Path) -> None:
    run = create_run({}, run_name="p", runs_dir=store)
    RunWriter(run).append_metrics("before", 0, 0, {"a": 1})
    with open(run.metrics_path, "a") as handle:
        handle.write('{"stage": "after", "met')
    assert [r["stage"] for r in run.metric_history()] == ["before"]


def test_display_metrics(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = create_run({}, run_name="dm", runs_dir=store)
    run.display_metrics()
    assert "no retrieval metrics" in capsys.readouterr().out
    RunWriter(run).append_metrics("before", 0, 0, {"mlp_ndcg_at_k": 0.123456789})
    RunWriter(run).append_metrics("after", 2, 30, {"mlp_ndcg_at_k": 0.5})
    run.display_metrics()
    out = capsys.readouterr().out
    assert "Retrieval metrics before fine-tuning:" in out
    assert "Retrieval metrics after fine-tuning:" in out
    assert "Retrieval Metric" in out and "Value" in out
    assert "0.12346" in out and "0.50000" in out
    assert out.index("0.12346") < out.index("after fine-tuning") < out.index("0.50000")


# ----------------------------------------------------------------- logs


def test_logs_render_one_line_per_record(store: Path) -> None:
    run = create_run({}, run_name="l", runs_dir=store)
    with pytest.raises(RunError, match="no logs yet"):
        run.logs()
    RunWriter(run).set_status(RunStatus.STARTED)
    assert run.logs() == ""
    _log(run, "Finetuning", epochs=3)
    _log(run, "epoch done", level="warning", loss=0.25, note="two words")
    assert run.logs().splitlines() == [
        "2024-05-01T12:00:00.000000Z INFO     Finetuning  epochs=3",
        '2024-05-01T12:00:00.000000Z WARNING  epoch done  loss=0.25 note="two words"',
    ]


def test_logs_show_a_traceback_on_indented_lines(store: Path) -> None:
    run = create_run({}, run_name="tb", runs_dir=store)
    RunWriter(run).set_status(RunStatus.STARTED)
    _log(run, "fit failed", level="error", exception="Traceback:\n  boom\nValueError: x")
    assert run.logs().splitlines() == [
        "2024-05-01T12:00:00.000000Z ERROR    fit failed",
        "  exception:",
        "    Traceback:",
        "      boom",
        "    ValueError: x",
    ]


def test_stream_logs_follows_until_finished(store: Path) -> None:
    run = create_run({}, run_name="s", runs_dir=store)
    RunWriter(run).set_status(RunStatus.STARTED)

    def train() -> None:
        for i in range(5):
            time.sleep(0.03)
            _log(run, "step", i=i)
        RunWriter(run).set_status(RunStatus.FINISHED)

    writer = threading.Thread(target=train)
    writer.start()
    try:
        lines = list(run.stream_logs(interval=0.01, timeout=30))
    finally:
        writer.join()
    assert lines == [f"2024-05-01T12:00:00.000000Z INFO     step  i={i}" for i in range(5)]


def test_stream_logs_waits_for_a_created_run_and_ends_when_it_fails(store: Path) -> None:
    run = create_run({}, run_name="s2", runs_dir=store)

    def train() -> None:
        time.sleep(0.05)
        RunWriter(run).set_status(RunStatus.STARTED)
        _log(run, "begin")
        time.sleep(0.05)
        _log(run, "crash", level="error")
        RunWriter(run).set_status(RunStatus.FAILED, reason="boom")

    writer = threading.Thread(target=train)
    writer.start()
    try:
        lines = list(run.stream_logs(interval=0.01, timeout=30))
    finally:
        writer.join()
    assert [line.split()[2] for line in lines] == ["begin", "crash"]


def test_stream_logs_timeout(store: Path) -> None:
    run = create_run({}, run_name="slow", runs_dir=store)
    RunWriter(run).set_status(RunStatus.STARTED)
    _log(run, "begin")
    stream = run.stream_logs(interval=0.01, timeout=0.1)
    assert "begin" in next(stream)
    start = time.monotonic()
    with pytest.raises(RunInProgressError, match="still STARTED"):
        next(stream)
    assert time.monotonic() - start < 5
    with pytest.raises(ConfigError):
        run.stream_logs(interval=0)


# ----------------------------------------------------------------- examples


def test_example_results_and_display(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = create_run({}, run_name="ex", runs_dir=store)
    assert run.example_results() == {}
    run.display_examples()
    assert "no example results" in capsys.readouterr().out

    examples = {
        "before": {"red shoe": ["blue hat", "red boot", "green sock"]},
        "after": {"red shoe": ["red boot", "red sandal", "blue hat"], "cat": ["kitten"]},
    }
    RunWriter(run).write_examples(examples)
    assert run.example_results() == examples

    run.display_examples(k=2)
    out = capsys.readouterr().out
    assert "Results before fine-tuning:" in out
    assert "Results after fine-tuning:" in out
    assert out.count("Query") == 3
    assert "Match 1" in out and "Match 2" in out and "Match 3" not in out
    before, after = out.split("Results after fine-tuning:")
    assert "green sock" not in before  # third match, cut by k=2
    assert "red boot" in before and "red sandal" in after and "kitten" in after
    rows = [line for line in after.splitlines() if "red shoe" in line or "Match" in line]
    assert "Query" in rows[0] and "red shoe" in rows[0]
    assert "Match 1" in rows[1] and "red boot" in rows[1]

    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="k="):
            run.display_examples(k=bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------- artifact


def test_artifact_path_while_running_and_after_failure(store: Path) -> None:
    run = create_run({}, run_name="art", runs_dir=store)
    with pytest.raises(RunInProgressError, match="is CREATED"):
        _ = run.artifact_path
    RunWriter(run).set_status(RunStatus.STARTED)
    with pytest.raises(RunInProgressError) as info:
        _ = run.artifact_path
    assert str(info.value) == (
        "run 'art' is STARTED; its artifact exists once it finishes; wait with run.stream_logs()."
    )
    RunWriter(run).set_status(
        RunStatus.FAILED, reason="CUDA out of memory", plugin="wiseft", hook="h"
    )
    with pytest.raises(RunFailedError, match="CUDA out of memory") as failed:
        _ = run.artifact_path
    assert "wiseft" in str(failed.value)
    RunWriter(run).set_status(RunStatus.FINISHED)
    with pytest.raises(RunError, match=r"artifact folder .* is missing"):
        _ = run.artifact_path


def test_save_artifact_zips_the_artifact_folder(store: Path, tmp_path: Path) -> None:
    run = _finished_run(store, "zipme")
    assert run.artifact_path == run.artifact_dir
    assert run.artifact_id == str(run.artifact_dir)
    target = run.save_artifact(tmp_path / "out")
    assert target == tmp_path / "out" / "zipme.zip"
    with zipfile.ZipFile(target) as archive:
        assert sorted(archive.namelist()) == [
            "zipme/config.yml",
            "zipme/models/model/model.safetensors",
        ]
        assert archive.read("zipme/models/model/model.safetensors") == b"\x00weights"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["zipme.zip"]


def test_save_artifact_default_directory(store: Path, tmp_path: Path, monkeypatch) -> None:
    run = _finished_run(store, "cwd")
    monkeypatch.chdir(tmp_path)
    assert run.save_artifact().resolve() == (tmp_path / "artifacts" / "cwd.zip").resolve()


def test_save_artifact_of_a_running_run_is_refused(store: Path, tmp_path: Path) -> None:
    run = create_run({}, run_name="busy", runs_dir=store)
    RunWriter(run).set_status(RunStatus.STARTED)
    with pytest.raises(RunInProgressError):
        run.save_artifact(tmp_path / "out")
    assert not (tmp_path / "out" / "busy.zip").exists()


# ----------------------------------------------------------------- finding runs


def test_get_run_across_experiments(store: Path) -> None:
    created = create_run({}, run_name="only", experiment_name="exp-a", runs_dir=store)
    create_run({}, run_name="other", experiment_name="exp-b", runs_dir=store)
    found = get_run("only", runs_dir=store)
    assert found == created and found.experiment_name == "exp-a"
    assert get_run("only", experiment_name="exp-a", runs_dir=store) == created
    with pytest.raises(RunNotFoundError, match="in experiment 'exp-b'"):
        get_run("only", experiment_name="exp-b", runs_dir=store)
    with pytest.raises(ExperimentNotFoundError):
        get_run("only", experiment_name="exp-c", runs_dir=store)


def test_get_run_ambiguous_name(store: Path) -> None:
    create_run({}, run_name="twin", experiment_name="one", runs_dir=store)
    create_run({}, run_name="twin", experiment_name="two", runs_dir=store)
    with pytest.raises(RunError) as info:
        get_run("twin", runs_dir=store)
    assert not isinstance(info.value, RunNotFoundError)
    assert "'one'" in str(info.value) and "'two'" in str(info.value)
    assert "experiment_name" in str(info.value)
    assert get_run("twin", experiment_name="two", runs_dir=store).experiment_name == "two"


def test_get_run_not_found_suggests_close_names(store: Path) -> None:
    create_run({}, run_name="brave-heron-4821", experiment_name="exp", runs_dir=store)
    with pytest.raises(RunNotFoundError) as info:
        get_run("brave-heron-4812", runs_dir=store)
    message = str(info.value)
    assert "Did you mean 'brave-heron-4821'?" in message
    assert str(store) in message and "exp" in message


def test_get_run_in_an_empty_store(store: Path) -> None:
    with pytest.raises(RunNotFoundError, match="no experiments"):
        get_run("nothing", runs_dir=store)


def test_list_runs_sorted_by_creation(store: Path) -> None:
    assert list_runs(runs_dir=store) == []
    names = ["zeta", "alpha", "mid"]
    for i, name in enumerate(names):
        create_run({}, run_name=name, experiment_name="ab"[i % 2], runs_dir=store)
    assert [r.name for r in list_runs(runs_dir=store)] == names
    assert [r.name for r in list_runs("a", runs_dir=store)] == ["zeta", "mid"]
    (store / "a" / "leftover").mkdir()  # not a run: no status.json
    assert [r.name for r in list_runs("a", runs_dir=store)] == ["zeta", "mid"]
    with pytest.raises(ExperimentNotFoundError, match="Did you mean 'a'"):
        list_runs("A1", runs_dir=store)


# ----------------------------------------------------------------- deleting runs


def test_delete_run_refuses_a_live_started_run(store: Path) -> None:
    run = create_run({}, run_name="live", runs_dir=store)
    RunWriter(run).set_status(RunStatus.STARTED)  # pid is this very process
    with pytest.raises(RunInProgressError, match=f"pid {os.getpid()}"):
        delete_run("live", runs_dir=store)
    assert run.path.is_dir()
    RunWriter(run).set_status(RunStatus.FAILED, reason="stopped")
    delete_run("live", runs_dir=store)
    assert not run.path.exists()
    assert list(run.path.parent.iterdir()) == [run.path.parent / "experiment.json"]
    with pytest.raises(RunNotFoundError):
        get_run("live", runs_dir=store)


def test_delete_run_of_a_dead_started_process(store: Path) -> None:
    run = create_run({}, run_name="crashed", runs_dir=store)
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    RunWriter(run).set_status(RunStatus.STARTED, pid=process.pid)
    delete_run("crashed", runs_dir=store)
    assert not run.path.exists()


def test_delete_run_created_or_finished(store: Path) -> None:
    created = create_run({}, run_name="c", runs_dir=store)
    finished = _finished_run(store, "f")
    delete_run("c", runs_dir=store)
    delete_run("f", experiment_name="default", runs_dir=store)
    assert not created.path.exists() and not finished.path.exists()
    # the name is free again
    assert create_run({}, run_name="c", runs_dir=store).status()["status"] == "CREATED"


# ----------------------------------------------------------------- experiments


def test_experiments_crud(store: Path) -> None:
    assert list_experiments(runs_dir=store) == []
    beta = create_experiment("beta", runs_dir=store)
    alpha = create_experiment("alpha", runs_dir=store)
    assert isinstance(alpha, Experiment) and alpha.path == store / "alpha"
    assert repr(alpha).startswith("Experiment(name='alpha'")
    assert alpha.created_at is not None
    assert [e.name for e in list_experiments(runs_dir=store)] == ["alpha", "beta"]
    assert get_experiment("beta", runs_dir=store) == beta
    with pytest.raises(ConfigError, match="already exists"):
        create_experiment("alpha", runs_dir=store)
    assert ensure_experiment("alpha", runs_dir=store) == alpha
    assert ensure_experiment("gamma", runs_dir=store).path.is_dir()
    with pytest.raises(ExperimentNotFoundError, match="Did you mean 'alpha'"):
        get_experiment("alpah", runs_dir=store)

    run = alpha.list_runs()
    assert run == []
    r1 = create_run({}, run_name="r1", experiment_name="alpha", runs_dir=store)
    assert alpha.list_runs() == [r1] and alpha.get_run("r1") == r1
    alpha.delete_run("r1")
    assert alpha.list_runs() == []

    create_run({}, run_name="r2", experiment_name="beta", runs_dir=store)
    delete_experiment("beta", runs_dir=store)
    assert [e.name for e in list_experiments(runs_dir=store)] == ["alpha", "gamma"]
    assert sorted(p.name for p in store.iterdir()) == ["alpha", "gamma"]
    with pytest.raises(ExperimentNotFoundError):
        delete_experiment("beta", runs_dir=store)


def test_delete_experiment_refuses_when_a_run_is_live(store: Path) -> None:
    create_run({}, run_name="idle", experiment_name="busy", runs_dir=store)
    live = create_run({}, run_name="working", experiment_name="busy", runs_dir=store)
    RunWriter(live).set_status(RunStatus.STARTED)
    with pytest.raises(RunInProgressError, match="'working'"):
        delete_experiment("busy", runs_dir=store)
    assert [r.name for r in list_runs("busy", runs_dir=store)] == ["idle", "working"]
    RunWriter(live).set_status(RunStatus.FINISHED)
    delete_experiment("busy", runs_dir=store)
    assert not (store / "busy").exists()


# ----------------------------------------------------------------- where the store is


def test_runs_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FINETUNER_RUNS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_runs_dir() == tmp_path / "finetuner-runs"
    run = create_run({}, run_name="here")
    assert run.path == tmp_path / "finetuner-runs" / "default" / "here"

    monkeypatch.setenv("FINETUNER_RUNS_DIR", str(tmp_path / "from-env"))
    assert resolve_runs_dir() == tmp_path / "from-env"
    moved = create_run({}, run_name="there")
    assert moved.path == tmp_path / "from-env" / "default" / "there"
    assert [r.name for r in list_runs()] == ["there"]
    assert get_run("there") == moved
    with pytest.raises(RunNotFoundError):
        get_run("here")

    assert resolve_runs_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert get_run("here", runs_dir=tmp_path / "finetuner-runs") == run


def test_relative_runs_dir_is_made_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = create_run({}, run_name="rel", runs_dir="relative-store")
    assert run.path.is_absolute()
    monkeypatch.chdir(tmp_path.parent)
    assert run.status()["status"] == "CREATED"  # still found after a chdir


# ----------------------------------------------------------------- another process


def test_a_run_reopened_in_another_process_sees_the_same_state(store: Path) -> None:
    run = create_run({"model": "mlp"}, run_name="shared", experiment_name="x", runs_dir=store)
    RunWriter(run).set_status(RunStatus.STARTED)
    RunWriter(run).append_metrics("before", 0, 0, {"mlp_precision_at_k": 0.25})
    RunWriter(run).append_metrics("after", 2, 40, {"mlp_precision_at_k": 0.75})
    RunWriter(run).set_status(RunStatus.FINISHED)
    script = (
        "import json, sys\n"
        "from finetuner.runs import get_run\n"
        "run = get_run('shared', runs_dir=sys.argv[1])\n"
        "print(json.dumps({'status': run.status(), 'metrics': run.metrics()}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(CORE)}
    env.pop("FINETUNER_RUNS_DIR", None)
    result = subprocess.run(
        [sys.executable, "-c", script, str(store)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["status"] == run.status()
    assert seen["status"]["status"] == "FINISHED"
    assert seen["metrics"] == {
        "before": {"mlp_precision_at_k": 0.25},
        "after": {"mlp_precision_at_k": 0.75},
    }
