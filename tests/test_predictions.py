"""Calibration on the validation split, in write_predictions: every method's prob_ columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipeline import paths
from pipeline.calibration import calibrate_on_val
from pipeline.contracts import FILES, PredictionCalibration
from pipeline.dataset import Dataset
from pipeline.predictions import calibration_path, read_calibration, read_predictions, write_predictions


def _dataset(n: int = 600, k: int = 2, seed: int = 0, val_classes: list[int] | None = None) -> Dataset:
    """Patients of 2 images; splits by patient (train/val/test/external)."""
    rng = np.random.default_rng(seed)
    classes = ("normal", "abnormal", "effusion")[:k]
    y = rng.integers(0, k, n)
    split = np.array(["train", "val", "test", "external"])[(np.arange(n) // 2) % 4]
    if val_classes is not None:
        bad = (split == "val") & ~np.isin(y, val_classes)
        split[bad] = "train"
    manifest = pd.DataFrame(
        {
            "row": np.arange(n),
            "file": [f"f{i}.dcm" for i in range(n)],
            "patient": [f"p{i // 2}" for i in range(n)],
            "label": np.array(classes)[y],
            "split": split,
            "source": np.where(split == "external", "site-b", "internal"),
        }
    )
    return Dataset(manifest=manifest, images=np.zeros((n, 2, 2), np.float16), classes=classes)


def _probs(ds: Dataset, temperature: float, seed: int = 1) -> np.ndarray:
    """Softmax of logits whose true class is shifted up: well calibrated at temperature 1."""
    rng = np.random.default_rng(seed)
    y, k = ds.labels(), len(ds.classes)
    logits = rng.normal(size=(len(y), k))
    logits[np.arange(len(y)), y] += 1.5
    z = logits / temperature
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_binary_calibration_is_fitted_on_val_only_and_keeps_the_ranking(tmp_path) -> None:
    ds = _dataset()
    raw = _probs(ds, temperature=4.0)  # under-confident
    out = write_predictions(tmp_path / "m.csv", ds, raw)
    rec = read_calibration(tmp_path / "m.csv")
    val = ds.rows("val")
    assert rec.calibrated and rec.n_val_images == len(val) and rec.n_val_patients == len(val) // 2
    assert list(rec.parameters) == ["abnormal"] and rec.parameters["abnormal"].a < -1  # sharpened
    assert rec.val_log_loss_calibrated < rec.val_log_loss_raw
    y = ds.labels()
    for split in ("train", "test", "external"):
        rows = ds.rows(split)
        assert roc_auc_score(y[rows], out.loc[rows, "prob_abnormal"]) == pytest.approx(
            roc_auc_score(y[rows], raw[rows, 1]), abs=1e-12
        )
    np.testing.assert_allclose(out["raw_prob_abnormal"], raw[:, 1])
    # Changing every non-val prediction leaves the fitted sigmoid as it was.
    changed = raw.copy()
    others = np.setdiff1d(np.arange(len(y)), val)
    changed[others] = np.random.default_rng(5).dirichlet([1, 1], len(others))
    write_predictions(tmp_path / "m2.csv", ds, changed)
    assert read_calibration(tmp_path / "m2.csv").parameters == rec.parameters


def test_a_calibrated_model_is_left_nearly_as_it_is() -> None:
    """The sigmoid is on the log-odds: a calibrated model gets a ~ -1, b ~ 0."""
    rng = np.random.default_rng(0)
    n = 20000
    s = rng.normal(0, 2, n)
    p = 1 / (1 + np.exp(-s))
    y = (rng.uniform(size=n) < p).astype(int)
    probs = np.stack([1 - p, p], axis=1)
    out, rec = calibrate_on_val(probs, y, np.ones(n, bool), np.arange(n), ("a", "b"))
    assert rec["parameters"]["b"]["a"] == pytest.approx(-1.0, abs=0.05)
    assert rec["parameters"]["b"]["b"] == pytest.approx(0.0, abs=0.05)
    assert np.abs(out - probs).max() < 0.03


def test_multiclass_one_vs_rest_then_renormalised(tmp_path) -> None:
    ds = _dataset(k=3)
    raw = _probs(ds, temperature=3.0)
    out = write_predictions(tmp_path / "m.csv", ds, raw)
    rec = read_calibration(tmp_path / "m.csv")
    assert rec.calibrated and list(rec.parameters) == list(ds.classes)
    assert "renormalised" in rec.implementation
    cal = out[[f"prob_{c}" for c in ds.classes]].to_numpy()
    np.testing.assert_allclose(cal.sum(axis=1), 1.0, atol=5e-6)
    assert rec.val_log_loss_calibrated < rec.val_log_loss_raw


def test_val_lacking_a_class_is_not_calibrated_and_says_so(tmp_path) -> None:
    ds = _dataset(val_classes=[0])
    raw = _probs(ds, temperature=4.0)
    out = write_predictions(tmp_path / "m.csv", ds, raw)
    rec = read_calibration(tmp_path / "m.csv")
    assert not rec.calibrated and "no image of ['abnormal']" in rec.note and rec.parameters == {}
    assert rec.val_class_counts == {"normal": len(ds.rows("val")), "abnormal": 0}
    np.testing.assert_allclose(out["prob_abnormal"], out["raw_prob_abnormal"])


def test_an_inverted_val_ranking_is_not_calibrated(tmp_path) -> None:
    ds = _dataset()
    raw = _probs(ds, temperature=2.0)
    val = ds.rows("val")
    raw[val] = raw[val][:, ::-1]  # the model ranks val upside down
    out = write_predictions(tmp_path / "m.csv", ds, raw)
    rec = read_calibration(tmp_path / "m.csv")
    assert not rec.calibrated and "ranks validation inversely" in rec.note
    assert rec.parameters["abnormal"].a >= 0  # what was fitted is still recorded
    np.testing.assert_allclose(out["prob_abnormal"], out["raw_prob_abnormal"])


def test_sidecar_names_and_contract(tmp_path) -> None:
    ds = _dataset(n=40)
    write_predictions(tmp_path / "knn.csv", ds, _probs(ds, 1.0))
    assert calibration_path(tmp_path / "knn.csv") == tmp_path / "knn.calibration.json"
    assert calibration_path(paths.predictions_csv("linear")) == paths.calibration_json("linear")
    assert FILES[str(paths.calibration_json("finetune"))] is PredictionCalibration
    df = read_predictions(tmp_path / "knn.csv", ds.classes, raw=True)
    assert len(df) == 40
    with pytest.raises(ValueError, match="needs the classes"):
        read_predictions(tmp_path / "knn.csv", raw=True)
