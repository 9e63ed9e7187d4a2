"""Shared by the tests of the core (tests/) and of every plugin (plugins/*/tests)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_run_store(tmp_path, monkeypatch):
    """Every test gets its own run store, and plugin switches from the outer shell are cleared."""
    monkeypatch.setenv("FINETUNER_RUNS_DIR", str(tmp_path / "finetuner-runs"))
    monkeypatch.setenv("FINETUNER_DATA_DIR", str(tmp_path / "finetuner-data"))
    monkeypatch.delenv("FINETUNER_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("FINETUNER_DISABLE_PLUGIN_AUTOLOAD", raising=False)
