"""linear stage: logistic regression on frozen embeddings, C by patient-grouped CV on train.

Reads params `seed`, `data.classes`, `data.positive_class` and `linear.*` only (so a linear.*
change reruns this stage and what follows, never the backbone). Inputs: data/features/
(images.npy, augmented.npy, info.json), data/processed/{manifest,splits,augmented}.csv.
Writes predictions/linear.csv (every manifest row), models/linear/model.joblib and
reports/train/linear.json.
"""

from __future__ import annotations

import argparse
import time

import joblib

from pipeline import paths
from pipeline.common import get_logger, write_json
from pipeline.dataset import load_dataset
from pipeline.linear import auroc, build_training_set, fit_linear, load_linear_inputs, predict_linear
from pipeline.params import REPO_ROOT, load_params
from pipeline.predictions import write_predictions

log = get_logger("linear")
MODEL = paths.MODELS / "linear" / "model.joblib"


def _info_value(info: dict, key: str) -> object:
    """One key of the features' info.json; a missing one is an error, not a guess."""
    if key not in info:
        raise SystemExit(f"linear: {paths.FEATURES_INFO} has no {key!r}; rerun the features stage")
    return info[key]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    start = time.perf_counter()

    dataset = load_dataset(params, root=REPO_ROOT)
    try:
        inputs = load_linear_inputs(REPO_ROOT)
    except ValueError as err:
        raise SystemExit(f"linear: {err}") from None
    features, aug_features, aug_index, info = (
        inputs["features"], inputs["aug_features"], inputs["aug_index"], inputs["info"]
    )
    dim = int(features.shape[1])

    train_rows = dataset.rows("train")
    ts = build_training_set(
        dataset, features, aug_features, aug_index, train_rows, params.linear.use_augmented
    )
    model, cv_table = fit_linear(ts.X, ts.y, ts.groups, params.linear, params.seed, ts.is_augmented)
    cv = model.cv_info_

    probs = predict_linear(model, features)  # every manifest row, all splits
    write_predictions(paths.repo_path(paths.predictions_csv("linear")), dataset, probs)
    model_path = paths.repo_path(MODEL)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, model_path)

    labels = dataset.labels()
    val_rows = dataset.rows("val")
    train_auroc = auroc(labels[train_rows], probs[train_rows])
    val_auroc = auroc(labels[val_rows], probs[val_rows]) if val_rows.size else float("nan")
    lr = model.named_steps["logisticregression"]
    wall = time.perf_counter() - start

    card = {
        "path": "linear",
        "backbone": _info_value(info, "backbone"),
        "weights_source": _info_value(info, "weights_source"),
        "weights_sha256": _info_value(info, "weights_sha256"),
        "trained": f"logistic regression on frozen {dim}-d embeddings",
        # No backbone layer group is trained: the embeddings were computed once, without gradients.
        "layer_groups": [],
        "frozen": "all backbone layer groups (features computed once, no gradient)",
        "n_params_trained": int(lr.coef_.size + lr.intercept_.size),
        "epochs_run": None,
        "best_epoch": None,
        "device": "cpu",
        "image_size": int(dataset.images.shape[1]),
        "C": cv.best_C,
        "class_weight": params.linear.class_weight,
        "n_train_images": cv.n_images,
        "n_train_augmented": cv.n_augmented,
        "n_train_patients": cv.n_patients,
        "cv_folds": cv.folds_used,
        "cv_folds_requested": cv.folds_requested,
        "cv_warnings": cv.warnings,
        "wall_time_s": round(wall, 2),
        "seed": params.seed,
    }
    write_json(
        paths.repo_path(paths.train_log("linear")),
        {"model_card": card, "cv": cv_table, "best_C": cv.best_C, "val_auroc": val_auroc,
         "train_auroc": train_auroc},
    )
    log.info(
        "C=%g (%d-fold grouped CV, %d images + %d views, %d patients): train AUROC %.3f, val AUROC %.3f, %.1f s",
        cv.best_C, cv.folds_used, cv.n_images, cv.n_augmented, cv.n_patients, train_auroc, val_auroc, wall,
    )


if __name__ == "__main__":
    main()
