"""Sigmoid (Platt) calibration of a method's probabilities, fitted on the validation split only.

Every method writes its predictions through :func:`pipeline.predictions.write_predictions`, which
calls :func:`calibrate_on_val`: one place, one rule for linear, finetune, scratch and every
variant. The model itself is never refitted; scikit-learn's ``CalibratedClassifierCV`` with a
``FrozenEstimator`` fits the sigmoid on the validation rows' predictions and applies it to every
row. The frozen "estimator" is :class:`ScoresAsInput`, whose input is the model's probabilities and
whose decision function is their log-odds, so

* binary: one sigmoid on the log-odds ``s`` of the second class's probability,
  ``P = 1 / (1 + exp(a * s + b))`` (the first class gets ``1 - P``);
* more classes: one sigmoid per class (one-vs-rest) on that class's log-odds, then the row is
  renormalised to sum to 1 (what ``CalibratedClassifierCV(method="sigmoid")`` does).

The sigmoid is fitted on the log-odds rather than the probability, so a model that is already
calibrated stays as it is (``a = -1, b = 0``), which a sigmoid of the probability cannot express.

No calibration (the raw probabilities copied, the record says why) when the validation rows lack a
class (the sigmoid of that class cannot be fitted) or when a fitted sigmoid *decreases* with the
model's score (``a >= 0``: the model ranks validation inversely). Calibrating then would reverse
the model's ranking on test and external, a choice no calibration should make.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import sklearn
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import log_loss

from pipeline.common import get_logger

log = get_logger(__name__)

EPS = 1e-12  # probabilities are clipped to [EPS, 1 - EPS] before the log-odds
SCORE = f"log-odds log(p / (1 - p)) of the model's probability p of the class (p clipped to [{EPS:g}, 1 - {EPS:g}])"
FORMULA = "calibrated P = 1 / (1 + exp(a * score + b)); binary: of the second class, the first gets 1 - P"


class ScoresAsInput(ClassifierMixin, BaseEstimator):
    """A fitted model's probabilities as a scikit-learn classifier: ``X`` is ``(n, K)``
    probabilities, ``decision_function`` their log-odds (binary: the second column's)."""

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> ScoresAsInput:
        self.classes_ = np.arange(np.asarray(X).shape[1])
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        p = np.clip(np.asarray(X, dtype=np.float64), EPS, 1.0 - EPS)
        s = np.log(p) - np.log1p(-p)
        return s[:, 1] if s.shape[1] == 2 else s

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.argmax(np.asarray(X), axis=1)


def calibrate_on_val(
    probs: np.ndarray,
    y: np.ndarray,
    is_val: np.ndarray,
    patients: np.ndarray,
    classes: tuple[str, ...] | list[str],
) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit the sigmoid on the rows with ``is_val``, apply it to every row.

    ``probs`` ``(n, K)`` the model's probabilities, ``y`` class indices. Returns the calibrated
    probabilities ``(n, K)`` (the raw ones, copied, when not calibrated) and the record written
    next to the prediction file (contract :class:`pipeline.contracts.PredictionCalibration`).
    """
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    is_val = np.asarray(is_val, dtype=bool)
    k = len(classes)
    yv, pv = y[is_val], probs[is_val]
    counts = {c: int((yv == i).sum()) for i, c in enumerate(classes)}
    record: dict[str, Any] = {
        "method": "sigmoid",
        "implementation": (
            f"scikit-learn {sklearn.__version__} CalibratedClassifierCV(FrozenEstimator(model), method='sigmoid')"
            + ("" if k == 2 else ", one-vs-rest, rows renormalised")
        ),
        "score": SCORE,
        "formula": FORMULA,
        "fitted_on": "val",
        "calibrated": False,
        "note": None,
        "n_val_images": int(is_val.sum()),
        "n_val_patients": len(np.unique(np.asarray(patients)[is_val].astype(str))),
        "val_class_counts": counts,
        "parameters": {},
        "val_log_loss_raw": None,
        "val_log_loss_calibrated": None,
    }
    lacking = [c for c, n in counts.items() if n == 0]
    if lacking:
        record["note"] = (
            f"not calibrated: the validation split holds no image of {lacking} ({record['n_val_images']} images); "
            "prob_ columns are the raw probabilities"
        )
        log.warning(record["note"])
        return probs.copy(), record

    cal = CalibratedClassifierCV(
        FrozenEstimator(ScoresAsInput().fit(pv)),
        method="sigmoid",
        # The frozen model is never refitted: one "split" whose held-out side is every val row.
        cv=[(np.arange(len(yv)), np.arange(len(yv)))],
        ensemble=False,
    ).fit(pv, yv)
    calibrators = cal.calibrated_classifiers_[0].calibrators
    names = [classes[1]] if k == 2 else list(classes)
    record["parameters"] = {n: {"a": float(c.a_), "b": float(c.b_)} for n, c in zip(names, calibrators, strict=True)}
    record["val_log_loss_raw"] = _log_loss(yv, pv, k)
    decreasing = [n for n, p in record["parameters"].items() if not p["a"] < 0]
    if decreasing:
        record["note"] = (
            f"not calibrated: the sigmoid fitted on validation decreases with the model's score for {decreasing} "
            "(a >= 0: the model ranks validation inversely); applying it would reverse the model's ranking, "
            "so prob_ columns are the raw probabilities"
        )
        log.warning(record["note"])
        return probs.copy(), record
    out = cal.predict_proba(probs)
    record["calibrated"] = True
    record["val_log_loss_calibrated"] = _log_loss(yv, out[is_val], k)
    return out, record


def _log_loss(y: np.ndarray, p: np.ndarray, k: int) -> float:
    return float(log_loss(y, p, labels=np.arange(k)))
