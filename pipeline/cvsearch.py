"""Cross-validated scoring of a hyper-parameter grid on given (patient-grouped) folds.

One helper for every feature-based method (linear, linear_on_logits, knn): each parameter
combination gets its mean held-out **log loss**, the score the choice is made by, and its AUROC,
kept for the validation-curve table of the report. Log loss rather than AUROC: AUROC ignores the
probabilities' scale, so on a weak signal it prefers the strongest regularisation, whose
probabilities are all within a few hundredths of each other (measured on the demo: C = 1e-6,
every probability in 0.480-0.517). Log loss penalises such uninformative probabilities.

The folds come from :func:`pipeline.linear.make_cv_splits` (patients never on both sides, every
class in every fold), so every fold's log loss and AUROC are defined.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.model_selection import GridSearchCV

Split = tuple[np.ndarray, np.ndarray]

# What the choice minimises (scikit-learn scorer name; its value is minus the log loss).
SELECTION_SCORING = "neg_log_loss"


def auroc_scoring(n_classes: int) -> str:
    """The scikit-learn AUROC scorer: binary, or one-vs-rest macro for more classes."""
    return "roc_auc" if n_classes == 2 else "roc_auc_ovr"


def score_grid(
    estimator: BaseEstimator,
    param_grid: dict[str, list[Any]],
    X: np.ndarray,
    y: np.ndarray,
    splits: list[Split],
    n_classes: int,
) -> list[dict[str, Any]]:
    """Mean train-fold and held-out log loss and AUROC of every combination of ``param_grid``.

    Returns one row per combination, in scikit-learn's grid order, keyed by the parameter names
    without their pipeline prefix (``logisticregression__C`` -> ``C``) plus ``train_auroc``,
    ``cv_auroc``, ``cv_auroc_std``, ``train_log_loss``, ``cv_log_loss``, ``cv_log_loss_std``.
    Nothing is refitted: the caller picks (:func:`best_row`) and refits.
    """
    search = GridSearchCV(
        estimator,
        param_grid=param_grid,
        scoring={"log_loss": SELECTION_SCORING, "auroc": auroc_scoring(n_classes)},
        cv=splits,
        refit=False,
        return_train_score=True,
        error_score="raise",  # every fold holds every class (make_cv_splits): no undefined fold
    )
    search.fit(X, y)
    res = search.cv_results_
    rows = []
    for i, combo in enumerate(res["params"]):
        row: dict[str, Any] = {k.split("__")[-1]: _plain(v) for k, v in combo.items()}
        row.update(
            {
                "train_auroc": float(res["mean_train_auroc"][i]),
                "cv_auroc": float(res["mean_test_auroc"][i]),
                "cv_auroc_std": float(res["std_test_auroc"][i]),
                "train_log_loss": float(-res["mean_train_log_loss"][i]),
                "cv_log_loss": float(-res["mean_test_log_loss"][i]),
                "cv_log_loss_std": float(res["std_test_log_loss"][i]),
            }
        )
        rows.append(row)
    return rows


def best_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row with the lowest cross-validated log loss; among exact ties the first in ``rows``
    (callers order their rows from the simplest model, e.g. the strongest regularisation)."""
    if not rows:
        raise ValueError("no scored parameter combinations")
    return min(rows, key=lambda r: r["cv_log_loss"])  # min keeps the first of equal values


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
