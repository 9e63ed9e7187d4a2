"""The data of a fit: training and validation data loaded, checked against each other and
against the loss, before any model is built."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import FitConfig
from ..data import KINDS, Dataset, align_classes, load_dataset, split_dataset
from ..errors import DataError
from .losses import loss_data_kinds

__all__ = ["AUTO_LOSSES", "check_loss_fits", "load_fit_data", "resolve_loss"]

AUTO_LOSSES = {
    "labeled": "TripletMarginLoss",
    "pairs": "CLIPLoss",
    "retrieval": "MultipleNegativesRankingLoss",
    "scored": "CosineSimilarityLoss",
    "triplets": "MarginMSELoss",
}
"""The loss ``loss='auto'`` (the default) trains with, by the kind of the training data."""

_LOSS_HINTS = {
    "labeled": "use a pytorch-metric-learning loss such as TripletMarginLoss or ArcFaceLoss.",
    "pairs": "use loss='CLIPLoss' (or a pytorch-metric-learning loss).",
    "retrieval": "use loss='MultipleNegativesRankingLoss' (or its cached form).",
    "scored": "use loss='CosineSimilarityLoss'.",
    "triplets": "use loss='MarginMSELoss'.",
}


def resolve_loss(loss: str, data: Dataset) -> str:
    """*loss*, or for ``'auto'`` the loss of :data:`AUTO_LOSSES` for *data*'s kind."""
    return AUTO_LOSSES[data.kind] if loss == "auto" else loss


def check_loss_fits(loss: str, data: Dataset, options: Mapping[str, Any] | None = None) -> None:
    """The loss must train on the form of the data: class losses on labeled items, text-image
    pairs or retrieval pairs without negatives, the other losses on their own forms."""
    wanted = loss_data_kinds(loss, options)
    if wanted is not None and data.kind not in wanted:
        raise DataError(
            f"{loss} trains on {' or '.join(KINDS[k] for k in wanted)}, but train_data holds "
            f"{KINDS[data.kind]}; {_LOSS_HINTS[data.kind]}"
        )
    if wanted is None and data.kind in ("scored", "triplets"):
        raise DataError(
            f"{loss} learns from class labels, but train_data holds {KINDS[data.kind]}; "
            f"{_LOSS_HINTS[data.kind]}"
        )
    if wanted is None and data.kind == "retrieval" and len(data.columns) > 2:
        raise DataError(
            f"{loss} learns from class labels, but train_data holds retrieval data with "
            f"{len(data.columns) - 2} negatives column(s), which labels do not cover; "
            "use loss='MultipleNegativesRankingLoss'."
        )


def _check_same_form(train: Dataset, evaluation: Dataset) -> None:
    if train.kind == evaluation.kind == "retrieval" and len(train.columns) != len(
        evaluation.columns
    ):
        raise DataError(
            f"eval_data has {len(evaluation.columns) - 2} negative(s) per query but train_data "
            f"has {len(train.columns) - 2}; retrieval data for validation needs as many "
            "negatives as the training data."
        )
    if (evaluation.kind, evaluation.modalities) != (train.kind, train.modalities):
        raise DataError(
            f"eval_data holds {KINDS[evaluation.kind]} ({', '.join(evaluation.modalities)}) "
            f"but train_data holds {KINDS[train.kind]} ({', '.join(train.modalities)}); "
            "they must be of one form."
        )
    if evaluation.item_shape != train.item_shape:
        raise DataError(
            f"eval_data items have shape {evaluation.item_shape} but train_data "
            f"items have shape {train.item_shape}; they must match."
        )


def load_fit_data(config: FitConfig, seed: int) -> tuple[FitConfig, Dataset, Dataset | None]:
    """``(config, train, validation)``: *config* with ``loss='auto'`` resolved for the
    training data, its data, with ``val_split`` held out (drawn with *seed*) when there is no
    ``eval_data``, and validation labels coded like training's."""
    options = config.csv_options
    train = load_dataset(config.train_data, name="train_data", csv_options=options)
    evaluation = (
        load_dataset(config.eval_data, name="eval_data", csv_options=options)
        if config.eval_data is not None
        else None
    )
    if config.loss == "auto":
        config = config.model_copy(update={"loss": resolve_loss(config.loss, train)})
    check_loss_fits(config.loss, train, config.loss_options)
    if evaluation is None and config.val_split > 0:
        train, evaluation = split_dataset(train, config.val_split, seed)
    if train.kind == "labeled" and train.num_classes < 2:
        raise DataError(
            f"train_data has a single class ({train.classes[0]!r}); {config.loss} learns by "
            "telling classes apart and needs items of at least two classes."
        )
    if train.kind == "retrieval" and train.num_classes < 2:
        raise DataError(
            f"train_data has a single query ({train.columns[0].values[0]!r}); retrieval "
            "training tells queries apart and needs at least two."
        )
    if evaluation is None:
        return config, train, None
    _check_same_form(train, evaluation)
    if evaluation.labels is not None:
        evaluation = align_classes(evaluation, train)
    return config, train, evaluation
