"""The plugin template, copied and renamed as a user would, installs and works."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).parent.parent / "examples" / "plugin-template"
RENAMES = [
    ("finetuner-plugin-template", "finetuner-acme-probe"),
    ("finetuner_plugin_template", "finetuner_acme_probe"),
    ("TemplateCallback", "AcmeProbe"),
    ("template-callback", "acme-probe"),
    ("template-always", "acme-always"),
    ("template-hello", "acme-hello"),
    ("template:", "acme:"),
]


def _copy_and_rename(target: Path) -> Path:
    shutil.copytree(TEMPLATE, target, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for path in sorted(target.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            for old, new in RENAMES:
                text = text.replace(old, new)
            path.write_text(text, encoding="utf-8")
        name = path.name
        for old, new in RENAMES:
            name = name.replace(old, new)
        if name != path.name:
            path.rename(path.with_name(name))
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The renamed template, pip-installed into a separate folder put on PYTHONPATH."""
    root = tmp_path_factory.mktemp("template")
    source = _copy_and_rename(root / "acme-probe")
    site = root / "site"
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--target",
        str(site),
        str(source),
    ]
    if importlib.util.find_spec("setuptools") is not None:
        command.insert(5, "--no-build-isolation")  # build offline with the setuptools at hand
    subprocess.run(command, check=True, timeout=300)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
    }
    return source, site, env


def test_the_copy_has_no_template_names_left(installed):
    source, _, _ = installed
    for path in source.rglob("*"):
        assert "template" not in path.name
        if path.is_file():
            assert "plugin_template" not in path.read_text(encoding="utf-8")


def test_finetuner_plugins_lists_it(installed):
    _, _, env = installed
    out = subprocess.run(
        [sys.executable, "-m", "finetuner", "plugins", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert rows["acme-probe"]["distribution"] == "finetuner-acme-probe"
    assert rows["acme-probe"]["hooks"] == [
        "finetuner_on_fit_begin",
        "finetuner_on_metrics",
        "finetuner_on_fit_end",
    ]
    assert rows["acme-always"]["kind"] == "always-on" and rows["acme-always"]["status"] == "ok"


def test_a_fit_fires_its_hooks(installed, tmp_path):
    _, _, env = installed
    script = textwrap.dedent(
        f"""
        import finetuner
        from finetuner.testing import make_tiny_data
        probe = finetuner.callback.AcmeProbe(monitor="train_loss")
        run = finetuner.fit("mlp", make_tiny_data(), epochs=2, seed=0, runs_dir={str(tmp_path)!r}, callbacks=[probe])
        print(",".join(probe.calls))
        print(run.log_path)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    calls, log_path = out.stdout.strip().splitlines()[-2:]
    assert (
        calls.split(",")[0] == "finetuner_on_fit_begin"
        and calls.split(",")[-1] == "finetuner_on_fit_end"
    )
    log = Path(log_path).read_text()
    assert "acme: epoch 2 train_loss=" in log
    assert "acme-always: run " in log


def test_its_own_command_and_tests(installed):
    source, _, env = installed
    out = subprocess.run(
        [sys.executable, "-m", "finetuner", "acme-hello"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0 and out.stdout.strip() == "hello from the plugin template"
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(source / "tests")],
        capture_output=True,
        text=True,
        env=env,
        cwd=source,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "3 passed" in tests.stdout
