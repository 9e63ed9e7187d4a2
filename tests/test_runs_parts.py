"""The pieces of the run store: light imports, old module names, file reading, processes,
log rendering and following, the run log, and checkpoint folders. Real files, real processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from finetuner.errors import ConfigError, RunError
from finetuner.runs import Run, RunStatus, RunWriter, create_run
from finetuner.runs.checkpoints import (
    list_checkpoints,
    load_checkpoint,
    prune,
    write_checkpoint,
)
from finetuner.runs.jsonfiles import jsonl_records, read_json
from finetuner.runs.log import RunLog, level_number
from finetuner.runs.processes import live_pid, pid_alive
from finetuner.runs.render import render_line, render_record

CORE = Path(__file__).resolve().parents[1] / "core"
HEAVY = ("torch", "numpy", "pydantic", "transformers")


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return create_run({"model": "mlp"}, run_name="parts", runs_dir=tmp_path / "store")


# ----------------------------------------------------------------- imports


def test_reading_runs_imports_no_heavy_library(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run = create_run({"model": "mlp"}, run_name="light", runs_dir=store)
    writer = RunWriter(run)
    writer.set_status(RunStatus.STARTED)
    writer.append_metrics("before", -1, 0, {"a": 0.5})
    writer.record_examples("before", {"q": ["m"]})
    writer.set_status(RunStatus.FINISHED)
    run.log_path.write_text('{"event": "done", "level": "info"}\n')
    write_checkpoint(run.checkpoint_dir, 0, {"step": 1})
    script = (
        "import json, sys\n"
        "import finetuner, finetuner.runs\n"
        "finetuner.runs.list_runs()\n"
        "(run,) = finetuner.list_runs()\n"
        "run.status(), run.metrics(), run.logs(), run.example_results(), run.config\n"
        "finetuner.get_run('light').metric_history()\n"
        "from finetuner.runs.checkpoints import list_checkpoints, prune\n"
        "assert len(list_checkpoints(run.checkpoint_dir)) == 1\n"
        "prune(run.checkpoint_dir, keep=1)\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(CORE), "FINETUNER_RUNS_DIR": str(store)}
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_old_module_names_are_the_new_modules() -> None:
    import finetuner._runlog
    import finetuner.checkpoint
    import finetuner.runs.checkpoints
    import finetuner.runs.log

    assert finetuner.checkpoint is finetuner.runs.checkpoints
    assert finetuner._runlog is finetuner.runs.log
    from finetuner._runlog import RunLog, level_number  # noqa: F401
    from finetuner.checkpoint import (  # noqa: F401 - every name the old module had
        FORMAT_VERSION,
        Checkpoint,
        list_checkpoints,
        load_checkpoint,
        prune,
        write_checkpoint,
    )


# ----------------------------------------------------------------- JSON files


def test_a_damaged_json_file_is_a_run_error_naming_it(run: Run) -> None:
    status = run.path / "status.json"
    status.write_text("{not json")
    with pytest.raises(RunError, match=r"the status file .*status\.json is not valid JSON"):
        run.status()
    with pytest.raises(FileNotFoundError):
        read_json(run.path / "missing.json", "missing")
    status.write_text("[1, 2]")
    with pytest.raises(RunError, match="does not hold a run status"):
        run.status()
    (run.path / "config.json").write_text('"just a string"')
    with pytest.raises(RunError, match="does not hold a JSON object"):
        _ = run.config


def test_jsonl_records_skip_blank_lines_and_an_unfinished_last_line(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    assert list(jsonl_records(path)) == []  # a missing file has no records
    path.write_bytes(b'{"a": 1}\n\n  \nnot json\r\n{"b": 2}\n{"c": ')
    assert list(jsonl_records(path)) == [
        (1, {"a": 1}, '{"a": 1}'),
        (4, None, "not json"),
        (5, {"b": 2}, '{"b": 2}'),
    ]
    path.write_bytes(b'{"a": 1}\n{"c": 3}')  # a last line that parses is whole already
    assert [record for _, record, _ in jsonl_records(path)] == [{"a": 1}, {"c": 3}]


def test_a_line_that_is_not_a_metrics_record_names_file_and_line(run: Run) -> None:
    RunWriter(run).append_metrics("before", -1, 0, {"a": 1})
    with open(run.metrics_path, "a") as handle:
        handle.write("[1, 2]\n")
    with pytest.raises(RunError, match=r"metrics\.jsonl:2 is not a metrics record"):
        run.metric_history()


# ----------------------------------------------------------------- processes


def test_live_pid_needs_a_started_run_of_a_live_process_on_this_machine() -> None:
    here = {"status": "STARTED", "pid": os.getpid(), "host": socket.gethostname()}
    assert live_pid(here) == os.getpid()
    assert live_pid({"status": "STARTED", "pid": os.getpid()}) == os.getpid()  # no host recorded
    assert live_pid({**here, "status": "FAILED"}) is None
    assert live_pid({**here, "status": "CREATED"}) is None
    assert live_pid({**here, "host": socket.gethostname() + "-elsewhere"}) is None
    for pid in (True, str(os.getpid()), None, 1.0):
        assert live_pid({**here, "pid": pid}) is None
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert live_pid({**here, "pid": process.pid}) is None
    assert pid_alive(os.getpid())
    assert not pid_alive(0) and not pid_alive(-5)
    assert not pid_alive(process.pid)


# ----------------------------------------------------------------- rendering and following


def test_render_lines_that_are_not_records() -> None:
    assert render_line("plain text, not JSON") == "plain text, not JSON"
    assert render_line("[1, 2]") == "[1, 2]"
    assert render_record("hello") == "hello"
    assert render_record("two words") == '"two words"'
    assert render_record({"event": "x", "logger": "finetuner.trainer"}) == "- -        x"
    assert render_record({"event": "x", "level": "info", "path": None, "k": [1, "a b"]}) == (
        '- INFO     x  path=null k=[1, "a b"]'
    )


def test_logs_show_a_line_that_is_not_json_as_it_is(run: Run) -> None:
    RunWriter(run).set_status(RunStatus.STARTED)
    run.log_path.write_text('{"event": "one", "level": "info", "timestamp": "t"}\nraw line\n')
    assert run.logs().splitlines() == ["t INFO     one", "raw line"]


def test_stream_logs_joins_a_line_written_in_two_parts(run: Run) -> None:
    writer = RunWriter(run)
    writer.set_status(RunStatus.STARTED)

    def train() -> None:
        with open(run.log_path, "a") as handle:
            handle.write('{"event": "first", "level": "info", "time')
            handle.flush()
            time.sleep(0.1)  # the reader looks several times at half a line
            handle.write('stamp": "t"}\n')
            handle.write('{"event": "last", "level": "error", "timestamp": "t"}')  # no newline
        writer.set_status(RunStatus.FAILED, reason="boom")

    thread = threading.Thread(target=train)
    thread.start()
    try:
        lines = list(run.stream_logs(interval=0.01, timeout=30))
    finally:
        thread.join()
    # A final status means the writer is done, so an unfinished last line is shown too.
    assert lines == ["t INFO     first", "t ERROR    last"]


def test_stream_logs_of_a_finished_run_without_a_log_ends_at_once(run: Run) -> None:
    RunWriter(run).set_status(RunStatus.FINISHED)
    assert list(run.stream_logs(interval=0.01, timeout=1)) == []
    for bad in (-1, True, "1"):
        with pytest.raises(ConfigError, match="timeout"):
            run.stream_logs(timeout=bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------- the run log


def test_run_log_writes_json_lines_and_tells_a_listener_once(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "logs.jsonl"
    heard: list[tuple[str, str, str, dict]] = []
    runlog = RunLog(path)
    logger = runlog.logger("finetuner.test")

    def listener(level: str, event: str, name: str, fields: dict) -> None:
        heard.append((level, event, name, fields))
        logger.info("said by the listener")  # written, but not heard again

    runlog.set_listener(listener)
    logger.warning("epoch done", loss=0.25, where=Path("x"))
    runlog.set_listener(None)
    runlog.close()
    logger.info("after close")  # not written, and not an error
    records = [json.loads(line) for line in path.read_text().splitlines()]
    # Written first, then heard: a listener that fails cannot lose the record.
    assert [r["event"] for r in records] == ["epoch done", "said by the listener"]
    done = records[0]
    assert (done["level"], done["logger"], done["loss"], done["where"]) == (
        "warning",
        "finetuner.test",
        0.25,
        "x",
    )
    assert done["timestamp"].endswith("Z")
    assert heard == [
        ("warning", "epoch done", "finetuner.test", {"loss": 0.25, "where": Path("x")})
    ]


def test_level_number() -> None:
    assert [level_number(n) for n in ("debug", "INFO", "warn", "warning", "error")] == [
        10,
        20,
        30,
        30,
        40,
    ]
    assert level_number("exception") == 40 and level_number("critical") == 50
    assert level_number("chatter") == 20


# ----------------------------------------------------------------- checkpoints


def test_checkpoints_list_oldest_first_and_skip_incomplete_folders(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    assert list_checkpoints(folder) == []
    for epoch in (2, 0, 10):
        write_checkpoint(folder, epoch, {"step": epoch * 3, "w": torch.full((2,), float(epoch))})
    (folder / "epoch-0005").mkdir()  # no meta.json, no state.pt: never finished
    (folder / ".epoch-0007.tmp-1").mkdir()
    listed = list_checkpoints(folder)
    assert [c.epoch for c in listed] == [0, 2, 10]
    assert [c.path.name for c in listed] == ["epoch-0000", "epoch-0002", "epoch-0010"]
    state = load_checkpoint(listed[1])
    assert state["step"] == 6 and state["w"].tolist() == [2.0, 2.0]
    assert json.loads((listed[1].path / "meta.json").read_text()) == {
        "format_version": 1,
        "epoch": 2,
        "step": 6,
        "within_epoch": False,
    }
    assert load_checkpoint(listed[2].path)["step"] == 30  # a folder path works too


def test_checkpoints_within_an_epoch_sort_before_its_end(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    write_checkpoint(folder, 1, {"step": 20})
    write_checkpoint(folder, 1, {"step": 12}, step=12)
    write_checkpoint(folder, 2, {"step": 25}, step=25)
    write_checkpoint(folder, 0, {"step": 10})
    write_checkpoint(folder, 1, {"step": 15}, step=15)
    listed = list_checkpoints(folder)
    assert [c.path.name for c in listed] == [
        "epoch-0000",
        "epoch-0001-step-00000012",
        "epoch-0001-step-00000015",
        "epoch-0001",
        "epoch-0002-step-00000025",
    ]
    assert [(c.epoch, c.step) for c in listed][-1] == (2, 25)
    assert json.loads((listed[-1].path / "meta.json").read_text())["within_epoch"] is True


def test_prune_keeps_the_newest_and_removes_stale_temporary_folders(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    for epoch in range(4):
        write_checkpoint(folder, epoch, {"step": epoch})
    stale = folder / ".epoch-0009.tmp-999999"
    mine = folder / f".epoch-0009.tmp-{os.getpid()}"  # this process may be writing it now
    stale.mkdir()
    mine.mkdir()
    removed = prune(folder, keep=2)
    assert [p.name for p in removed] == ["epoch-0000", "epoch-0001"]
    assert [c.epoch for c in list_checkpoints(folder)] == [2, 3]
    assert not stale.exists() and mine.exists()
    with pytest.raises(ConfigError, match="keep must be at least 1"):
        prune(folder, keep=0)
    assert prune(tmp_path / "none", keep=1) == []


def test_unreadable_or_foreign_checkpoints_are_run_errors(tmp_path: Path) -> None:
    checkpoint = write_checkpoint(tmp_path, 0, {"step": 0})
    torch.save({"format_version": 99}, checkpoint.path / "state.pt")
    with pytest.raises(RunError, match="unknown format; it was written by another version"):
        load_checkpoint(checkpoint)
    (checkpoint.path / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="cannot be read"):
        load_checkpoint(checkpoint)
