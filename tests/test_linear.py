"""pipeline.linear: patient-grouped CV over C, predictions, the learning-curve helper."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.dataset import Dataset
from pipeline.linear import (
    CV_COLUMNS,
    build_training_set,
    fit_linear,
    fit_predict_linear,
    make_cv_splits,
    predict_linear,
)
from pipeline.params import REPO_ROOT, Linear, load_params

GRID = [0.001, 0.1, 10.0]


def _cfg(**over) -> Linear:
    base = dict(C_grid=GRID, cv_folds=3, class_weight="balanced", max_iter=500, use_augmented=True)
    base.update(over)
    return Linear(**base)


def _problem(
    n_patients: int = 24, per_patient: int = 2, dim: int = 8, sep: float = 3.0, n_classes: int = 2, seed: int = 0
):
    """Patients with 1-2 images each; the class shifts the mean of the first feature(s)."""
    rng = np.random.default_rng(seed)
    patient_class = np.arange(n_patients) % n_classes
    groups = np.repeat([f"p{i:02d}" for i in range(n_patients)], per_patient)
    y = np.repeat(patient_class, per_patient)
    X = rng.normal(size=(len(y), dim))
    X[np.arange(len(y)), y % dim] += sep
    return X, y, groups


def _with_views(X, y, groups, copies=2, seed=1):
    """Append `copies` noisy views of every sample, carrying the source's label and patient."""
    rng = np.random.default_rng(seed)
    Xa = np.repeat(X, copies, axis=0) + rng.normal(scale=0.1, size=(len(X) * copies, X.shape[1]))
    aug = np.r_[np.zeros(len(X), bool), np.ones(len(Xa), bool)]
    return np.vstack([X, Xa]), np.r_[y, np.repeat(y, copies)], np.r_[groups, np.repeat(groups, copies)], aug


def test_grouped_cv_never_leaks_a_patient_or_scores_views() -> None:
    X, y, groups, aug = _with_views(*_problem())
    splits, notes = make_cv_splits(y, groups, n_folds=3, seed=42, is_augmented=aug)
    assert len(splits) == 3 and notes == []
    seen_test = []
    for tr, te in splits:
        assert set(groups[tr]).isdisjoint(groups[te])
        assert not aug[te].any()  # scored on original images only
        # every sample (original or view) of a training patient is on the training side
        assert set(tr) == set(np.flatnonzero(np.isin(groups, groups[tr])))
        assert set(y[te]) == {0, 1} and set(y[tr]) == {0, 1}
        seen_test.extend(te)
    assert sorted(seen_test) == list(np.flatnonzero(~aug))  # each original held out exactly once


def test_fit_picks_c_by_cv_log_loss_and_reports_curve() -> None:
    X, y, groups, aug = _with_views(*_problem(sep=1.0))
    model, table = fit_linear(X, y, groups, _cfg(), seed=42, is_augmented=aug)
    assert [r["C"] for r in table] == sorted(GRID)
    assert all(set(r) == set(CV_COLUMNS) for r in table)
    best = model.cv_info_.best_C
    assert best in GRID and best == model.named_steps["logisticregression"].C
    assert best == min(table, key=lambda r: r["cv_log_loss"])["C"]
    # AUROC would have picked the strongest regularisation here; log loss does not.
    assert max(table, key=lambda r: (r["cv_auroc"], -r["C"]))["C"] == 0.001 != best
    assert all(0.0 <= r["cv_auroc"] <= 1.0 and r["cv_auroc_std"] >= 0 and r["cv_log_loss"] > 0 for r in table)
    assert all(r["extension"] == 0 for r in table)
    info = model.cv_info_
    assert (info.folds_used, info.n_images, info.n_augmented, info.n_patients) == (3, 48, 96, 24)
    assert info.search.stop == "interior" and info.search.searched_grid == sorted(GRID)
    assert info.search.scoring == "neg_log_loss" and info.warnings == []


def test_separable_problem_auroc_near_one_and_probabilities() -> None:
    X, y, groups = _problem(n_patients=40, sep=4.0)
    Xt, yt, _ = _problem(n_patients=20, sep=4.0, seed=9)
    model, table = fit_linear(X, y, groups, _cfg(), seed=0)
    probs = predict_linear(model, Xt)
    assert probs.shape == (len(yt), 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert probs.min() >= 0 and probs.max() <= 1
    assert roc_auc_score(yt, probs[:, 1]) > 0.97
    assert max(r["cv_auroc"] for r in table) > 0.95


def test_multiclass_probabilities_sum_to_one() -> None:
    X, y, groups = _problem(n_patients=30, n_classes=3, sep=3.0)
    model, table = fit_linear(X, y, groups, _cfg(), seed=0)
    probs = predict_linear(model, X)
    assert probs.shape == (len(y), 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert [r["C"] for r in table][: len(GRID)] == GRID  # separable: extended past 10


def test_same_seed_identical_probabilities() -> None:
    X, y, groups, aug = _with_views(*_problem(sep=1.0))
    p1 = predict_linear(fit_linear(X, y, groups, _cfg(), 7, aug)[0], X)
    p2 = predict_linear(fit_linear(X, y, groups, _cfg(), 7, aug)[0], X)
    np.testing.assert_array_equal(p1, p2)


def test_too_few_patients_reduces_folds_with_a_recorded_warning(caplog) -> None:
    X, y, groups = _problem(n_patients=20)
    # Only 3 patients of class 1 remain: 5 folds cannot each hold one.
    keep = (y == 0) | np.isin(groups, ["p01", "p03", "p05"])
    with caplog.at_level(logging.WARNING):
        model, _ = fit_linear(X[keep], y[keep], groups[keep], _cfg(cv_folds=5), seed=0)
    info = model.cv_info_
    assert (info.folds_requested, info.folds_used) == (5, 3)
    assert info.warnings and "reduced from 5 to 3" in info.warnings[0]
    assert "reduced from 5 to 3" in caplog.text
    one = (y == 0) | (groups == "p01")
    with pytest.raises(ValueError, match="fewer than 2"):
        fit_linear(X[one], y[one], groups[one], _cfg(), seed=0)


def test_rejects_bad_labels_and_features() -> None:
    X, y, groups = _problem()
    with pytest.raises(ValueError, match="every class index"):
        fit_linear(X, y + 1, groups, _cfg(), seed=0)
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_linear(X, y, groups, _cfg(), seed=0)


def _dataset(n_patients: int = 24, dim: int = 8):
    X, y, groups = _problem(n_patients=n_patients, dim=dim)
    n = len(y)
    split = np.where(np.isin(groups, [f"p{i:02d}" for i in range(18)]), "train", "val")
    manifest = pd.DataFrame(
        {
            "row": np.arange(n),
            "file": [f"f{i}.dcm" for i in range(n)],
            "patient": groups,
            "label": np.where(y == 1, "abnormal", "normal"),
            "split": split,
        }
    )
    ds = Dataset(manifest=manifest, images=np.zeros((n, 4, 4), np.float16), classes=("normal", "abnormal"))
    return ds, X.astype(np.float32)


def test_fit_predict_linear_uses_only_views_of_its_train_rows() -> None:
    ds, feats = _dataset()
    params = load_params(REPO_ROOT / "params.yaml")
    params = params.model_copy(update={"linear": _cfg()})
    train = ds.rows("train")
    aug_index = pd.DataFrame(
        {"aug_row": np.arange(2 * len(train)), "row": np.repeat(train, 2), "copy": np.tile([0, 1], len(train))}
    )
    aug_feats = np.repeat(feats[train], 2, axis=0) + 0.05
    subset = train[:24]  # a learning-curve fraction: the first 12 training patients
    ts = build_training_set(ds, feats, aug_feats, aug_index, subset, use_augmented=True)
    assert len(ts.y) == 24 * 3 and set(ts.rows) == set(subset)
    np.testing.assert_array_equal(ts.groups, ds.patients(ts.rows))
    probs, table, best_C = fit_predict_linear(ds, feats, aug_feats, aug_index, subset, ds.rows("val"), params)
    assert probs.shape == (len(ds.rows("val")), 2) and best_C in [r["C"] for r in table]
    assert set(GRID) <= {r["C"] for r in table}
    off = build_training_set(ds, feats, aug_feats, aug_index, subset, use_augmented=False)
    assert len(off.y) == 24 and not off.is_augmented.any()
    leaky = aug_index.assign(row=np.r_[ds.rows("val")[:2], aug_index["row"].to_numpy()[2:]])
    with pytest.raises(ValueError, match="non-train rows"):
        build_training_set(ds, feats, aug_feats, leaky, subset, use_augmented=True)


def test_choice_at_an_edge_extends_the_grid_until_inside() -> None:
    X, y, groups = _problem()  # separable: weak regularisation wins
    model, table = fit_linear(X, y, groups, _cfg(C_grid=[1e-6, 1e-5]), seed=0)
    search = model.cv_info_.search
    assert search.initial_grid == [1e-6, 1e-5] and search.extensions >= 1
    assert [r["C"] for r in table] == search.searched_grid == sorted(search.searched_grid)
    np.testing.assert_allclose(search.searched_grid[2:], [1e-5 * 10**i for i in range(1, search.extensions + 1)])
    assert [r["extension"] for r in table] == [0, 0, *range(1, search.extensions + 1)]
    assert search.stop == "interior" and table[0]["C"] < search.best_C < table[-1]["C"]
    assert search.best_C == min(table, key=lambda r: r["cv_log_loss"])["C"] == model.cv_info_.best_C
    assert search.best_C == model.named_steps["logisticregression"].C


def test_extension_stops_at_a_bound_and_says_so(caplog) -> None:
    X, y, groups = _problem()
    with caplog.at_level(logging.WARNING):
        model, table = fit_linear(X, y, groups, _cfg(C_grid=[1e-6, 1e-5], C_max=1e-4), seed=0)
    search = model.cv_info_.search
    assert search.stop == "bound" and search.best_C == 1e-4 and [r["C"] for r in table] == [1e-6, 1e-5, 1e-4]
    assert "linear.C_max" in search.stop_reason and search.stop_reason in model.cv_info_.warnings
    assert "outside [linear.C_min, linear.C_max]" in caplog.text


def test_extension_stops_on_a_flat_score() -> None:
    X, y, groups = _problem()
    noise = np.random.default_rng(3).normal(size=X.shape)  # no signal: the constant model wins
    model, table = fit_linear(noise, y, groups, _cfg(C_grid=[1e-3, 1e-2]), seed=0)
    search = model.cv_info_.search
    assert search.stop == "plateau" and search.extensions >= 1 and search.best_C == table[0]["C"] < 1e-3
    assert table[1]["cv_log_loss"] - table[0]["cv_log_loss"] < _cfg().extend_tol
    assert "linear.extend_tol" in search.stop_reason and search.stop_reason in model.cv_info_.warnings


def test_a_single_c_is_no_search() -> None:
    X, y, groups = _problem()
    single, table = fit_linear(X, y, groups, _cfg(C_grid=[0.1]), seed=0)
    assert single.cv_info_.search.stop == "single_value" and [r["C"] for r in table] == [0.1]
    assert single.cv_info_.warnings == []


def test_c_grid_must_lie_within_the_bounds() -> None:
    with pytest.raises(ValueError, match="outside"):
        _cfg(C_grid=[1e-3, 10.0], C_max=1.0)
