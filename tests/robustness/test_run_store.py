"""A run store damaged in every way we could think of: each case damages one run, ``victim``,
next to a healthy one. Listing the store still works and shows the healthy run, reading the
damaged part raises the documented exception naming the file, and the command line prints one
clear ``error:`` line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from finetuner.cli import main
from finetuner.errors import RunError, RunNotFoundError
from finetuner.runs import RunWriter, create_run, get_run, list_runs
from finetuner.runs.checkpoints import list_checkpoints, load_checkpoint, write_checkpoint
from robustness.cli import assert_one_clear_error


def _status(run_path: Path) -> Path:
    return run_path / "status.json"


def _write(name: str, data: bytes | str) -> Callable[[Path], None]:
    def damage(run_path: Path) -> None:
        target = run_path / name
        if isinstance(data, str):
            target.write_text(data, encoding="utf-8")
        else:
            target.write_bytes(data)

    return damage


def _folder_instead(name: str) -> Callable[[Path], None]:
    def damage(run_path: Path) -> None:
        target = run_path / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        target.mkdir()

    return damage


def _remove(name: str) -> Callable[[Path], None]:
    def damage(run_path: Path) -> None:
        target = run_path / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    return damage


def _status_fields(**fields: Any) -> Callable[[Path], None]:
    def damage(run_path: Path) -> None:
        content = json.loads(_status(run_path).read_text())
        content.update(fields)
        _status(run_path).write_text(json.dumps(content))

    return damage


def _truncate_status(run_path: Path) -> None:
    text = _status(run_path).read_text()
    _status(run_path).write_text(text[: len(text) // 2])


def _run_folder_is_a_file(run_path: Path) -> None:
    shutil.rmtree(run_path)
    run_path.write_text("not a run")


def _garbage_checkpoint(run_path: Path) -> None:
    (next((run_path / "checkpoints").iterdir()) / "state.pt").write_bytes(b"\x80\x04garbage")


def _truncated_checkpoint(run_path: Path) -> None:
    state = next((run_path / "checkpoints").iterdir()) / "state.pt"
    state.write_bytes(state.read_bytes()[:40])


def _checkpoint_meta_gone(run_path: Path) -> None:
    (next((run_path / "checkpoints").iterdir()) / "meta.json").unlink()


def _checkpoints_a_file(run_path: Path) -> None:
    shutil.rmtree(run_path / "checkpoints")
    (run_path / "checkpoints").write_text("not a folder")


def _status_api(run_path: Path) -> Any:
    return get_run("victim", runs_dir=run_path.parent.parent).status()


def _reader(method: str) -> Callable[[Path], Any]:
    def read(run_path: Path) -> Any:
        return getattr(get_run("victim", runs_dir=run_path.parent.parent), method)()

    return read


def _config(run_path: Path) -> Any:
    return get_run("victim", runs_dir=run_path.parent.parent).config


def _artifact(run_path: Path) -> Any:
    return get_run("victim", runs_dir=run_path.parent.parent).artifact_path


def _latest_checkpoint(run_path: Path) -> Any:
    found = list_checkpoints(run_path / "checkpoints")
    if not found:
        raise RunError(f"no complete checkpoint in {run_path / 'checkpoints'}")
    return load_checkpoint(found[-1])


@dataclass(frozen=True)
class Case:
    damage: Callable[[Path], None]
    read: Callable[[Path], Any]
    error: type[Exception] | None  # None: the damage is tolerated, reading works
    names: str = "victim"  # what the message must name (a regular expression)
    cli: tuple[str, ...] | None = ("runs", "victim")  # a command that meets the damage
    listed: bool = True  # whether the victim still appears in `finetuner runs`


_STATUS = r"victim[/\\]status\.json"
_METRICS = r"victim[/\\]metrics\.jsonl"

CASES = {
    "status empty": Case(_write("status.json", ""), _status_api, RunError, _STATUS),
    "status not JSON": Case(_write("status.json", "{status: ok"), _status_api, RunError, _STATUS),
    "status binary": Case(
        _write("status.json", b"\x00\xff\xfe\x80"), _status_api, RunError, _STATUS
    ),
    "status bad UTF-8 in a string": Case(
        _write("status.json", b'{"status": "FAILED\xff"}'), _status_api, RunError, _STATUS
    ),
    "status truncated": Case(_truncate_status, _status_api, RunError, _STATUS),
    "status a list": Case(_write("status.json", "[1, 2]"), _status_api, RunError, _STATUS),
    "status a string": Case(_write("status.json", '"FINISHED"'), _status_api, RunError, _STATUS),
    "status without status": Case(_write("status.json", "{}"), _status_api, RunError, _STATUS),
    "status unknown value": Case(
        _status_fields(status="RUNNING"), _status_api, RunError, _STATUS + ".*RUNNING"
    ),
    "status value a number": Case(_status_fields(status=5), _status_api, RunError, _STATUS),
    "status value null": Case(_status_fields(status=None), _status_api, RunError, _STATUS),
    "status.json a folder": Case(
        _folder_instead("status.json"),
        _status_api,
        RunNotFoundError,
        r"no run named 'victim'.*runs",
        listed=False,
    ),
    "run folder a file": Case(
        _run_folder_is_a_file, _status_api, RunNotFoundError, "victim", listed=False
    ),
    "pid a string": Case(_status_fields(status="STARTED", pid="abc"), _status_api, None),
    "pid negative": Case(_status_fields(status="STARTED", pid=-4), _status_api, None),
    "host a number": Case(_status_fields(status="STARTED", pid=1, host=7), _status_api, None),
    "created_at a list": Case(_status_fields(created_at=[1, 2]), _status_api, None),
    "reason an object": Case(_status_fields(status="FAILED", reason={"a": 1}), _status_api, None),
    "metrics line not JSON": Case(
        _write("metrics.jsonl", '{"stage": "before", "metrics": {}}\n{oops\n'),
        _reader("metric_history"),
        RunError,
        _METRICS + ":2",
    ),
    "metrics line a list": Case(
        _write("metrics.jsonl", "[1, 2]\n"), _reader("metric_history"), RunError, _METRICS + ":1"
    ),
    "metrics binary": Case(
        _write("metrics.jsonl", b"\xff\x00\xfe\n"), _reader("metrics"), RunError, _METRICS
    ),
    "metrics values not an object": Case(
        _write("metrics.jsonl", '{"stage": "after", "metrics": "high"}\n'),
        _reader("metrics"),
        RunError,
        _METRICS,
    ),
    "metrics.jsonl a folder": Case(
        _folder_instead("metrics.jsonl"), _reader("metrics"), RunError, _METRICS
    ),
    "steps line not JSON": Case(
        _write("steps.jsonl", "nope\n"),
        _reader("step_history"),
        RunError,
        r"steps\.jsonl:1",
        cli=None,
    ),
    "logs.jsonl a folder": Case(
        _folder_instead("logs.jsonl"), _reader("logs"), RunError, r"logs\.jsonl", cli=None
    ),
    "config not JSON": Case(
        _write("config.json", "{"), _config, RunError, r"victim[/\\]config\.json", cli=None
    ),
    "config missing": Case(
        _remove("config.json"), _config, RunError, r"victim[/\\]config\.json", cli=None
    ),
    "config a list": Case(
        _write("config.json", "[]"), _config, RunError, r"victim[/\\]config\.json", cli=None
    ),
    "examples not JSON": Case(
        _write("examples.json", "{"),
        _reader("example_results"),
        RunError,
        r"examples\.json",
        cli=None,
    ),
    "examples a list": Case(
        _write("examples.json", "[]"),
        _reader("example_results"),
        RunError,
        r"examples\.json",
        cli=None,
    ),
    "queries binary": Case(
        _write("queries.json", b"\x89PNG\r\n"),
        _reader("query_results"),
        RunError,
        r"queries\.json",
        cli=None,
    ),
    "finished without artifact": Case(
        _remove("artifact"), _artifact, RunError, r"victim[/\\]artifact", cli=None
    ),
    "checkpoint garbage": Case(
        _garbage_checkpoint, _latest_checkpoint, RunError, r"epoch-0000", cli=None
    ),
    "checkpoint truncated": Case(
        _truncated_checkpoint, _latest_checkpoint, RunError, r"epoch-0000", cli=None
    ),
    "checkpoint without meta.json": Case(
        _checkpoint_meta_gone, _latest_checkpoint, RunError, r"checkpoints", cli=None
    ),
    "checkpoints a file": Case(
        _checkpoints_a_file, _latest_checkpoint, RunError, r"checkpoints", cli=None
    ),
}


def _store(root: Path) -> Path:
    """A store with a FINISHED run ``healthy`` and a FINISHED run ``victim`` holding every
    file a run can have; returns the victim's folder."""
    for name in ("healthy", "victim"):
        run = create_run({"seed": 1}, run_name=name, runs_dir=root)
        writer = RunWriter(run)
        writer.set_status("STARTED")
        writer.append_metrics("before", 0, 0, {"ndcg": 0.5})
        writer.append_metrics("after", 0, 3, {"ndcg": 0.7})
        writer.record_step({"epoch": 0, "step": 1, "loss": 1.0})
        writer.flush_steps()
        writer.write_examples({"before": {"q": ["a"]}})
        writer.record_query_results("before", "eval", "ndcg", [{"query": "q", "score": 1.0}])
        write_checkpoint(run.checkpoint_dir, 0, {"step": 3})
        run.log_path.write_text('{"event": "run started"}\n')
        run.artifact_dir.mkdir()
        writer.set_status("FINISHED")
    return root / "default" / "victim"


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_a_damaged_run(tmp_path, capsys, case):
    victim = _store(tmp_path)
    case.damage(victim)

    runs = list_runs(runs_dir=tmp_path)
    assert "healthy" in [run.name for run in runs]
    capsys.readouterr()
    assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert "default/healthy  FINISHED" in listing
    assert ("default/victim" in listing) == case.listed
    assert main(["runs", "--runs-dir", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["status"] for row in rows if row["name"] == "healthy"] == ["FINISHED"]

    if case.error is None:
        case.read(victim)
        assert main(["runs", "victim", "--runs-dir", str(tmp_path)]) == 0
        return
    with pytest.raises(case.error) as caught:
        case.read(victim)
    assert caught.match(case.names)
    if case.cli is not None:
        assert_one_clear_error(capsys, [*case.cli, "--runs-dir", str(tmp_path)], names=case.names)


def test_there_are_enough_cases():
    assert len(CASES) >= 25


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


def test_a_run_whose_process_is_gone_is_stale(tmp_path, capsys):
    run = create_run({"seed": 1}, run_name="orphan", runs_dir=tmp_path)
    RunWriter(run).set_status("STARTED")
    _status_fields(pid=_dead_pid())(run.path)  # as if SIGKILL had ended the fit
    run.log_path.write_text('{"event": "epoch 1", "level": "info"}\n')

    assert run.status()["status"] == "STARTED" and run.status()["stale"] is True
    assert "stale" not in json.loads((run.path / "status.json").read_text())
    # stream_logs ends, as it does for a finished run, instead of waiting for a dead process
    assert [line.split()[-1] for line in run.stream_logs(interval=0.01, timeout=5)] == ["1"]
    capsys.readouterr()
    assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
    assert "STARTED, stale (its process" in capsys.readouterr().out
    assert main(["runs", "--runs-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["stale"] is True


def test_a_live_or_remote_run_is_not_stale(tmp_path):
    run = create_run({"seed": 1}, run_name="alive", runs_dir=tmp_path)
    RunWriter(run).set_status("STARTED")  # this process: alive
    assert "stale" not in run.status()
    _status_fields(pid=_dead_pid(), host="another-machine")(run.path)
    assert "stale" not in run.status()  # a pid of another machine says nothing here
