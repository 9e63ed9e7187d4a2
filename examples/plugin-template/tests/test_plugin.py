from __future__ import annotations

import pytest

from finetuner.errors import ConfigError
from finetuner.testing import make_tiny_data, run_recorded_fit
from finetuner_plugin_template import TemplateCallback


def test_hooks_fire_and_the_log_has_a_line_per_epoch(tmp_path):
    callback = TemplateCallback(monitor="train_loss")
    result = run_recorded_fit(tmp_path, callbacks=[callback], epochs=2)
    assert (
        callback.calls[0] == "finetuner_on_fit_begin"
        and callback.calls[-1] == "finetuner_on_fit_end"
    )
    assert result.recorder.calls_to("TemplateCallback").count("finetuner_on_metrics") == 4
    log = result.run.log_path.read_text()
    assert "template: epoch 1 train_loss=" in log and "template: epoch 2 train_loss=" in log
    assert callback.best is not None


def test_monitoring_val_loss_needs_eval_data(tmp_path):
    with pytest.raises(ConfigError, match="TemplateCallback monitors 'val_loss'"):
        run_recorded_fit(tmp_path, callbacks=[TemplateCallback(monitor="val_loss")])
    run_recorded_fit(
        tmp_path / "ok",
        callbacks=[TemplateCallback(monitor="val_loss")],
        eval_data=make_tiny_data(seed=1),
    )


def test_bad_monitor():
    with pytest.raises(ConfigError, match="monitor must be a metric key"):
        TemplateCallback(monitor="")
