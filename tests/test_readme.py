"""The README's Python examples run as written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import finetuner

README = Path(__file__).parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.slow  # the MiniLM example: runs where the offline model is installed (plugins)
def test_readme_examples_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in BLOCKS:
        try:
            exec(compile(block, str(README), "exec", dont_inherit=True), namespace)
        except finetuner.PluginError as exc:
            if os.environ.get("FINETUNER_REQUIRE_PLUGINS") == "1":
                raise
            pytest.skip(f"an example needs a first-party plugin that is not installed: {exc}")
    assert namespace["run"].status()["status"] == "FINISHED"
