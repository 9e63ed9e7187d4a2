"""The command line starts fast: light commands, plugins' commands imported only when they run,
and a plugin listing that fits an 80-column terminal.

Plugins here are small distributions written into a temporary folder on ``PYTHONPATH`` (a
``.dist-info`` folder with real entry points beside the module), run in a fresh interpreter.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from finetuner.cli import build_parser
from finetuner.cli.listing import format_plugin_rows

HEAVY = ("torch", "transformers")


def _write_distribution(
    site: Path, name: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str]
) -> None:
    """A distribution as pip leaves it: modules, and metadata with *entry_points*."""
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\nSummary: Commands of {name}.\n",
        encoding="utf-8",
    )
    (info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()) + "\n"
            for group, entries in entry_points.items()
        ),
        encoding="utf-8",
    )
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")


ADD_HELLO = """
    import sys

    def _hello(args):
        print("{text}", "{module}" in sys.modules)
        return 0

    def finetuner_add_commands(subparsers):
        parser = subparsers.add_parser("{command}", help="says hello")
        parser.set_defaults(handler=_hello)
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Three test distributions: a declared command, one added by an always-on plugin that
    does not declare it, and a declared command whose module is broken."""
    site = tmp_path_factory.mktemp("site")
    _write_distribution(
        site,
        "acme-declared",
        {"finetuner.commands": {"acme-hello": "acme_declared_cmd"}},
        {
            "acme_declared_cmd": ADD_HELLO.format(
                text="declared", module="acme_declared_cmd", command="acme-hello"
            )
        },
    )
    _write_distribution(
        site,
        "acme-undeclared",
        {"finetuner.plugins": {"acme-always": "acme_undeclared_cmd"}},
        {
            "acme_undeclared_cmd": ADD_HELLO.format(
                text="undeclared", module="acme_declared_cmd", command="acme-old"
            )
        },
    )
    _write_distribution(
        site,
        "acme-broken",
        {"finetuner.commands": {"acme-broken": "acme_broken_cmd"}},
        {"acme_broken_cmd": "raise ImportError('acme: deliberately broken')\n"},
    )
    return site


def _run(site: Path | None, *code_or_args: str, env: dict[str, str] | None = None):
    """Run ``finetuner.cli.main(args)`` in a fresh interpreter; print what it imported."""
    script = (
        "import json, sys\nfrom finetuner.cli import main\n"
        "try:\n    code = main(sys.argv[1:])\nexcept SystemExit as exc:\n    code = exc.code\n"
        "sys.stdout.flush()\n"
        "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}), file=sys.stderr)\n"
    )
    full_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FINETUNER_DISABLE_PLUGINS", "FINETUNER_DISABLE_PLUGIN_AUTOLOAD")
    }
    full_env.update({"COLUMNS": "80", **(env or {})})
    if site is not None:
        full_env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(site), os.environ.get("PYTHONPATH")])
        )
    proc = subprocess.run(
        [sys.executable, "-c", script, *code_or_args],
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
    )
    *errors, last = proc.stderr.strip().splitlines()
    result = json.loads(last)
    return result["code"], proc.stdout, "\n".join(errors), set(result["modules"])


@pytest.mark.parametrize("args", [["--help"], ["plugins"], ["plugins", "--verbose"], ["runs"]])
def test_light_commands_import_neither_torch_nor_transformers(args, tmp_path):
    code, out, err, modules = _run(None, *args, env={"FINETUNER_RUNS_DIR": str(tmp_path)})
    assert code == 0, err
    assert out
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_help_lists_declared_commands_without_importing_them(site):
    code, out, err, modules = _run(site, "--help")
    assert code == 0, err
    assert "acme-hello" in out and "Commands of acme-declared (acme-declared)" in out
    assert "acme-broken" in out  # listed from metadata: its breakage shows only when run
    assert "acme-old" not in out  # undeclared commands are not listed
    assert not {"acme_declared_cmd", "acme_broken_cmd", "acme_undeclared_cmd"} & modules
    if importlib.util.find_spec("finetuner_evaluation") is not None:
        assert "evaluate" in out and "finetuner_evaluation" not in modules


def test_running_a_declared_command_imports_only_its_module(site):
    code, out, err, modules = _run(site, "acme-hello")
    assert (code, out.strip()) == (0, "declared True"), err
    assert "acme_broken_cmd" not in modules and "acme_undeclared_cmd" not in modules
    assert "finetuner_evaluation._cli" not in modules
    assert not set(HEAVY) & modules


def test_an_undeclared_command_still_runs(site):
    code, out, err, modules = _run(site, "acme-old")
    assert (code, out.strip()) == (0, "undeclared True"), err  # every plugin was loaded
    assert "acme_undeclared_cmd" in modules


def test_a_broken_declared_command_is_a_clear_error(site):
    code, out, err, _ = _run(site, "acme-broken")
    assert code == 1 and out == ""
    assert (
        "error: the command 'acme-broken' of acme-broken failed to load: ImportError: acme:" in err
    )
    # Other commands do not suffer from it.
    assert _run(site, "acme-hello")[0] == 0


def test_a_blocked_command_is_gone(site):
    for blocked in ("acme-hello", "acme-always"):
        env = {"FINETUNER_DISABLE_PLUGINS": blocked}
        _, out, _, _ = _run(site, "--help", env=env)
        assert ("acme-hello" in out) is (blocked != "acme-hello")
    code, _, err, _ = _run(site, "acme-hello", env={"FINETUNER_DISABLE_PLUGINS": "acme-hello"})
    assert code == 2 and "invalid choice: 'acme-hello'" in err
    code, _, err, _ = _run(site, "acme-old", env={"FINETUNER_DISABLE_PLUGINS": "acme-always"})
    assert code == 2 and "invalid choice: 'acme-old'" in err


def test_build_parser_without_a_command_imports_no_plugin():
    parser = build_parser()
    text = parser.format_help()
    for command in ("fit", "resume", "demo", "plugins", "runs", "models", "data"):
        assert f"    {command} " in text


# --- finetuner plugins in 80 columns ----------------------------------------------------------


def _row(name, kind="callback", dist="finetuner-acme", version="0.1.0", status="ok", error=None):
    return {
        "name": name,
        "kind": kind,
        "object": f"{name.replace('-', '_')}:Thing",
        "distribution": dist,
        "version": version,
        "hooks": [] if error else ["finetuner_on_fit_begin", "finetuner_on_metrics"],
        "status": status,
        "error": error,
    }


ROWS = [
    _row("early-stopping", dist="finetuner-early-stopping"),
    _row("a-callback-with-a-rather-long-entry-point-name", dist="finetuner-long-names-everywhere"),
    _row(
        "gradnorm",
        kind="always-on",
        dist=None,
        version=None,
        status="broken",
        error="ImportError: " + "a long import error message " * 6,
    ),
    _row("console", kind="always-on", dist="finetuner", status="disabled"),
]


@pytest.mark.parametrize("verbose", [False, True])
def test_the_listing_fits_80_columns(verbose):
    lines = format_plugin_rows(ROWS, width=80, verbose=verbose)
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    plugin_lines = [line for line in lines if not line.startswith(" ")]
    assert plugin_lines[0].split() == ["name", "kind", "distribution", "status"]
    assert len(plugin_lines) == len(ROWS) + 1  # one line per plugin, under the header
    assert plugin_lines[1].split() == [
        "early-stopping",
        "callback",
        "finetuner-early-stopping",
        "0.1.0",
        "ok",
    ]
    assert plugin_lines[2].startswith("a-callback-with-a-r…  callback")  # cut, names last
    assert plugin_lines[3].split() == ["gradnorm", "always-on", "-", "broken"]
    assert plugin_lines[4].split()[-1] == "disabled"
    # The broken plugin's error follows on indented lines, nothing else does unless verbose.
    error_at = lines.index(plugin_lines[3]) + 1
    assert lines[error_at].startswith("    ImportError: a long import error")
    details = [line for line in lines if line.startswith("    hooks: ")]
    assert len(details) == (3 if verbose else 0)
    assert all(line.strip() != "hooks: (none)" for line in details)
    assert any("entry point: early_stopping:Thing" in line for line in lines) is verbose


def test_finetuner_plugins_in_an_80_column_terminal():
    code, out, err, _ = _run(None, "plugins")
    assert code == 0, err
    lines = out.splitlines()
    assert lines and all(len(line) <= 80 for line in lines)
    assert lines[0].split() == ["name", "kind", "distribution", "status"]
    _, listed, _, _ = _run(None, "plugins", "--json")
    rows = json.loads(listed)
    names = [line.split()[0] for line in lines[1:] if not line.startswith(" ")]
    assert names == [row["name"] for row in rows]
    for row in rows:
        line = next(line for line in lines[1:] if line.split()[0] == row["name"])
        assert line.split()[-1] == row["status"]
        assert "hooks" not in out
