"""linear stage: logistic regression on frozen embeddings, C by patient-grouped CV on train."""

from __future__ import annotations

import time
from typing import Any

import joblib

from pipeline import paths
from pipeline.common import get_logger
from pipeline.contracts import FeaturesInfo, LinearLog, write_contract
from pipeline.dataset import load_dataset
from pipeline.linear import build_training_set, fit_linear, load_linear_inputs, predict_linear, train_val_auroc
from pipeline.params import Params
from pipeline.predictions import write_predictions
from pipeline.workspace import Workspace

log = get_logger("linear")
MODEL = paths.MODELS / "linear" / "model.joblib"


def linear_model_card(
    model: Any, info: FeaturesInfo, params: Params, image_size: int, wall_time_s: float
) -> dict[str, Any]:
    """What was trained, on what, with which choice of C (model card keys: DESIGN.md)."""
    cv = model.cv_info_
    lr = model.named_steps["logisticregression"]
    return {
        "path": "linear",
        "backbone": info.backbone,
        "weights_source": info.weights_source,
        "weights_sha256": info.weights_sha256,
        "trained": f"logistic regression on frozen {info.D}-d embeddings",
        # No backbone layer group is trained: the embeddings were computed once, without gradients.
        "layer_groups": [],
        "frozen": "all backbone layer groups (features computed once, no gradient)",
        "n_params_trained": int(lr.coef_.size + lr.intercept_.size),
        "epochs_run": None,
        "best_epoch": None,
        "device": "cpu",
        "image_size": image_size,
        "C": cv.best_C,
        "class_weight": params.linear.class_weight,
        "n_train_images": cv.n_images,
        "n_train_augmented": cv.n_augmented,
        "n_train_patients": cv.n_patients,
        "cv_folds": cv.folds_used,
        "cv_folds_requested": cv.folds_requested,
        "cv_warnings": cv.warnings,
        "C_scoring": cv.search.scoring,
        "C_stop_reason": cv.search.stop_reason,
        "wall_time_s": round(wall_time_s, 2),
        "seed": params.seed,
    }


def run_linear(params: Params, workspace: Workspace) -> dict[str, Any]:
    """Fit on train (+ its augmented views), predict every manifest row, write the model, the
    predictions and reports/train/linear.json."""
    start = time.perf_counter()
    dataset = load_dataset(params, root=workspace.root)
    inputs = load_linear_inputs(workspace.root)
    features, info = inputs["features"], inputs["info"]

    train_rows = dataset.rows("train")
    ts = build_training_set(
        dataset, features, inputs["aug_features"], inputs["aug_index"], train_rows, params.linear.use_augmented
    )
    model, cv_table = fit_linear(ts.X, ts.y, ts.groups, params.linear, params.seed, ts.is_augmented)
    cv = model.cv_info_

    probs = predict_linear(model, features)  # every manifest row, all splits
    write_predictions(workspace.predictions("linear"), dataset, probs)
    model_path = workspace.path(MODEL)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, model_path)
    train_auroc, val_auroc = train_val_auroc(dataset, probs)
    wall = time.perf_counter() - start
    card = linear_model_card(model, info, params, int(dataset.images.shape[1]), wall)
    record = {
        "model_card": card,
        "cv": cv_table,
        "best_C": cv.best_C,
        "C_search": cv.search.as_dict(),
        "val_auroc": val_auroc,
        "train_auroc": train_auroc,
    }
    write_contract(workspace.train_log("linear"), LinearLog, record)
    log.info(
        "C=%g by CV log loss (%s; %d-fold grouped CV, %d images + %d views, %d patients): "
        "train AUROC %.3f, val AUROC %.3f, %.1f s",
        cv.best_C,
        cv.search.stop_reason,
        cv.folds_used,
        cv.n_images,
        cv.n_augmented,
        cv.n_patients,
        train_auroc,
        val_auroc,
        wall,
    )
    return record
