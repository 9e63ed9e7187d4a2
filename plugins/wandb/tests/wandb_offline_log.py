"""Read what an offline W&B run wrote, without syncing it anywhere.

wandb (0.31) has no public reader for offline runs: ``wandb.Api`` only talks to a server, and
an offline run writes no ``wandb-summary.json``. Everything it logged is in the run's
``run-<id>.wandb`` file: a LevelDB-style log (a 7-byte ``:W&B`` header, then 32 KiB blocks of
chunks, each with a CRC-32, a length and a FULL/FIRST/MIDDLE/LAST type) of protobuf
``Record`` messages, whose classes wandb ships in ``wandb.proto.wandb_internal_pb2``. The
checksum is verified, so a format change fails loudly here instead of reading garbage.

``run.finish()`` can return before wandb's service has flushed the run's log (seen under load:
a log holding only its header), so a run is read once its log ends with the ``exit`` record.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_BLOCK = 32 * 1024
_HEADER = 7  # checksum (4, little endian), length (2), chunk type (1)
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    path: Path
    run_id: str = ""
    project: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    start_time: float = 0.0

    def rows_with(self, key: str) -> list[dict[str, Any]]:
        return [row for row in self.history if key in row]

    def keys(self) -> set[str]:
        return {key for row in self.history for key in row if not key.startswith("_")}


def _chunks_to_records(data: bytes) -> list[bytes]:
    if data[:4] != b":W&B":
        raise ValueError(f"not a W&B transaction log: starts with {data[:7]!r}")
    records, pending, pos = [], b"", 7
    while pos + _HEADER <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < _HEADER:  # a block's tail too short for a header is padding
            pos += room
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if (checksum, length, kind) == (0, 0, 0):  # zero padding up to the next block
            pos += room
            continue
        if pos + _HEADER + length > len(data):  # the writer has not flushed the rest yet
            break
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != checksum:
            raise ValueError(f"bad checksum in the W&B log at byte {pos}")
        pos += _HEADER + length
        if kind == _FULL:
            records.append(chunk)
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            records.append(pending + chunk)
            pending = b""
        else:
            raise ValueError(f"unknown chunk type {kind} in the W&B log at byte {pos}")
    return records


def _item_key(item: Any) -> str:
    return item.key or ".".join(item.nested_key)


def read_offline_run(run_dir: Path, timeout: float = 60.0) -> OfflineRun:
    """Parse the ``run-*.wandb`` file of one finished offline run folder, waiting up to
    *timeout* seconds for wandb to write it out to its ``exit`` record."""
    deadline = time.monotonic() + timeout
    while True:
        run = _parse_offline_run(Path(run_dir))
        if run.exit_code is not None:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the W&B log in {run_dir} has no exit record after {timeout:.0f} s: the run "
                "was not finished, or wandb did not write its log out"
            )
        time.sleep(0.05)


def _parse_offline_run(run_dir: Path) -> OfflineRun:
    from wandb.proto import wandb_internal_pb2

    (log_file,) = run_dir.glob("run-*.wandb")
    run = OfflineRun(path=run_dir)
    for raw in _chunks_to_records(log_file.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id = record.run.run_id
            run.project = record.run.project
            run.name = record.run.display_name
            run.tags = list(record.run.tags)
            run.start_time = record.run.start_time.seconds + record.run.start_time.nanos / 1e9
            for item in record.run.config.update:
                run.config[_item_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run.config[_item_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            run.history.append(
                {_item_key(item): json.loads(item.value_json) for item in record.history.item}
            )
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[_item_key(item)] = json.loads(item.value_json)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def offline_runs(wandb_dir: Path) -> list[OfflineRun]:
    """Every offline run under *wandb_dir* (the ``dir`` given to W&B), oldest first."""
    runs = [read_offline_run(folder) for folder in Path(wandb_dir).glob("wandb/offline-run-*")]
    return sorted(runs, key=lambda run: run.start_time)


def offline_environment(monkeypatch: Any, folder: Path) -> None:
    """Point W&B at *folder* in offline mode: it writes nothing elsewhere and never reaches
    the network."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.setenv("WANDB_DIR", str(folder))
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(folder / "wandb-home"))
    for name in ("WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_NAME"):
        monkeypatch.delenv(name, raising=False)
