"""Scratch's own learning rate: short runs over ``scratch.lr_grid``, scored on val.

A randomly initialised network is not fine-tuning: the rate that suits a pretrained backbone may
leave it near chance for the whole budget. Each candidate rate trains for ``scratch.grid_steps``
optimiser steps (same schedule shape, compressed), and the rate with the highest val AUROC at its
best epoch wins (ties: the lower val loss). Only train and val rows are used.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipeline.common import get_logger
from pipeline.loader import make_batches
from pipeline.params import Params

log = get_logger(__name__)


def search_scratch_lr(dataset: Any, params: Params, train_rows: np.ndarray, val_rows: np.ndarray) -> dict[str, Any]:
    """``{"chosen_lr", "grid_steps", "epochs_per_trial", "trials": [{lr, val_auroc, val_loss,
    train_auroc}]}``; train_auroc is eval mode on un-augmented train images, at the best epoch."""
    from pipeline.training import train

    sc = params.scratch
    per_epoch = len(make_batches(np.asarray(train_rows), params.train.batch_size))
    epochs = max(1, round(sc.grid_steps / per_epoch))  # whole epochs nearest the step count
    trials = []
    for lr in sorted(set(sc.lr_grid), reverse=True):
        trial = params.model_copy(update={"scratch": sc.model_copy(update={"lr": float(lr)})})
        res = train("scratch", dataset, trial, train_rows, val_rows, None, None, epochs=epochs)
        best = res.history[res.best_epoch - 1]
        trials.append(
            {
                "lr": float(lr),
                "val_auroc": _finite(best["val_auroc"]),
                "val_loss": _finite(best["val_loss"]),
                "train_auroc": _finite(best["train_auroc"]),
            }
        )
        log.info(
            "scratch lr %.0e: val AUROC %s, val loss %s (%d epochs)", lr, best["val_auroc"], best["val_loss"], epochs
        )

    def key(t: dict[str, Any]) -> tuple[float, float]:
        a, loss = t["val_auroc"], t["val_loss"]
        return (-math.inf if a is None else a, -math.inf if loss is None else -loss)

    chosen = max(trials, key=key)
    return {"chosen_lr": chosen["lr"], "grid_steps": sc.grid_steps, "epochs_per_trial": epochs, "trials": trials}


def _finite(x: Any) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None
