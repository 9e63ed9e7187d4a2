"""The documentation stays complete and its examples run.

The site itself is built by the ``plugins`` tox environment (warnings are errors); these tests
check what a build cannot: every hook, event field, testing helper and public name is
documented in the Markdown itself, every first-party callback option is on the callbacks page,
every page gives the same build command, and every Python example runs as written.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

import finetuner
import finetuner.callback
from finetuner import events
from finetuner.errors import DataWarning
from finetuner.plugins import discover, first_party_callbacks, hook_names

DOCS = Path(__file__).parent.parent / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts and p.name != "README.md")


def _first_party_names() -> list[str]:
    """The class names of every first-party callback, from the core's catalog."""
    return sorted(callback.class_name for callback in first_party_callbacks())


def _text(relative: str) -> str:
    return (DOCS / relative).read_text(encoding="utf-8")


# --- the reference pages, read as Markdown (what a plugin author reads in the repository too)


def _fences(relative: str) -> list[Any]:
    markdown_it = pytest.importorskip("markdown_it")
    tokens = markdown_it.MarkdownIt("commonmark").parse(_text(relative))
    return [token for token in tokens if token.type == "fence"]


def _documented(relative: str, module: str) -> dict[str, str]:
    """The Python objects a page documents in Markdown (MyST ``{py:function}``, ``{py:class}``
    and ``{py:data}`` directives with ``:module: MODULE``): name -> the directive's body."""
    found: dict[str, str] = {}
    for fence in _fences(relative):
        directive, _, argument = fence.info.strip().partition(" ")
        if directive not in ("{py:function}", "{py:class}", "{py:data}"):
            continue
        lines = fence.content.splitlines()
        options = list(itertools.takewhile(lambda line: line.startswith(":"), lines))
        if f":module: {module}" in options:
            found[argument.split("(")[0].strip()] = "\n".join(lines[len(options) :])
    return found


def _table_names(body: str) -> set[str]:
    """The names in the first column of the tables of *body* (Markdown), code-formatted."""
    markdown_it = pytest.importorskip("markdown_it")
    tokens = markdown_it.MarkdownIt("commonmark").enable("table").parse(body)
    names: set[str] = set()
    first_cell = False
    for token in tokens:
        if token.type == "tr_open":
            first_cell = True
        elif token.type == "inline" and first_cell:
            first_cell = False
            names.update(
                child.content.split("(")[0]
                for child in token.children
                if child.type == "code_inline"
            )
    return names


def test_every_hook_is_in_the_hook_reference():
    documented = _documented("plugin-authors/hooks.md", "finetuner.hookspecs")
    assert list(documented) == hook_names(), (
        "the hook reference must document every hook of finetuner.hookspecs, in their order"
    )
    glance = _text("plugin-authors/hooks.md").split("## Hooks at a glance")[1].split("\n## ")[0]
    for name in hook_names():
        assert f"finetuner.hookspecs.{name}`" in glance, f"{name} is not in 'Hooks at a glance'"


def _event_classes() -> list[type]:
    return [
        getattr(events, name)
        for name in events.__all__
        if dataclasses.is_dataclass(getattr(events, name))
    ]


@pytest.mark.parametrize("event", _event_classes(), ids=lambda cls: cls.__name__)
def test_every_event_field_is_in_the_hook_reference(event):
    documented = _documented("plugin-authors/hooks.md", "finetuner.events")
    assert event.__name__ in documented, f"{event.__name__} is missing from the hook reference"
    fields = {field.name for field in dataclasses.fields(event)}
    listed = _table_names(documented[event.__name__])
    assert fields - listed == set(), f"{event.__name__}: fields missing from its table"
    assert listed - fields == set(), f"{event.__name__}: its table lists fields it does not have"


def _testing_helpers() -> dict[str, Any]:
    import finetuner.testing as testing

    fixtures = {
        name: value
        for name, value in vars(testing).items()
        if hasattr(value, "_fixture_function_marker") or hasattr(value, "_pytestfixturefunction")
    }
    return {**{name: getattr(testing, name) for name in testing.__all__}, **fixtures}


def _options(helper: Any) -> set[str]:
    """What a testing helper's documentation must list: its parameters and, for classes, their
    public methods and fields (a callback's hooks are not for tests to call)."""
    if hasattr(helper, "_fixture_function"):  # a fixture: the function it returns takes options
        return {"options"} if "finetuner_fit" in repr(helper) else set()
    if not callable(helper):
        return set()
    names = set(inspect.signature(helper).parameters) - {"self"}
    if inspect.isclass(helper) and not issubclass(helper, finetuner.callback.Callback):
        names |= {n for n, v in vars(helper).items() if callable(v) and not n.startswith("_")}
        if dataclasses.is_dataclass(helper):
            names |= {field.name for field in dataclasses.fields(helper)}
    return names


@pytest.mark.parametrize("name", sorted(_testing_helpers()))
def test_every_testing_helper_and_its_options_are_in_the_api_reference(name):
    documented = _documented("api.md", "finetuner.testing")
    assert name in documented, f"finetuner.testing.{name} is missing from api.md"
    missing = _options(_testing_helpers()[name]) - _table_names(documented[name])
    assert missing == set(), f"finetuner.testing.{name}: options missing from api.md's table"


def test_the_testing_helpers_import_without_pytest():
    """The docs' examples use them, and the docs build imports them, where pytest may not be."""
    code = (
        "import sys; sys.modules['pytest'] = None\n"
        "import finetuner.testing as testing\n"
        "assert len(testing.make_tiny_data()) == 40 and callable(testing.tiny_text_model_options)\n"
        "assert not hasattr(testing, 'finetuner_fit')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _build_commands(path: Path) -> list[str]:
    markdown_it = pytest.importorskip("markdown_it")
    tokens = markdown_it.MarkdownIt("commonmark").parse(path.read_text(encoding="utf-8"))
    return [t.content for t in tokens if t.type == "fence" and "sphinx-build" in t.content]


def test_every_page_gives_the_same_docs_build_command():
    root = DOCS.parent
    pages = [root / "README.md", DOCS / "README.md", DOCS / "installation.md"]
    commands = {str(page.relative_to(root)): _build_commands(page) for page in pages}
    assert all(len(found) == 1 for found in commands.values()), commands
    assert len({found[0] for found in commands.values()}) == 1, commands
    (command,) = commands["README.md"]
    assert command.splitlines() == [
        "pip install -r requirements.txt -r docs/requirements.txt",
        "sphinx-build -W --keep-going -b html docs docs/_build/html",
    ]
    assert command.splitlines()[1] in (DOCS / "conf.py").read_text(encoding="utf-8")


def test_every_public_name_is_in_the_api_reference():
    api = _text("api.md")
    for name in finetuner.__all__:
        if name.startswith("__"):
            continue
        assert re.search(rf"\b{re.escape(name)}\b", api), f"finetuner.{name} is missing from api.md"


@pytest.mark.parametrize("name", _first_party_names())
def test_every_callback_option_is_on_the_callbacks_page(name):
    installed = {info.class_name: info for info in discover().callbacks}
    if name not in installed:
        if os.environ.get("FINETUNER_REQUIRE_PLUGINS") == "1":
            pytest.fail(f"{name} is not installed")
        pytest.skip(f"{name} is not installed here")
    page = _text("concepts/callbacks.md")
    assert name in page
    options = [
        p for p in inspect.signature(getattr(finetuner.callback, name)).parameters if p != "self"
    ]
    for option in options:
        assert f"`{option}`" in page, (
            f"{name}({option}=...) is not documented on the callbacks page"
        )


def _examples(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)


PAGES_WITH_EXAMPLES = [p for p in PAGES if _examples(p)]


def test_there_are_examples():
    assert len(PAGES_WITH_EXAMPLES) >= 5


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES, ids=lambda p: str(p.relative_to(DOCS)))
def test_page_examples_run(page, tmp_path, monkeypatch):
    missing = set(_first_party_names()) - {info.class_name for info in discover().callbacks}
    if missing:
        if os.environ.get("FINETUNER_REQUIRE_PLUGINS") == "1":
            pytest.fail(f"plugins missing: {sorted(missing)}")
        pytest.skip("the documentation examples use every first-party plugin")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    namespace: dict = {"__name__": "__docs__"}
    # A data warning in an example is one every reader of the page would see: the example
    # should be written so that it does not need one.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataWarning)
            for index, block in enumerate(_examples(page)):
                name = f"{page.relative_to(DOCS)} (example {index + 1})"
                exec(compile(block, name, "exec", dont_inherit=True), namespace)
    finally:
        # W&B keeps its settings for the whole process; let later tests start from scratch.
        wandb = sys.modules.get("wandb")
        if wandb is not None:
            wandb.teardown()
