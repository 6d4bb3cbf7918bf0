"""Did a method fit its training data, and do its outputs vary? Computed from its prediction file.

Every method predicts its training images too, in eval mode on the un-augmented images (the
contract of ``predictions/<method>.csv``), so one rule serves every method:

* ``fitted``: the headline AUROC of the **raw** probabilities on the train rows reaches
  ``evaluate.fitted_train_auroc``. A method below it never learnt its own training data, so a
  comparison against it ("transfer helps") is against a baseline that never fitted.
* ``near_constant``: the interquartile range of the raw positive-class probability on val or on
  test is below ``evaluate.near_constant_iqr``. Such outputs make calibration metrics meaningless
  (an ECE near 0 when every probability is near the prevalence) and put any threshold inside a
  narrow band. For more than 2 classes without a positive class the class with the widest IQR
  counts (near-constant only when every class is).

The raw probabilities are the model's own; the calibrated ``prob_`` are a val-fitted sigmoid of
them and would hide (or stretch) the spread.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline import metrics as M

SPREAD_SPLITS = ("val", "test")


def spread(scores: np.ndarray) -> dict[str, Any]:
    """Quartiles, range and IQR of one score column (``None`` values for no rows)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return {"n": 0, "min": None, "q25": None, "median": None, "q75": None, "max": None, "iqr": None, "range": None}
    q25, med, q75 = np.percentile(s, [25, 50, 75])
    return {
        "n": int(s.size),
        "min": float(s.min()),
        "q25": float(q25),
        "median": float(med),
        "q75": float(q75),
        "max": float(s.max()),
        "iqr": float(q75 - q25),
        "range": float(s.max() - s.min()),
    }


def _widest(raw: np.ndarray, classes: list[str], pos: int | None) -> tuple[str, dict[str, Any]]:
    if pos is not None:
        return classes[pos], spread(raw[:, pos])
    per = [(c, spread(raw[:, i])) for i, c in enumerate(classes)]
    return max(per, key=lambda cs: -1.0 if cs[1]["iqr"] is None else cs[1]["iqr"])


def fit_check(
    y_train: np.ndarray,
    raw_train: np.ndarray,
    raw_by_split: dict[str, np.ndarray],
    classes: list[str],
    pos: int | None,
    near_constant_iqr: float,
    fitted_train_auroc: float,
) -> dict[str, Any]:
    """The ``fit`` block of one method in evaluation.json.

    ``y_train`` class indices and ``raw_train`` ``(n, K)`` raw probabilities of the train rows;
    ``raw_by_split`` the raw probabilities of the val and test rows; ``pos`` the positive class
    index (None: more than 2 classes without one).
    """
    head = pos if pos is not None else 1
    train_auroc = (
        M.headline_auc_ci(y_train, raw_train, head)["auc"]
        if len(y_train) and np.unique(y_train).size == len(classes)
        else float("nan")
    )
    per_split = {}
    for split in SPREAD_SPLITS:
        cls, sp = _widest(np.asarray(raw_by_split.get(split, np.empty((0, len(classes))))), classes, pos)
        per_split[split] = {"class": cls, **sp}
    iqrs = [b["iqr"] for b in per_split.values() if b["iqr"] is not None]
    low = [s for s, b in per_split.items() if b["iqr"] is not None and b["iqr"] < near_constant_iqr]
    return {
        "train_auroc": train_auroc,
        "n_train": int(len(y_train)),
        "fitted": bool(train_auroc >= fitted_train_auroc) if np.isfinite(train_auroc) else None,
        "raw_spread": per_split,
        "near_constant": bool(low) if iqrs else None,
        "near_constant_splits": low,
    }


def fit_notes(name: str, fit: dict[str, Any], near_constant_iqr: float, fitted_train_auroc: float) -> list[str]:
    """Plain-language notes for a method that did not fit or whose outputs are near-constant."""
    notes = []
    if fit["fitted"] is False:
        notes.append(
            f"{name}: did not fit its training data (train AUROC {fit['train_auroc']:.3f} < "
            f"evaluate.fitted_train_auroc = {fitted_train_auroc:g}); comparisons against it are against "
            "a model that never learnt"
        )
    elif fit["fitted"] is None:
        notes.append(f"{name}: train AUROC undefined (no train rows, or a class missing): fit not checked")
    if fit["near_constant"]:
        where = ", ".join(f"{s} IQR {fit['raw_spread'][s]['iqr']:.4f}" for s in fit["near_constant_splits"])
        notes.append(
            f"{name}: near-constant outputs (raw probability {where} < evaluate.near_constant_iqr = "
            f"{near_constant_iqr:g}): its threshold and calibration metrics mean little"
        )
    return notes
