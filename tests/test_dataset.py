"""pipeline.dataset and the prediction-file contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.contracts import ContractError
from pipeline.dataset import Dataset
from pipeline.predictions import read_calibration, read_predictions, write_predictions


def _dataset(n: int = 6) -> Dataset:
    manifest = pd.DataFrame(
        {
            "row": np.arange(n),
            "file": [f"p{i}/img{i}.dcm" for i in range(n)],
            "patient": [f"pt{i // 2}" for i in range(n)],
            "label": ["normal", "abnormal"] * (n // 2),
            "split": ["train", "train", "val", "val", "test", "external"][:n],
            "source": ["internal"] * 5 + ["site-b"] * (n - 5),
        }
    )
    return Dataset(manifest=manifest, images=np.zeros((n, 4, 4), np.float16), classes=("normal", "abnormal"))


def test_rows_labels_patients() -> None:
    ds = _dataset()
    assert ds.rows("train").tolist() == [0, 1]
    assert ds.rows("external").tolist() == [5]
    assert ds.labels().tolist() == [0, 1, 0, 1, 0, 1]
    assert ds.patients(np.array([2, 3])).tolist() == ["pt1", "pt1"]
    with pytest.raises(ValueError, match="unknown split"):
        ds.rows("holdout")


def test_dataset_rejects_mismatched_store_and_unknown_labels() -> None:
    ds = _dataset()
    with pytest.raises(ValueError, match="store has"):
        Dataset(manifest=ds.manifest, images=np.zeros((3, 4, 4)), classes=ds.classes)
    with pytest.raises(ValueError, match="not in data.classes"):
        Dataset(manifest=ds.manifest, images=ds.images, classes=("normal", "other"))


def test_predictions_roundtrip(tmp_path) -> None:
    ds = _dataset()
    p = np.linspace(0.1, 0.9, 6)
    probs = np.stack([1 - p, p], axis=1)
    out = write_predictions(tmp_path / "linear.csv", ds, probs[::-1], rows=np.arange(6)[::-1])
    back = read_predictions(tmp_path / "linear.csv", ds.classes, raw=True)
    assert list(back.columns) == [
        *("row", "file", "split", "source", "label"),
        *("prob_normal", "prob_abnormal", "raw_prob_normal", "raw_prob_abnormal"),
    ]
    assert back["source"].tolist() == ["internal"] * 5 + ["site-b"]
    assert back["row"].tolist() == list(range(6))
    np.testing.assert_allclose(back["raw_prob_abnormal"], p, atol=1e-6)
    assert out["split"].tolist() == ds.manifest["split"].tolist()
    # The two val rows (one per class) rank correctly: the sigmoid fitted on them is applied to
    # every row, increasing in the raw probability.
    cal = read_calibration(tmp_path / "linear.csv")
    assert cal.calibrated and cal.fitted_on == "val" and cal.n_val_images == 2 and cal.n_val_patients == 1
    assert cal.parameters["abnormal"].a < 0 and out.attrs["calibration"]["calibrated"]
    assert np.all(np.diff(back["prob_abnormal"]) > 0) and not np.allclose(back["prob_abnormal"], p, atol=1e-3)
    np.testing.assert_allclose(back["prob_normal"] + back["prob_abnormal"], 1.0, atol=2e-6)
    back.drop(columns="raw_prob_normal").to_csv(tmp_path / "old.csv", index=False)  # a pre-calibration file
    with pytest.raises(ValueError, match="raw_prob_normal"):
        read_predictions(tmp_path / "old.csv", ds.classes, raw=True)
    with pytest.raises(ContractError, match="calibration.json is missing"):
        read_calibration(tmp_path / "old.csv")


def test_predictions_validate_probabilities(tmp_path) -> None:
    ds = _dataset()
    with pytest.raises(ValueError, match="sum to 1"):
        write_predictions(tmp_path / "x.csv", ds, np.full((6, 2), 0.7))
    with pytest.raises(ValueError, match="shape"):
        write_predictions(tmp_path / "x.csv", ds, np.full((5, 2), 0.5))
