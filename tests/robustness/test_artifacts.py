"""Damaged, tampered and unsafe artifacts: each is one ArtifactError naming the artifact and the
file from ``get_model``, and one ``error:`` line from the commands that read artifacts
(``finetuner fit`` with ``model_artifact``, ``finetuner evaluate``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

import finetuner
from finetuner.errors import ArtifactError
from finetuner.models.artifact import load_model_records, write_artifact
from finetuner.models.artifact_files import MAX_PREPROCESSOR_BYTES, MAX_YAML_BYTES
from finetuner.models.mlp import MLP_SPEC
from finetuner.runs import RunWriter, create_run
from robustness.cli import assert_one_clear_error

HIDDEN = [3]
INPUT = 64  # the built-in digits data, so that `finetuner fit` can start from the artifact
MODEL = "models/model"
WEIGHTS = f"{MODEL}/model.safetensors"


def write_tiny_artifact(target: Path) -> Path:
    torch.manual_seed(0)
    options = MLP_SPEC.resolve_options({"hidden_sizes": HIDDEN}, (INPUT,))
    return write_artifact(
        target,
        models={"model": MLP_SPEC.build(options)},
        model_metadata={"model": {"registry_name": "mlp", "options": options, "output_dim": 3}},
        config={"model": "mlp"},
        metadata={"run": "r1"},
        metrics={},
        preprocessor_files={"model": {"vocab.txt": b"a b"}},
    )


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return write_tiny_artifact(tmp_path_factory.mktemp("pristine") / "artifact")


# --------------------------------------------------------------------------- tampering helpers


def _meta(folder: Path) -> dict:
    return yaml.safe_load((folder / MODEL / "metadata.yml").read_text())


def _set_meta(**changes) -> Callable[[Path], None]:
    def tamper(folder: Path) -> None:
        meta = _meta(folder)
        meta.update(changes)
        (folder / MODEL / "metadata.yml").write_text(yaml.safe_dump(meta))

    return tamper


def _set_options(**changes) -> Callable[[Path], None]:
    def tamper(folder: Path) -> None:
        meta = _meta(folder)
        meta["options"].update(changes)
        (folder / MODEL / "metadata.yml").write_text(yaml.safe_dump(meta))

    return tamper


def _write(relative: str, data: bytes) -> Callable[[Path], None]:
    def tamper(folder: Path) -> None:
        (folder / relative).write_bytes(data)

    return tamper


def _split(folder: Path) -> tuple[dict, bytes]:
    raw = (folder / WEIGHTS).read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length]), raw[8 + length :]


def _edit_header(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def tamper(folder: Path) -> None:
        header, data = _split(folder)
        edit(header)
        encoded = json.dumps(header).encode()
        (folder / WEIGHTS).write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)

    return tamper


def _first_weight(header: dict) -> str:
    return sorted(k for k in header if k != "__metadata__")[0]


def _rename_tensor(header: dict) -> None:
    key = _first_weight(header)
    header[key + "_renamed"] = header.pop(key)


def _reshape_tensor(header: dict) -> None:
    entry = header[_first_weight(header)]
    entry["shape"] = [*reversed(entry["shape"]), 1]


def _bad_offsets(header: dict) -> None:
    entry = header[_first_weight(header)]
    entry["data_offsets"] = [entry["data_offsets"][0], entry["data_offsets"][1] - 4]


def _negative_dim(header: dict) -> None:
    header[_first_weight(header)]["shape"] = [-1, 3]


def _retype_tensor(header: dict) -> None:
    for key, entry in header.items():
        if key != "__metadata__" and entry["dtype"] == "F32":
            entry["dtype"] = "I32"


def _symlink(relative: str, to: str) -> Callable[[Path], None]:
    def tamper(folder: Path) -> None:
        link = folder / relative
        if link.is_dir():
            shutil.move(str(link), str(folder.parent / "moved"))
            to_target = folder.parent / "moved"
        else:
            if link.exists():
                link.unlink()
            to_target = Path(to)
        link.symlink_to(to_target)

    return tamper


def _at(relative: str, action: Callable[[Path], object]) -> Callable[[Path], None]:
    """A tampering that applies *action* to the artifact's file *relative*."""

    def tamper(folder: Path) -> None:
        action(folder / relative)

    return tamper


def _truncate(relative: str, keep: float) -> Callable[[Path], None]:
    return _at(relative, lambda p: p.write_bytes(p.read_bytes()[: int(p.stat().st_size * keep)]))


def _append(relative: str, extra: bytes) -> Callable[[Path], None]:
    return _at(relative, lambda p: p.write_bytes(p.read_bytes() + extra))


def _remove(relative: str) -> Callable[[Path], None]:
    return _at(relative, lambda p: shutil.rmtree(p) if p.is_dir() else p.unlink())


def _sparse(relative: str, size: int) -> Callable[[Path], None]:
    return _at(relative, lambda p: os.truncate(p, size) if p.exists() else None)


def _fifo(relative: str) -> Callable[[Path], None]:
    return _at(relative, lambda p: (p.unlink(), os.mkfifo(p)))


LAUGHS = "a0: &a0 [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 9)
)

# (case id, tamper(folder), what the message must name)
FOLDER_CASES: list[tuple[str, Callable[[Path], None], str]] = [
    (
        "metadata-not-yaml",
        _write(f"{MODEL}/metadata.yml", b"{: [\n"),
        rf"{MODEL}/metadata\.yml is not valid YAML",
    ),
    (
        "metadata-a-list",
        _write(f"{MODEL}/metadata.yml", b"- 1\n- 2\n"),
        r"metadata\.yml holds a list",
    ),
    (
        "metadata-binary",
        _write(f"{MODEL}/metadata.yml", b"\x00\xff\xfe\x01"),
        r"metadata\.yml is not valid YAML",
    ),
    (
        "metadata-billion-laughs",
        _write(f"{MODEL}/metadata.yml", (LAUGHS + "registry_name: mlp\n").encode()),
        r"metadata\.yml.*aliases expand",
    ),
    (
        "metadata-duplicate-key",
        _write(f"{MODEL}/metadata.yml", b"registry_name: mlp\nregistry_name: mlp\n"),
        r"'registry_name' is given twice",
    ),
    (
        "metadata-python-tag",
        _write(f"{MODEL}/metadata.yml", b"registry_name: !!python/name:os.system\n"),
        r"metadata\.yml is not valid YAML",
    ),
    ("options-a-list", _set_meta(options=[1, 2]), r"metadata\.yml: 'options' is \[1, 2\]"),
    ("options-a-string", _set_meta(options="hidden"), r"metadata\.yml: 'options'"),
    ("registry-name-a-number", _set_meta(registry_name=5), r"metadata\.yml: 'registry_name' is 5"),
    (
        "registry-name-a-mapping",
        _set_meta(registry_name={"a": 1}),
        r"metadata\.yml: 'registry_name'",
    ),
    (
        "registry-name-unknown",
        _set_meta(registry_name="no-such-model"),
        r"metadata\.yml: 'registry_name'.*no-such-model",
    ),
    ("tower-a-list", _set_meta(tower=["x"]), r"metadata\.yml: 'tower'"),
    ("tower-unknown", _set_meta(tower="clip-text"), r"metadata\.yml: the model 'mlp' has no tower"),
    ("output-dim-a-word", _set_meta(output_dim="three"), r"metadata\.yml: 'output_dim'"),
    ("output-dim-a-bool", _set_meta(output_dim=True), r"metadata\.yml: 'output_dim'"),
    (
        "hidden-sizes-edited-larger",
        _set_options(hidden_sizes=[4000]),
        r"metadata\.yml: tensor '.*' is torch\.float32 \(3, 64\) but .* needs torch\.float32 \(4000, 64\)",
    ),
    (
        "hidden-sizes-a-word",
        _set_options(hidden_sizes="abc"),
        r"metadata\.yml: cannot build the model",
    ),
    (
        "hidden-sizes-negative",
        _set_options(hidden_sizes=[-3]),
        r"metadata\.yml: cannot build the model",
    ),
    ("input-size-edited", _set_options(input_size=65), r"metadata\.yml: tensor"),
    ("option-unknown", _set_options(bogus=1), r"metadata\.yml: cannot build the model"),
    (
        "weights-truncated",
        _truncate(WEIGHTS, 0.6),
        r"model\.safetensors is not a valid safetensors file \(the file is \d+ bytes but its header declares",
    ),
    (
        "weights-padded",
        _append(WEIGHTS, b"\x00" * 64),
        r"model\.safetensors is not a valid safetensors file \(the file is \d+ bytes but its header declares",
    ),
    (
        "weights-header-longer-than-file",
        _write(WEIGHTS, struct.pack("<Q", 10**6) + b"{}"),
        r"model\.safetensors is not a valid safetensors file \(its header claims 1000000 bytes",
    ),
    (
        "weights-header-not-json",
        _write(WEIGHTS, struct.pack("<Q", 4) + b"\xff{[x"),
        r"model\.safetensors is not a valid safetensors file \(its header is not valid JSON",
    ),
    (
        "weights-header-a-list",
        _write(WEIGHTS, struct.pack("<Q", 2) + b"[]"),
        r"model\.safetensors is not a valid safetensors file \(its header is not a mapping",
    ),
    (
        "weights-too-short",
        _write(WEIGHTS, b"\x01\x02"),
        r"model\.safetensors is not a valid safetensors file \(\d+ bytes is too short",
    ),
    (
        "weights-empty",
        _write(WEIGHTS, b""),
        r"model\.safetensors is not a valid safetensors file \(\d+ bytes is too short",
    ),
    (
        "weights-a-pickle",
        _write(WEIGHTS, b"\x80\x04\x95\x1a\x00\x00\x00\x00\x00\x00\x00cposix\nsystem\n."),
        r"model\.safetensors is not a valid safetensors file \(its header claims",
    ),
    (
        "weights-header-shape-edited",
        _edit_header(_reshape_tensor),
        r"metadata\.yml: tensor '.*' is torch\.float32 \(\d+, 1\)",
    ),
    (
        "weights-offsets-wrong",
        _edit_header(_bad_offsets),
        r"model\.safetensors is not a valid safetensors file \(the header entry of tensor '.*' is malformed",
    ),
    (
        "weights-negative-dim",
        _edit_header(_negative_dim),
        r"model\.safetensors is not a valid safetensors file \(the header entry of tensor '.*' is malformed",
    ),
    (
        "weights-tensor-renamed",
        _edit_header(_rename_tensor),
        r"metadata\.yml: the weights do not fit .*missing tensors",
    ),
    (
        "weights-dtype-integer",
        _edit_header(_retype_tensor),
        r"metadata\.yml: tensor '.*' is torch\.int32",
    ),
    (
        "weights-missing",
        _remove(WEIGHTS),
        r"model 'model' lacks metadata\.yml or model\.safetensors",
    ),
    ("model-metadata-missing", _remove(f"{MODEL}/metadata.yml"), r"holds no artifact"),
    ("models-folder-missing", _remove("models"), r"holds no artifact"),
    (
        "root-metadata-a-list",
        _write("metadata.yml", b"- a\n"),
        r"artifact '.*': metadata\.yml holds a list",
    ),
    (
        "weights-symlink-to-system-file",
        _symlink(WEIGHTS, "/etc/passwd"),
        r"model\.safetensors is a symbolic link",
    ),
    (
        "card-symlink-to-system-file",
        _symlink("README.md", "/etc/passwd"),
        r"README\.md is a symbolic link",
    ),
    ("models-folder-symlink", _symlink("models", ""), r"'models' |models is a symbolic link"),
    (
        "preprocessor-file-oversized",
        _sparse(f"{MODEL}/preprocessor/vocab.txt", MAX_PREPROCESSOR_BYTES + 1),
        r"preprocessor/vocab\.txt is \d+ bytes, more than",
    ),
    (
        "metadata-oversized",
        _sparse(f"{MODEL}/metadata.yml", MAX_YAML_BYTES + 1),
        r"metadata\.yml is \d+ bytes, more than",
    ),
    ("weights-a-fifo", _fifo(WEIGHTS), r"model\.safetensors is not a regular file"),
]


def _check(path: Path, names: str, capsys, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError) as caught:
        finetuner.get_model(path)
    message = str(caught.value)
    assert str(path) in message, message
    assert re.search(names, message), message
    config = tmp_path / "fit.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": "mlp",
                "train_data": "digits-train",
                "model_options": {"hidden_sizes": HIDDEN},
                "model_artifact": str(path),
                "runs_dir": str(tmp_path / "runs"),
            }
        )
    )
    assert_one_clear_error(capsys, ["fit", str(config)], names=re.escape(str(path)))
    if _has_evaluation():
        assert_one_clear_error(
            capsys,
            ["evaluate", str(path), "--query-data", "digits-eval"],
            names=re.escape(str(path)),
        )


def _has_evaluation() -> bool:
    try:
        import finetuner_evaluation  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize(
    ("tamper", "names"), [c[1:] for c in FOLDER_CASES], ids=[c[0] for c in FOLDER_CASES]
)
def test_a_damaged_artifact_folder_is_one_clear_error(pristine, tmp_path, capsys, tamper, names):
    folder = tmp_path / "artifact"
    shutil.copytree(pristine, folder)
    tamper(folder)
    _check(folder, names, capsys, tmp_path)


# --------------------------------------------------------------------------- zips


def _zip(pristine: Path, target: Path, extra: Callable[[zipfile.ZipFile], None] | None = None):
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for file in sorted(pristine.rglob("*")):
            if file.is_file():
                out.write(file, f"top/{file.relative_to(pristine).as_posix()}")
        if extra:
            extra(out)
    return target


def _add(name: str, data: bytes) -> Callable[[zipfile.ZipFile], None]:
    def add(out: zipfile.ZipFile) -> None:
        with warnings.catch_warnings():  # zipfile warns of the duplicate name it writes
            warnings.simplefilter("ignore", UserWarning)
            out.writestr(name, data)

    return add


def _add_symlink(name: str, to: str) -> Callable[[zipfile.ZipFile], None]:
    def add(out: zipfile.ZipFile) -> None:
        info = zipfile.ZipInfo(name)
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        out.writestr(info, to)

    return add


def _corrupt_member(target: Path) -> None:
    """Flip bytes in the middle of the weights' compressed data: the CRC check fails."""
    with zipfile.ZipFile(target) as archive:
        info = archive.getinfo(f"top/{WEIGHTS}")
    raw = bytearray(target.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start + 5, start + 15):
        raw[i] ^= 0xFF
    target.write_bytes(bytes(raw))


def _zip_with_huge_weights(out: zipfile.ZipFile) -> None:
    """A second, 64 MiB member under the weights' name compresses to almost nothing."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    payload = struct.pack("<Q", len(header)) + header + b"\x00" * (MAX_PREPROCESSOR_BYTES + 1)
    out.writestr("other/models/model/model.safetensors", payload)


ZIP_CASES: list[tuple[str, Callable[[Path, Path], Path], str]] = [
    ("truncated", lambda p, t: _cut(_zip(p, t), 0.5), r"not a valid zip file|zip is damaged"),
    (
        "crc-mismatch",
        lambda p, t: _then(_zip(p, t), _corrupt_member),
        r"zip is damaged|cannot read the zip|safetensors",
    ),
    (
        "traversal-entry",
        lambda p, t: _zip(p, t, _add("../../evil/metadata.yml", b"x: 1")),
        r"'\.\./\.\./evil/metadata\.yml' points outside",
    ),
    (
        "absolute-entry",
        lambda p, t: _zip(p, t, _add("/etc/cron.d/evil", b"x")),
        r"'/etc/cron\.d/evil' points outside",
    ),
    (
        "backslash-entry",
        lambda p, t: _zip(p, t, _add("top\\..\\..\\evil", b"x")),
        r"points outside",
    ),
    (
        "symlink-entry",
        lambda p, t: _zip(p, t, _add_symlink("top/models/model/preprocessor/link", "/etc/passwd")),
        r"'top/models/model/preprocessor/link' is a symbolic link",
    ),
    (
        "duplicate-entry",
        lambda p, t: _zip(p, t, _add(f"top/{WEIGHTS}", b"x")),
        rf"'top/{WEIGHTS}' is in the zip twice",
    ),
    (
        "oversized-preprocessor-member",
        lambda p, t: _zip(
            p,
            t,
            _add("top/models/model/preprocessor/big.json", b"\x00" * (MAX_PREPROCESSOR_BYTES + 1)),
        ),
        r"preprocessor/big\.json is \d+ bytes, more than",
    ),
    (
        "oversized-weights-member",
        lambda p, t: _zip(p, t, _zip_with_huge_weights),
        r"other/models/model/model\.safetensors is not a valid safetensors file \(the file is \d+ bytes but its header declares",
    ),
    (
        "empty-zip",
        lambda p, t: _then(t, lambda x: zipfile.ZipFile(x, "w").close()),
        r"holds no artifact",
    ),
    (
        "not-a-zip",
        lambda p, t: _then(t, lambda x: x.write_bytes(b"PK\x03\x04 not really")),
        r"not a valid zip file",
    ),
]


def _cut(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _then(path: Path, action: Callable[[Path], None]) -> Path:
    action(path)
    return path


@pytest.mark.parametrize(
    ("make", "names"), [c[1:] for c in ZIP_CASES], ids=[c[0] for c in ZIP_CASES]
)
def test_a_damaged_artifact_zip_is_one_clear_error(pristine, tmp_path, capsys, make, names):
    path = make(pristine, tmp_path / "artifact.zip")
    _check(path, names, capsys, tmp_path)


# --------------------------------------------------------------------------- what still loads


def test_files_outside_the_layout_are_never_read(pristine, tmp_path):
    """A large member the layout does not name (here 64 MiB of zeros) is skipped unread, and
    the model loads."""
    big = _add("top/blob.bin", b"\x00" * (MAX_PREPROCESSOR_BYTES + 1))
    model = finetuner.get_model(_zip(pristine, tmp_path / "artifact.zip", big))
    assert model.embedding_size == 3
    (records,), _ = load_model_records(pristine)
    assert set(records.files) == {"vocab.txt"}


def test_the_pristine_artifact_loads_from_its_folder_and_its_zip(pristine, tmp_path):
    for path in (pristine, _zip(pristine, tmp_path / "artifact.zip")):
        model = finetuner.get_model(path)
        assert finetuner.encode(model, torch.zeros(2, INPUT)).shape == (2, 3)


def test_a_missing_artifact_and_a_text_file(tmp_path, capsys):
    with pytest.raises(ArtifactError, match="no artifact at"):
        finetuner.get_model(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ArtifactError, match=r"notes\.txt' is neither an artifact folder"):
        finetuner.get_model(tmp_path / "notes.txt")


def test_an_artifact_path_that_is_a_symlink_is_refused(pristine, tmp_path):
    (tmp_path / "link").symlink_to(pristine)
    with pytest.raises(ArtifactError, match="is a symbolic link"):
        finetuner.get_model(tmp_path / "link")


# --------------------------------------------------------------------------- save_artifact


def _finished_run(tmp_path: Path):
    run = create_run({"model": "mlp"}, run_name="r1", runs_dir=tmp_path / "runs")
    write_tiny_artifact(run.artifact_dir)
    writer = RunWriter(run)
    writer.set_status("STARTED")
    writer.set_status("FINISHED")
    return run


def test_save_artifact_refuses_a_symlink_inside_the_artifact(tmp_path):
    run = _finished_run(tmp_path)
    (run.artifact_dir / "notes.txt").symlink_to("/etc/passwd")
    with pytest.raises(ArtifactError, match=r"notes\.txt is a symbolic link"):
        run.save_artifact(tmp_path / "out")
    assert not (tmp_path / "out" / "r1.zip").exists()


def test_save_artifact_zips_a_plain_artifact_that_loads(tmp_path):
    run = _finished_run(tmp_path)
    path = run.save_artifact(tmp_path / "out")
    assert finetuner.get_model(path).embedding_size == 3
