"""The documentation stays complete and its examples run.

The site itself is built by the ``docs`` tox environment (warnings are errors); these tests
check what a build cannot: every hook and public name is documented, every first-party
callback option is on the callbacks page, and every Python example runs as written.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from pathlib import Path

import pytest

import finetuner
from finetuner.plugins import discover, first_party_callbacks, hook_names

DOCS = Path(__file__).parent.parent / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts and p.name != "README.md")


def _first_party_names() -> list[str]:
    """The class names of every first-party callback, from the core's catalog."""
    return sorted(callback.class_name for callback in first_party_callbacks())


def _text(relative: str) -> str:
    return (DOCS / relative).read_text(encoding="utf-8")


def test_every_hook_is_in_the_hook_reference():
    reference = _text("plugin-authors/hooks.md")
    for name in hook_names():
        assert f"finetuner.hookspecs.{name}" in reference, (
            f"{name} is missing from the hook reference"
        )


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
    try:
        for index, block in enumerate(_examples(page)):
            code = compile(
                block, f"{page.relative_to(DOCS)} (example {index + 1})", "exec", dont_inherit=True
            )
            exec(code, namespace)
    finally:
        # W&B keeps its settings for the whole process; let later tests start from scratch.
        wandb = sys.modules.get("wandb")
        if wandb is not None:
            wandb.teardown()
