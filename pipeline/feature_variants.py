"""The frozen-feature variants of the strategy menu: ``linear_on_logits`` and ``knn``.

Both reuse the frozen embedding of the features stage, so they cost seconds, and both choose
their one hyper-parameter the way the linear method chooses C: by the patient-grouped CV log
loss on the training split (:func:`pipeline.linear.make_cv_splits`, augmented views on the
training side of a fold only), then refit on all of train.

* ``linear_on_logits``: the linear method's logistic regression (same C search, same
  ``linear`` params) on the pretrained network's 1000 ImageNet class scores
  (``data/features/logits.npy``) instead of its penultimate features.
* ``knn``: ``StandardScaler -> KNeighborsClassifier`` on the penultimate features, ``k`` from
  ``strategies.knn_k``. A neighbour classifier learns no weights; its training AUROC (a train
  image is its own nearest neighbour) says little about fit, which the report states.

Outputs follow the main methods' contracts: ``predictions/<name>.csv`` (+ calibration record),
``models/<name>/model.joblib`` and ``reports/train/<name>.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline import paths
from pipeline.common import get_logger
from pipeline.contracts import FeaturesInfo, KnnLog, LinearLog, write_contract
from pipeline.cvsearch import best_row, score_grid
from pipeline.dataset import Dataset, load_dataset
from pipeline.errors import StageError
from pipeline.linear import (
    TrainingSet,
    build_training_set,
    fit_linear,
    load_linear_inputs,
    make_cv_splits,
    predict_linear,
    train_val_auroc,
)
from pipeline.params import Params
from pipeline.predictions import write_predictions
from pipeline.workspace import Workspace

log = get_logger("variant")

KNN_WEIGHTS = "uniform"
FEATURE_VARIANTS = ("linear_on_logits", "knn")


def model_path(name: str) -> Path:
    return paths.MODELS / name / "model.joblib"


def run_feature_variant(name: str, params: Params, workspace: Workspace) -> dict[str, Any]:
    """Fit variant ``name`` on train (+ augmented views), predict every manifest row, write the
    model, the predictions and reports/train/<name>.json; returns that record."""
    if name not in FEATURE_VARIANTS:
        raise StageError(f"{name!r} is not a frozen-feature variant ({', '.join(FEATURE_VARIANTS)})")
    start = time.perf_counter()
    dataset = load_dataset(params, root=workspace.root)
    inputs = load_linear_inputs(workspace.root)
    info: FeaturesInfo = inputs["info"]
    features, aug_features = inputs["features"], inputs["aug_features"]
    if name == "linear_on_logits":
        features, aug_features = _logits(workspace, info)
    train_rows = dataset.rows("train")
    ts = build_training_set(
        dataset, features, aug_features, inputs["aug_index"], train_rows, params.linear.use_augmented
    )
    if name == "linear_on_logits":
        model, cv_table = fit_linear(ts.X, ts.y, ts.groups, params.linear, params.seed, ts.is_augmented)
    else:
        model, cv_table = fit_knn(ts, params)
    probs = predict_linear(model, features)  # every manifest row, all splits
    write_predictions(workspace.predictions(name), dataset, probs)
    out = workspace.path(model_path(name))
    out.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, out)
    train_auroc, val_auroc = train_val_auroc(dataset, probs)
    card = _card(name, model, ts, info, params, dataset, time.perf_counter() - start)
    if name == "linear_on_logits":
        cv = model.cv_info_
        record: dict[str, Any] = {"model_card": card, "cv": cv_table, "best_C": cv.best_C}
        record["C_search"] = cv.search.as_dict()
        contract: type[LinearLog] | type[KnnLog] = LinearLog
        choice = f"C={cv.best_C:g}"
    else:
        record = {"model_card": card, "cv": cv_table, "best_k": model.knn_k_}
        contract = KnnLog
        choice = f"k={model.knn_k_}"
    record.update(val_auroc=val_auroc, train_auroc=train_auroc)
    write_contract(workspace.train_log(name), contract, record)
    log.info("%s: %s by CV log loss; train AUROC %.3f, val AUROC %.3f", name, choice, train_auroc, val_auroc)
    return record


def _logits(workspace: Workspace, info: FeaturesInfo) -> tuple[np.ndarray, np.ndarray]:
    """The ImageNet class scores of every image and view; a clear error when the backbone has
    none (the features stage records why in info.json)."""
    if info.logits_dim is None:
        why = info.logits_note or "the features stage wrote no ImageNet class scores"
        raise StageError(f"linear_on_logits cannot run: {why}; remove it from strategies.variants")
    logits = np.load(workspace.require(paths.LOGITS, "features"), mmap_mode="r")
    aug = np.load(workspace.require(paths.AUGMENTED_LOGITS, "features"), mmap_mode="r")
    if logits.shape[1] != info.logits_dim:
        raise StageError(
            f"{paths.LOGITS} has {logits.shape[1]} columns, info.json says {info.logits_dim}; rerun features"
        )
    return logits, aug


def fit_knn(ts: TrainingSet, params: Params) -> tuple[Pipeline, list[dict[str, Any]]]:
    """Choose k from ``strategies.knn_k`` by patient-grouped CV log loss, refit on all of train.

    A k larger than the smallest training fold is left out (with a warning); ties keep the
    smaller k. The fitted pipeline carries ``knn_k_`` and ``cv_info_`` (folds, notes)."""
    y = np.asarray(ts.y, dtype=np.int64)
    n_classes = int(y.max()) + 1
    splits, notes = make_cv_splits(y, ts.groups, params.linear.cv_folds, params.seed, ts.is_augmented)
    smallest = min(len(tr) for tr, _ in splits)
    grid = sorted({k for k in params.strategies.knn_k if k <= smallest})
    if len(grid) < len(set(params.strategies.knn_k)):
        dropped = sorted(set(params.strategies.knn_k) - set(grid))
        notes.append(f"strategies.knn_k {dropped} left out: the smallest CV training fold has {smallest} samples")
        log.warning(notes[-1])
    if not grid:
        raise StageError(f"every k in strategies.knn_k exceeds the smallest CV training fold ({smallest} samples)")
    model = make_pipeline(StandardScaler(), KNeighborsClassifier(weights=KNN_WEIGHTS))
    X = np.asarray(ts.X, dtype=np.float64)
    table = score_grid(model, {"kneighborsclassifier__n_neighbors": grid}, X, y, splits, n_classes)
    table = [{**r, "k": int(r.pop("n_neighbors"))} for r in table]
    table.sort(key=lambda r: r["k"])
    k = int(best_row(table)["k"])
    fitted = model.set_params(kneighborsclassifier__n_neighbors=k).fit(X, y)
    fitted.knn_k_ = k
    fitted.cv_info_ = {"folds_requested": params.linear.cv_folds, "folds_used": len(splits), "warnings": notes}
    return fitted, [{key: r[key] for key in _KNN_COLUMNS} for r in table]


_KNN_COLUMNS = ("k", "train_auroc", "cv_auroc", "cv_auroc_std", "train_log_loss", "cv_log_loss", "cv_log_loss_std")


def _card(
    name: str, model: Pipeline, ts: TrainingSet, info: FeaturesInfo, params: Params, dataset: Dataset, wall: float
) -> dict[str, Any]:
    aug = np.asarray(ts.is_augmented, bool)
    common: dict[str, Any] = {
        "path": name,
        "backbone": info.backbone,
        "weights_source": info.weights_source,
        "weights_sha256": info.weights_sha256,
        "layer_groups": [],
        "frozen": "all backbone layer groups (features computed once, no gradient)",
        "epochs_run": None,
        "best_epoch": None,
        "device": "cpu",
        "image_size": int(dataset.images.shape[1]),
        "n_train_images": int((~aug).sum()),
        "n_train_augmented": int(aug.sum()),
        "n_train_patients": len(np.unique(np.asarray(ts.groups)[~aug])),
        "wall_time_s": round(wall, 2),
        "seed": params.seed,
    }
    if name == "linear_on_logits":
        cv = model.cv_info_
        lr = model.named_steps["logisticregression"]
        return {
            **common,
            "trained": f"logistic regression on the {info.logits_dim} ImageNet class scores of the frozen network",
            "n_params_trained": int(lr.coef_.size + lr.intercept_.size),
            "C": cv.best_C,
            "class_weight": params.linear.class_weight,
            "cv_folds": cv.folds_used,
            "cv_folds_requested": cv.folds_requested,
            "cv_warnings": cv.warnings,
            "C_scoring": cv.search.scoring,
            "C_stop_reason": cv.search.stop_reason,
        }
    cv = model.cv_info_
    return {
        **common,
        "trained": f"k-nearest neighbours on standardised frozen {info.D}-d embeddings (no weights learnt)",
        "n_params_trained": 0,
        "k": model.knn_k_,
        "weights": KNN_WEIGHTS,
        "cv_folds": cv["folds_used"],
        "cv_folds_requested": cv["folds_requested"],
        "cv_warnings": cv["warnings"],
    }
