"""The linear path: logistic regression on frozen backbone embeddings (scikit-learn).

The regularisation strength C is the only thing chosen, by patient-grouped cross-validation on the
training split, scored by the held-out **log loss** (:mod:`pipeline.cvsearch` says why not AUROC);
the model is then refitted on all of train. A C chosen at an edge of ``linear.C_grid`` extends the
grid by a decade on that side until the choice is inside, or a documented bound stops the search
(``linear.C_min``/``C_max``, or a flat score: ``linear.extend_tol``); the searched values, their
scores and the stop reason go to the model card (:class:`CSearch`). Two rules keep the CV honest:

* images of one patient never sit on both sides of a fold (``StratifiedGroupKFold`` on patients),
  and the augmented views of an image belong to the source image's patient, so a view of a
  held-out patient is never trained on;
* CV scores are measured on original images only: augmented views are added to the training side
  of each fold, never to the held-out side, so the CV scores estimate what val/test will show.

When a class has fewer training patients than ``linear.cv_folds``, some fold would hold no image
of that class and AUROC would be undefined there; the number of folds is then reduced, logged, and
recorded in :class:`CVInfo` (``model.cv_info_``) so the model card says so.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.common import get_logger
from pipeline.cvsearch import SELECTION_SCORING, Split, best_row, score_grid
from pipeline.errors import StageError
from pipeline.params import Linear, Params

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pipeline.dataset import Dataset

log = get_logger(__name__)

# The validation-curve table (reports/train/linear.json "cv"): C chosen by cv_log_loss; the AUROC
# columns are kept for the report's validation curve. `extension`: 0 for C_grid, n for the n-th
# decade added past an edge.
CV_COLUMNS = (
    "C",
    "train_auroc",
    "cv_auroc",
    "cv_auroc_std",
    "train_log_loss",
    "cv_log_loss",
    "cv_log_loss_std",
    "extension",
)
StopKind = Literal["interior", "bound", "plateau", "single_value"]


@dataclass
class CSearch:
    """How C was searched: the grid as configured, every value scored, why the search stopped."""

    scoring: str
    initial_grid: list[float]
    searched_grid: list[float]
    extensions: int
    best_C: float
    stop: StopKind
    stop_reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CVInfo:
    """How the cross-validation ran; attached to the fitted pipeline as ``cv_info_``."""

    folds_requested: int
    folds_used: int
    n_images: int  # original (non-augmented) training images
    n_augmented: int  # augmented views added to the training side of each fold
    n_patients: int
    best_C: float
    search: CSearch
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_cv_splits(
    y: np.ndarray,
    groups: np.ndarray,
    n_folds: int,
    seed: int,
    is_augmented: np.ndarray | None = None,
) -> tuple[list[Split], list[str]]:
    """Patient-grouped, class-stratified folds over all samples (originals + augmented views).

    Folds are drawn on the original images (``StratifiedGroupKFold``) and then expanded by
    patient: a fold's training side is every sample (original or augmented) of its training
    patients, its held-out side the *original* images of the held-out patients. Folds are reduced
    (with a warning, returned) until every fold holds every class on both sides; fewer than two
    usable folds is an error.
    """
    y = np.asarray(y)
    groups = np.asarray(groups)
    aug = np.zeros(len(y), dtype=bool) if is_augmented is None else np.asarray(is_augmented, bool)
    if not (len(y) == len(groups) == len(aug)):
        raise ValueError(f"y ({len(y)}), groups ({len(groups)}) and is_augmented ({len(aug)}) differ in length")
    orig = np.flatnonzero(~aug)
    if orig.size == 0:
        raise ValueError("no original (non-augmented) training images")
    classes = np.unique(y[orig])
    if classes.size < 2:
        raise ValueError(f"training images hold a single class ({classes.tolist()}); need at least 2")

    notes: list[str] = []
    # A class needs at least one patient per held-out fold.
    patients_per_class = {int(c): len(np.unique(groups[orig][y[orig] == c])) for c in classes}
    k = min(n_folds, min(patients_per_class.values()))
    if k < n_folds:
        notes.append(
            f"cv_folds reduced from {n_folds} to {k}: the smallest class has "
            f"{min(patients_per_class.values())} training patients (patients per class: "
            f"{patients_per_class})"
        )
    while k >= 2:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        splits: list[Split] = []
        ok = True
        with warnings.catch_warnings():
            # "least populated class has fewer members than n_splits" counts images, not patients;
            # the check that matters (every class in every fold) is done below.
            warnings.simplefilter("ignore", UserWarning)
            folds = list(splitter.split(np.zeros(orig.size), y[orig], groups[orig]))
        for tr, te in folds:
            train_patients = np.unique(groups[orig][tr])
            test_patients = np.unique(groups[orig][te])
            tr_idx = np.flatnonzero(np.isin(groups, train_patients))
            te_idx = orig[np.isin(groups[orig], test_patients)]
            if np.unique(y[tr_idx]).size < classes.size or np.unique(y[te_idx]).size < classes.size:
                ok = False
                break
            splits.append((tr_idx, te_idx))
        if ok:
            for note in notes:
                log.warning(note)
            return splits, notes
        notes.append(f"cv_folds reduced from {k} to {k - 1}: a {k}-fold split left a class out of a fold")
        k -= 1
    raise ValueError(
        "cannot cross-validate C: fewer than 2 patient-grouped folds hold every class "
        f"(patients per class: {patients_per_class}); add training patients or lower split fractions"
    )


def fit_linear(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    cfg: Linear,
    seed: int,
    is_augmented: np.ndarray | None = None,
) -> tuple[Pipeline, list[dict[str, float]]]:
    """Choose C by patient-grouped CV log loss on train (extending the grid past an edge),
    refit on all of train.

    ``y`` holds class indices 0..K-1 (all present); ``groups`` the patient of every sample, an
    augmented view carrying its source image's patient; ``is_augmented`` marks augmented views
    (trained on, never scored). Returns the refitted ``StandardScaler -> LogisticRegression``
    pipeline (with ``cv_info_``, a :class:`CVInfo`) and the validation-curve table: one row per
    searched C, C ascending, with the columns of :data:`CV_COLUMNS`.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be (n, D) with n = len(y) = {len(y)}, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("features contain NaN or inf")
    n_classes = int(y.max()) + 1 if y.size else 0
    if not np.array_equal(np.unique(y), np.arange(n_classes)) or n_classes < 2:
        raise ValueError(f"training labels must cover every class index 0..K-1 (K >= 2), got {np.unique(y).tolist()}")

    splits, notes = make_cv_splits(y, groups, cfg.cv_folds, seed, is_augmented)
    model = make_pipeline(
        # Embedding dimensions differ in scale by orders of magnitude; one C fits all only after
        # standardising.
        StandardScaler(),
        LogisticRegression(class_weight=cfg.class_weight, max_iter=cfg.max_iter, random_state=seed),
    )
    table, search = search_C(model, X, y, splits, n_classes, cfg)
    best_C = search.best_C
    if search.stop in ("bound", "plateau"):
        log.warning(search.stop_reason)
        notes.append(search.stop_reason)
    best = clone(model).set_params(logisticregression__C=best_C).fit(X, y)  # refit on all of train
    aug = np.zeros(len(y), bool) if is_augmented is None else np.asarray(is_augmented, bool)
    best.cv_info_ = CVInfo(
        folds_requested=cfg.cv_folds,
        folds_used=len(splits),
        n_images=int((~aug).sum()),
        n_augmented=int(aug.sum()),
        n_patients=len(np.unique(np.asarray(groups)[~aug])),
        best_C=best_C,
        warnings=notes,
        search=search,
    )
    return best, table


def search_C(
    model: Pipeline, X: np.ndarray, y: np.ndarray, splits: list[Split], n_classes: int, cfg: Linear
) -> tuple[list[dict[str, float]], CSearch]:
    """Score ``cfg.C_grid`` by CV log loss; while the best C is at an edge of the searched values,
    add the next decade on that side and score it, until the best is inside, the next decade would
    leave ``[cfg.C_min, cfg.C_max]``, or (after one extension) the new edge improves the CV log
    loss by less than ``cfg.extend_tol``. Ties keep the smallest C (the strongest regularisation,
    the safer choice on a small data set). Returns the table (C ascending) and the search record.
    """
    initial = sorted({float(c) for c in cfg.C_grid})
    rows: dict[float, dict[str, float]] = {}
    new, extension = initial, 0
    stop: StopKind
    while True:
        for r in score_grid(model, {"logisticregression__C": new}, X, y, splits, n_classes):
            rows[float(r["C"])] = {**r, "C": float(r["C"]), "extension": extension}
        table = [rows[c] for c in sorted(rows)]
        best = best_row(table)
        best_C = float(best["C"])
        lo, hi = table[0]["C"], table[-1]["C"]
        if len(table) == 1:
            stop, reason = "single_value", f"linear.C_grid holds one value, C = {best_C:g}: no search"
            break
        if lo < best_C < hi:
            stop = "interior"
            reason = f"C = {best_C:g} is inside the searched values [{lo:g}, {hi:g}]"
            break
        side, nxt = ("smallest", best_C / 10.0) if best_C == lo else ("largest", best_C * 10.0)
        edge = f"the chosen C = {best_C:g} is the {side} value searched"
        if not cfg.C_min * (1 - 1e-9) <= nxt <= cfg.C_max * (1 + 1e-9):
            stop = "bound"
            reason = (
                f"{edge}, and the next decade ({nxt:g}) lies outside [linear.C_min, linear.C_max] = "
                f"[{cfg.C_min:g}, {cfg.C_max:g}]: the search stopped there; the optimum may lie beyond"
            )
            break
        neighbour = table[1] if best_C == lo else table[-2]
        gain = neighbour["cv_log_loss"] - best["cv_log_loss"]
        if extension >= 1 and gain < cfg.extend_tol:
            stop = "plateau"
            reason = (
                f"{edge} after {extension} extension(s), but it improves the CV log loss over "
                f"C = {neighbour['C']:g} by only {gain:.2g} (< linear.extend_tol = {cfg.extend_tol:g}): "
                "the score is flat beyond, the search stopped"
                + (" (as C -> 0 the probabilities tend to a constant)" if side == "smallest" else "")
            )
            break
        log.info("%s: extending the C grid to %g", edge, nxt)
        new, extension = [nxt], extension + 1
    search = CSearch(
        scoring=SELECTION_SCORING,
        initial_grid=initial,
        searched_grid=[r["C"] for r in table],
        extensions=extension,
        best_C=best_C,
        stop=stop,
        stop_reason=reason,
    )
    return table, search


def predict_linear(model: Pipeline, X: np.ndarray) -> np.ndarray:
    """Class probabilities ``(n, n_classes)``, column k = class index k; rows sum to 1."""
    classes = model.classes_
    if not np.array_equal(classes, np.arange(len(classes))):
        raise ValueError(f"model classes must be 0..K-1, got {classes.tolist()}")
    return model.predict_proba(np.asarray(X, dtype=np.float64))


def auroc(y: np.ndarray, probs: np.ndarray) -> float:
    """AUROC as the CV scorer computes it (binary: class 1 score; multi-class: one-vs-rest macro).

    For two classes the choice of positive class does not change the value. NaN when ``y`` lacks
    a class (logged): the metric is undefined there, not zero.
    """
    y = np.asarray(y)
    k = probs.shape[1]
    if np.unique(y).size < k:
        log.warning("AUROC undefined: %d of %d classes present", np.unique(y).size, k)
        return float("nan")
    if k == 2:
        return float(roc_auc_score(y, probs[:, 1]))
    return float(roc_auc_score(y, probs, multi_class="ovr", labels=np.arange(k)))


def train_val_auroc(dataset: Dataset, probs: np.ndarray) -> tuple[float, float]:
    """AUROC of ``probs`` (every manifest row) on the train and the val split (NaN when empty)."""
    labels = dataset.labels()
    train_rows, val_rows = dataset.rows("train"), dataset.rows("val")
    train = auroc(labels[train_rows], probs[train_rows]) if train_rows.size else float("nan")
    return train, auroc(labels[val_rows], probs[val_rows]) if val_rows.size else float("nan")


@dataclass
class TrainingSet:
    """The linear path's training matrix: original train images then their augmented views."""

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    is_augmented: np.ndarray
    rows: np.ndarray  # source manifest row of every sample


def build_training_set(
    dataset: Dataset,
    features: np.ndarray,
    aug_features: np.ndarray | None,
    aug_index: pd.DataFrame | None,
    train_rows: np.ndarray,
    use_augmented: bool,
) -> TrainingSet:
    """Stack the features of ``train_rows`` and (optionally) of their augmented views.

    Views whose source row is not in ``train_rows`` are left out (a learning-curve subset uses
    only its own patients' views). A view whose source is not a *train*-split image is an error:
    it would leak val/test images into training.
    """
    train_rows = np.asarray(train_rows, dtype=np.int64)
    if len(features) != len(dataset.manifest):
        raise ValueError(
            f"features have {len(features)} rows but the manifest {len(dataset.manifest)}; rerun the features stage"
        )
    labels = dataset.labels()
    X_parts = [np.asarray(features[train_rows], dtype=np.float64)]
    src_parts = [train_rows]
    aug_parts = [np.zeros(len(train_rows), bool)]
    if use_augmented and aug_index is not None and len(aug_index):
        if aug_features is None or len(aug_features) != len(aug_index):
            raise ValueError(
                f"augmented features ({None if aug_features is None else len(aug_features)} rows) "
                f"do not match augmented.csv ({len(aug_index)} rows); rerun the features stage"
            )
        src = aug_index["row"].to_numpy(dtype=np.int64)
        not_train = np.setdiff1d(src, dataset.rows("train"))
        if not_train.size:
            raise ValueError(
                f"augmented views of non-train rows {not_train[:5].tolist()}: augmentation must use "
                "train images only; rerun the augment stage"
            )
        keep = np.isin(src, train_rows)
        aug_rows = aug_index["aug_row"].to_numpy(dtype=np.int64)[keep]
        X_parts.append(np.asarray(aug_features[aug_rows], dtype=np.float64))
        src_parts.append(src[keep])
        aug_parts.append(np.ones(int(keep.sum()), bool))
    rows = np.concatenate(src_parts)
    return TrainingSet(
        X=np.concatenate(X_parts),
        y=labels[rows],
        # A view's group is its source image's patient: grouped CV keeps them together.
        groups=dataset.patients(rows),
        is_augmented=np.concatenate(aug_parts),
        rows=rows,
    )


def load_linear_inputs(root: Path) -> dict[str, Any]:
    """The features stage's outputs under ``root``: frozen features (memory-mapped), augmented
    features and the augmented.csv index, checked against each other.

    One loader for the linear stage and the learning-curve diagnostics; a missing or inconsistent
    file is a StageError (rerun the stage named), never a silent fit without the augmented views.
    """
    from pipeline import paths
    from pipeline.contracts import FeaturesInfo, read_contract

    root = Path(root)
    features = np.load(root / paths.FEATURES, mmap_mode="r")
    info = read_contract(root / paths.FEATURES_INFO, FeaturesInfo)
    if int(features.shape[1]) != info.D:
        raise StageError(
            f"{paths.FEATURES} has D={features.shape[1]} but {paths.FEATURES_INFO} says "
            f"{info.D}; rerun the features stage"
        )
    aug_index = pd.read_csv(root / paths.AUGMENTED_INDEX, dtype="int64")
    expected = list(paths.AUGMENTED_INDEX_COLUMNS)
    if list(aug_index.columns) != expected:
        raise StageError(f"{paths.AUGMENTED_INDEX} columns {list(aug_index.columns)}, expected {expected}")
    aug_features = np.load(root / paths.AUGMENTED_FEATURES, mmap_mode="r")
    return {"features": features, "aug_features": aug_features, "aug_index": aug_index, "info": info}


def fit_predict_linear(
    dataset: Dataset,
    features: np.ndarray,
    aug_features: np.ndarray | None,
    aug_index: pd.DataFrame | None,
    train_rows: np.ndarray,
    predict_rows: np.ndarray,
    params: Params,
) -> tuple[np.ndarray, list[dict[str, float]], float]:
    """Fit on ``train_rows`` (+ their augmented views when ``linear.use_augmented``), predict
    ``predict_rows``. Used by the learning-curve diagnostics; returns (probs, cv_table, best_C)."""
    ts = build_training_set(dataset, features, aug_features, aug_index, train_rows, params.linear.use_augmented)
    n_classes = len(dataset.classes)
    missing = sorted(set(range(n_classes)) - set(ts.y.tolist()))
    if missing:
        raise ValueError(f"training rows hold no image of class(es) {[dataset.classes[i] for i in missing]}")
    model, cv_table = fit_linear(ts.X, ts.y, ts.groups, params.linear, params.seed, ts.is_augmented)
    probs = predict_linear(model, np.asarray(features[np.asarray(predict_rows, dtype=np.int64)]))
    return probs, cv_table, model.cv_info_.best_C
