"""Import paths of the old flat layout keep working: each is the module that replaced it."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from finetuner import _compat


@pytest.mark.parametrize(("old", "new"), sorted(_compat.MOVED.items()))
def test_an_old_module_name_is_the_new_module(old, new):
    module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__name__ == new and module.__spec__.name == new  # it still says where it lives


@pytest.mark.parametrize(("old", "new"), sorted(_compat.MOVED_PACKAGES.items()))
def test_an_old_package_moves_with_its_submodules(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)
    assert importlib.import_module(f"{old}.text") is importlib.import_module(f"{new}.text")


def test_what_users_and_plugins_imported_still_imports():
    import finetuner
    from finetuner.checkpoint import prune
    from finetuner.config.file import load_fit_config as new_load_fit_config
    from finetuner.config_file import load_fit_config
    from finetuner.console import ConsoleReporter
    from finetuner.inference import get_model
    from finetuner.models.inference import get_model as new_get_model
    from finetuner.monitoring import MetricMonitor
    from finetuner.plugins.console import ConsoleReporter as NewConsoleReporter
    from finetuner.plugins.kit import MetricMonitor as KitMonitor
    from finetuner.runs.checkpoints import prune as new_prune
    from finetuner.trainer import Trainer
    from finetuner.training import Trainer as NewTrainer

    assert finetuner.monitoring.MetricMonitor is MetricMonitor is KitMonitor
    assert (prune, load_fit_config, ConsoleReporter, get_model, Trainer) == (
        new_prune,
        new_load_fit_config,
        NewConsoleReporter,
        new_get_model,
        NewTrainer,
    )


def test_an_old_name_is_loaded_once_under_one_module():
    """Importing the old name first must not load the module a second time as a copy."""
    code = (
        "import sys; import finetuner.backbones.text as old; "
        "import finetuner.models.backbones.text as new; "
        "print(old is new, len({id(m) for m in sys.modules.values() "
        "if getattr(m, '__file__', '') == new.__file__}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "1"]


def test_names_that_did_not_move_are_left_alone():
    assert _compat.new_name("finetuner.events") is None
    assert _compat.new_name("finetuner.backbonesx") is None
    assert _compat.new_name("finetuner.backbones.clip") == "finetuner.models.backbones.clip"
