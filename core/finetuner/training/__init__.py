"""The trainer, as small pieces with one job each.

``setup``
    :func:`build_setup`: a validated config becomes a :class:`FitSetup` (seed, device, data,
    models, loss, optimizers, scheduler, sampler), without side effects. Its parts:
    ``data_setup``, ``model_setup``, ``optimization``, ``sampling``, ``losses``, ``optim``.
``trainer``
    :class:`Trainer`: build, open the run, register the plugins, run the fit loop, record a
    failure.
``fit_loop``
    :class:`FitLoop`: the documented hook sequence of one fit.
``epoch_loop``
    :class:`EpochLoop`: the batches of one epoch and their hooks.
``step``
    :class:`TrainingStep`: forward, backward and the optimizer step of one batch.
``validation``
    The validation loss.
``metrics``
    Metric declarations, aliases, and evaluate-then-publish: the ordering guarantee.
``resume``
    Which run to resume, whether it may be, and the state a checkpoint captures and restores.
``failure``
    The phase a fit is in, and recording a failure with it.
``artifact``
    What a finished fit puts into its artifact.
``services``, ``randomness``
    What ``ctx`` does for plugins; seeding and the random generators' state.
"""

from __future__ import annotations

from .epoch_loop import EpochLoop
from .failure import Phase, PhaseTracker
from .fit_loop import FitLoop
from .metrics import MetricsPublisher
from .setup import FitSetup, build_setup
from .step import TrainingStep
from .trainer import Trainer

__all__ = [
    "EpochLoop",
    "FitLoop",
    "FitSetup",
    "MetricsPublisher",
    "Phase",
    "PhaseTracker",
    "Trainer",
    "TrainingStep",
    "build_setup",
]
