from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from safetensors.torch import load_file

import finetuner
from finetuner.checkpoint import list_checkpoints, load_checkpoint
from finetuner.cli import main
from finetuner.errors import ConfigError, RunError, RunNotFoundError
from finetuner.runs import RunWriter
from finetuner.testing import make_tiny_data
from finetuner_training_checkpoint import TrainingCheckpoint

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import finetuner
    from finetuner.callback import Callback
    from finetuner.testing import make_tiny_data

    runs_dir, run_name, mode = sys.argv[1], sys.argv[2], sys.argv[3]

    class KillDuringSecondEpoch(Callback):
        def finetuner_on_train_batch_end(self, event):
            if event.epoch == 1 and event.batch_index == 2:
                os.kill(os.getpid(), signal.SIGKILL)  # no warning, no cleanup

    callbacks = [
        finetuner.callback.TrainingCheckpoint(last_k_epochs=2),
        finetuner.callback.BestModelCheckpoint(monitor="val_loss"),
    ]
    if mode == "kill":
        callbacks.append(KillDuringSecondEpoch())
    finetuner.fit(
        "mlp",
        make_tiny_data(num_classes=4, per_class=24),
        eval_data=make_tiny_data(seed=3),
        model_options={"hidden_sizes": [32, 16]},
        loss="SupConLoss",
        learning_rate=0.01,
        scheduler="linear",
        epochs=4,
        batch_size=16,
        seed=11,
        runs_dir=runs_dir,
        run_name=run_name,
        callbacks=callbacks,
        resume=run_name if mode == "resume" else None,
    )
    """
)


def _train(tmp_path, run_name, mode, source=SCRIPT):
    script = tmp_path / "train.py"
    script.write_text(source)
    env = {**os.environ, "FINETUNER_DISABLE_PLUGINS": "console"}
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path / "runs"), run_name, mode],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.mark.slow
def test_resume_after_sigkill_gives_bitwise_identical_weights(tmp_path):
    killed = _train(tmp_path, "victim", "kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    victim = finetuner.get_run("victim", runs_dir=tmp_path / "runs")
    assert victim.status()["status"] == "STARTED"  # killed without warning: nothing updated it
    assert [c.epoch for c in list_checkpoints(victim.checkpoint_dir)] == [0]

    resumed = _train(tmp_path, "victim", "resume")
    assert resumed.returncode == 0, resumed.stderr
    reference = _train(tmp_path, "reference", "plain")
    assert reference.returncode == 0, reference.stderr

    victim = finetuner.get_run("victim", runs_dir=tmp_path / "runs")
    ref = finetuner.get_run("reference", runs_dir=tmp_path / "runs")
    assert victim.status()["status"] == "FINISHED"
    assert victim.status()["resumed_from_epoch"] == 0
    a = load_file(victim.artifact_path / "models" / "model" / "model.safetensors")
    b = load_file(ref.artifact_path / "models" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].equal(b[key]), key  # bitwise, not approximately
    assert victim.metrics() == ref.metrics()
    epochs = [r["epoch"] for r in victim.metric_history() if r["stage"] == "epoch"]
    assert epochs == [0, 1, 2, 3]  # the epoch cut short by the kill is recorded once
    assert [c.epoch for c in list_checkpoints(victim.checkpoint_dir)] == [2, 3]


STEP_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    import finetuner
    from finetuner.callback import Callback
    from finetuner.testing import make_tiny_data

    runs_dir, run_name, mode = sys.argv[1], sys.argv[2], sys.argv[3]

    class KillWithinTheSecondEpoch(Callback):
        def finetuner_on_train_batch_end(self, event):
            if event.epoch == 1 and event.batch_index == 7:
                os.kill(os.getpid(), signal.SIGKILL)

    class Net(torch.nn.Sequential):  # dropout: the random streams must resume exactly
        def __init__(self):
            super().__init__(
                torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                torch.nn.Linear(32, 16),
            )

    torch.manual_seed(5)
    callbacks = [
        finetuner.callback.TrainingCheckpoint(last_k_epochs=3, every_n_steps=2),
        finetuner.callback.BestModelCheckpoint(monitor="val_loss"),
    ]
    if mode == "kill":
        callbacks.append(KillWithinTheSecondEpoch())
    finetuner.fit(
        Net(),
        make_tiny_data(num_classes=4, per_class=24),
        eval_data=make_tiny_data(seed=3),
        loss="SupConLoss",
        learning_rate=0.01,
        scheduler="linear",
        epochs=3,
        batch_size=8,
        accumulate_grad_batches=2,
        seed=11,
        runs_dir=runs_dir,
        run_name=run_name,
        callbacks=callbacks,
        resume=run_name if mode == "resume" else None,
    )
    """
)


@pytest.mark.slow
def test_resume_from_a_step_checkpoint_after_sigkill_is_bitwise_identical(tmp_path):
    # 96 items in batches of 8, two batches per optimizer step: 6 steps an epoch. The kill
    # comes in the hooks of epoch 1, batch 7, which ends step 10, before its checkpoint is
    # written; the newest checkpoint is the one after step 8, with half of epoch 1 to go.
    killed = _train(tmp_path, "victim", "kill", STEP_SCRIPT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    victim = finetuner.get_run("victim", runs_dir=tmp_path / "runs")
    assert [c.path.name for c in list_checkpoints(victim.checkpoint_dir)] == [
        "epoch-0000-step-00000006",  # the last step of epoch 0, then its end
        "epoch-0000",
        "epoch-0001-step-00000008",
    ]

    resumed = _train(tmp_path, "victim", "resume", STEP_SCRIPT)
    assert resumed.returncode == 0, resumed.stderr
    reference = _train(tmp_path, "reference", "plain", STEP_SCRIPT)
    assert reference.returncode == 0, reference.stderr

    victim = finetuner.get_run("victim", runs_dir=tmp_path / "runs")
    ref = finetuner.get_run("reference", runs_dir=tmp_path / "runs")
    a = load_file(victim.artifact_path / "models" / "model" / "model.safetensors")
    b = load_file(ref.artifact_path / "models" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].equal(b[key]), key  # bitwise, not approximately
    assert victim.metrics() == ref.metrics()
    assert [r["epoch"] for r in victim.metric_history() if r["stage"] == "epoch"] == [0, 1, 2]
    steps, ref_steps = victim.step_history(), ref.step_history()
    assert [r["step"] for r in steps] == list(range(1, 19))  # each step recorded once
    assert [r["loss"] for r in steps] == [r["loss"] for r in ref_steps]
    assert "checkpoint saved" in victim.log_path.read_text()


WRITER = textwrap.dedent(
    """
    import sys, torch
    from finetuner.checkpoint import write_checkpoint
    folder = sys.argv[1]
    epoch = 0
    print("ready", flush=True)
    while True:
        write_checkpoint(folder, epoch, {"step": epoch, "big": torch.full((4_000_000,), float(epoch))})
        epoch += 1
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.3, 0.5, 0.8, 1.1])
def test_a_kill_during_a_write_never_leaves_a_half_written_checkpoint(tmp_path, delay):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    folder = tmp_path / "checkpoints"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(delay)  # the writer is somewhere inside its loop of checkpoint writes
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    complete = list_checkpoints(folder)
    assert complete, "no checkpoint finished before the kill; the test proved nothing"
    for checkpoint in complete:
        state = load_checkpoint(checkpoint)  # every listed checkpoint loads whole
        assert state["step"] == checkpoint.epoch
        assert state["big"].shape == (4_000_000,) and state["big"][-1].item() == checkpoint.epoch


def _fit(tmp_path, **options):
    defaults = dict(
        model="mlp",
        train_data=make_tiny_data(),
        epochs=2,
        batch_size=8,
        seed=0,
        runs_dir=tmp_path,
        callbacks=[TrainingCheckpoint()],
    )
    defaults.update(options)
    return finetuner.fit(**defaults)


def test_keeps_the_last_k_checkpoints(tmp_path):
    run = _fit(tmp_path, epochs=4, callbacks=[TrainingCheckpoint(last_k_epochs=2)])
    assert [c.epoch for c in list_checkpoints(run.checkpoint_dir)] == [2, 3]
    state = load_checkpoint(list_checkpoints(run.checkpoint_dir)[-1])
    assert {"models", "optimizer", "scheduler", "rng", "plugins", "step", "epoch"} <= set(state)
    assert "TrainingCheckpoint" in state["plugins"]


def test_resume_a_run_that_does_not_exist(tmp_path):
    with pytest.raises(RunNotFoundError, match="ghost"):
        _fit(tmp_path, resume="ghost")


def test_resume_a_run_without_checkpoint(tmp_path):
    run = _fit(tmp_path, callbacks=[], run_name="plain")
    RunWriter(run).set_status("FAILED", reason="simulated")
    with pytest.raises(
        RunError, match=r"run 'plain' has no checkpoint to resume from.*TrainingCheckpoint"
    ):
        _fit(tmp_path, resume="plain")


def test_resume_a_finished_run(tmp_path):
    _fit(tmp_path, run_name="done")
    with pytest.raises(RunError, match="already finished"):
        _fit(tmp_path, resume="done")


def test_resume_with_a_different_model(tmp_path):
    run = _fit(tmp_path, run_name="small", model_options={"hidden_sizes": [8]})
    RunWriter(run).set_status("FAILED", reason="simulated")
    with pytest.raises(  # the recorded options name the change before the weights' shapes do
        ConfigError,
        match=r"different options \(model_options: \{'hidden_sizes': \[8\], .* -> \{'hidden_sizes': \[12\]",
    ):
        _fit(tmp_path, resume="small", model_options={"hidden_sizes": [12]})


def test_resume_with_different_options(tmp_path):
    run = _fit(tmp_path, run_name="opts")
    RunWriter(run).set_status("FAILED", reason="simulated")
    with pytest.raises(
        ConfigError, match=r"different options \(loss: 'TripletMarginLoss' -> 'SupConLoss'\)"
    ):
        _fit(tmp_path, resume="opts", loss="SupConLoss")


def test_bad_last_k_epochs():
    for value in (0, -1, 1.5, "2"):
        with pytest.raises(ConfigError, match="last_k_epochs must be a positive integer"):
            TrainingCheckpoint(last_k_epochs=value)


def test_bad_every_n_steps():
    for value in (0, -3, 2.5, "10", True):
        with pytest.raises(ConfigError, match="every_n_steps must be a positive integer"):
            TrainingCheckpoint(every_n_steps=value)


def test_cli_resume_of_a_config_file_run(tmp_path, capsys):
    config = tmp_path / "fit.yml"
    config.write_text(
        "model: mlp\ntrain_data: digits-train\nepochs: 2\nbatch_size: 256\nseed: 1\n"
        "callbacks:\n  - name: training-checkpoint\n"
    )
    runs = str(tmp_path / "runs")
    assert main(["fit", str(config), "--run-name", "cli-run", "--runs-dir", runs]) == 0
    run = finetuner.get_run("cli-run", runs_dir=runs)
    # as if it had died after its last epoch
    RunWriter(run).set_status("FAILED", reason="simulated")
    capsys.readouterr()
    assert main(["resume", "cli-run", "--runs-dir", runs]) == 0
    assert "run 'cli-run'" in capsys.readouterr().out
    assert finetuner.get_run("cli-run", runs_dir=runs).status()["status"] == "FINISHED"


def test_cli_resume_of_a_python_run_explains(tmp_path, capsys):
    run = _fit(tmp_path, run_name="py-run")
    RunWriter(run).set_status("FAILED", reason="simulated")
    assert main(["resume", "py-run", "--runs-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "started from Python" in err and "resume='py-run'" in err
    json.dumps(err)
