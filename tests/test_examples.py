"""The example config files load and validate."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetuner.config_file import load_fit_config

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.yml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_validates(path):
    config = load_fit_config(path)
    assert config.epochs >= 1


def test_there_are_examples():
    assert EXAMPLES
