"""The frozen-feature variants (pipeline.feature_variants): linear_on_logits and knn."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import repo_params, write_params
from test_steps import feature_workspace

from pipeline import paths
from pipeline.contracts import KnnLog, LinearLog, read_contract, train_log_model
from pipeline.errors import StageError
from pipeline.feature_variants import run_feature_variant
from pipeline.predictions import read_calibration, read_predictions
from pipeline.steps.variant import run_variant


def _params(workspace, variants, **strategies):
    raw = repo_params()
    raw["linear"].update(cv_folds=3, C_grid=[0.01, 0.1, 1.0])
    raw["strategies"].update(variants=variants, **strategies)
    return write_params(workspace.root, raw)


def _add_logits(workspace, n_classes: int = 5, informative: bool = True) -> None:
    """ImageNet-like class scores: a fixed random linear map of the features (+ the logits' info)."""
    feats = np.load(workspace.path(paths.FEATURES))
    aug = np.load(workspace.path(paths.AUGMENTED_FEATURES))
    w = np.random.default_rng(3).normal(size=(feats.shape[1], n_classes))
    if not informative:
        w[:] = 0.0
    np.save(workspace.path(paths.LOGITS), (feats @ w).astype(np.float32))
    np.save(workspace.path(paths.AUGMENTED_LOGITS), (aug @ w).astype(np.float32))
    info = json.loads(workspace.path(paths.FEATURES_INFO).read_text())
    info.update(logits_dim=n_classes, logits_note=None)
    workspace.path(paths.FEATURES_INFO).write_text(json.dumps(info))


def test_knn_chooses_k_by_grouped_cv_and_writes_the_method_contracts(workspace) -> None:
    n = feature_workspace(workspace)
    params = _params(workspace, ["knn"], knn_k=[5, 3, 7, 200])
    record = run_variant(params, workspace, "knn")
    log = read_contract(workspace.train_log("knn"), KnnLog)
    assert train_log_model("knn") is KnnLog
    # k=200 exceeds every CV training fold (~32 samples): left out, and said so
    assert [r.k for r in log.cv] == [3, 5, 7] and log.best_k in (3, 5, 7)
    assert any("[200] left out" in w for w in log.model_card.cv_warnings)
    best = min(log.cv, key=lambda r: (r.cv_log_loss, r.k))
    assert log.best_k == best.k == record["best_k"] == log.model_card.k
    card = log.model_card
    assert card.path == "knn" and card.n_params_trained == 0 and card.cv_folds == 3
    assert (card.n_train_images, card.n_train_augmented, card.n_train_patients) == (24, 24, 12)
    preds = read_predictions(workspace.predictions("knn"), ("normal", "abnormal"), raw=True)
    assert preds["row"].tolist() == list(range(n))
    assert read_calibration(workspace.predictions("knn")).fitted_on == "val"
    assert log.val_auroc > 0.8  # separated clusters: neighbours mostly share the class (8 val images)
    assert workspace.path("models/knn/model.joblib").is_file()


def test_linear_on_logits_fits_the_class_scores_not_the_features(workspace) -> None:
    feature_workspace(workspace)
    _add_logits(workspace)
    params = _params(workspace, ["linear_on_logits"])
    run_variant(params, workspace, "linear_on_logits")
    log = read_contract(workspace.train_log("linear_on_logits"), LinearLog)
    card = log.model_card
    assert card.path == "linear_on_logits" and "5 ImageNet class scores" in card.trained
    assert card.n_params_trained == 5 + 1  # one coefficient per class score + intercept
    assert log.C_search is not None and log.C_search.initial_grid == [0.01, 0.1, 1.0]
    assert log.val_auroc > 0.8
    # uninformative (all-zero) class scores give chance-level validation: it reads the logits
    _add_logits(workspace, informative=False)
    run_feature_variant("linear_on_logits", params, workspace)
    assert read_contract(workspace.train_log("linear_on_logits"), LinearLog).val_auroc == pytest.approx(0.5)


def test_linear_on_logits_without_class_scores_is_a_clear_error(workspace) -> None:
    feature_workspace(workspace)  # info.json has no logits_dim: a headless backbone
    params = _params(workspace, ["linear_on_logits"])
    with pytest.raises(StageError, match="linear_on_logits cannot run"):
        run_variant(params, workspace, "linear_on_logits")


def test_an_unlisted_variant_does_not_run(workspace) -> None:
    feature_workspace(workspace)
    with pytest.raises(StageError, match="not listed in strategies.variants"):
        run_variant(_params(workspace, ["lp_ft"]), workspace, "knn")
