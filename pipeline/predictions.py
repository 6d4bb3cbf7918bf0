"""The prediction file contract shared by every method (linear, finetune, scratch, the variants).

``predictions/<method>.csv``: ``row`` (manifest row), ``file`` (relative to its DICOM folder),
``split`` (train/val/test/external), ``source`` (``internal`` or the external set's name), ``label``
(class name), then ``prob_<class>`` for every class: the probabilities **calibrated on the
validation split** (sigmoid, :mod:`pipeline.calibration`), then ``raw_prob_<class>``: the model's
own. Beside it ``predictions/<method>.calibration.json`` records the fitted sigmoid (contract
:class:`pipeline.contracts.PredictionCalibration`), or why there is none (then ``prob_`` =
``raw_prob_``). Thresholds and calibration metrics use ``prob_``; a binary AUROC is the same on
both (the calibration is increasing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.calibration import calibrate_on_val
from pipeline.common import write_csv
from pipeline.contracts import ContractError, PredictionCalibration, read_contract, write_contract
from pipeline.dataset import Dataset

BASE_COLUMNS = ("row", "file", "split", "source", "label")


def prob_columns(classes: tuple[str, ...] | list[str]) -> list[str]:
    """The calibrated probability columns."""
    return [f"prob_{c}" for c in classes]


def raw_prob_columns(classes: tuple[str, ...] | list[str]) -> list[str]:
    """The model's own (uncalibrated) probability columns."""
    return [f"raw_prob_{c}" for c in classes]


def calibration_path(predictions_csv: str | Path) -> Path:
    """``predictions/<method>.csv`` -> ``predictions/<method>.calibration.json``."""
    return Path(predictions_csv).with_suffix(".calibration.json")


def write_predictions(
    path: str | Path, dataset: Dataset, probs: np.ndarray, rows: np.ndarray | None = None
) -> pd.DataFrame:
    """Write one method's class probabilities; ``probs[i]`` belongs to manifest row ``rows[i]``.

    The sigmoid calibration is fitted on the ``val`` rows among ``rows`` and applied to all of
    them; the record goes to :func:`calibration_path` (and ``DataFrame.attrs["calibration"]``).
    """
    rows = np.arange(len(dataset.manifest)) if rows is None else np.asarray(rows, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = len(dataset.classes)
    if probs.shape != (len(rows), n_classes):
        raise ValueError(f"probs has shape {probs.shape}, expected {(len(rows), n_classes)}")
    if not np.all(np.isfinite(probs)):
        raise ValueError("probs contain NaN or inf")
    if not np.allclose(probs.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("each row of probs must sum to 1")
    meta = dataset.manifest.iloc[rows]
    calibrated, record = calibrate_on_val(
        probs,
        dataset.labels()[rows],
        meta["split"].to_numpy() == "val",
        dataset.patients(rows),
        dataset.classes,
    )
    out = pd.DataFrame({c: meta[c].to_numpy() for c in BASE_COLUMNS})
    for j, col in enumerate(prob_columns(dataset.classes)):
        out[col] = calibrated[:, j]
    for j, col in enumerate(raw_prob_columns(dataset.classes)):
        out[col] = probs[:, j]
    out = out.sort_values("row").reset_index(drop=True)
    write_csv(out, path, float_format="%.6f")
    write_contract(calibration_path(path), PredictionCalibration, record)
    out.attrs["calibration"] = record
    return out


def read_predictions(
    path: str | Path, classes: tuple[str, ...] | list[str] | None = None, raw: bool = False
) -> pd.DataFrame:
    """Read and check a prediction file: the base columns, ``prob_<class>`` for ``classes``, and
    with ``raw`` also ``raw_prob_<class>`` (what evaluation needs)."""
    df = pd.read_csv(path)
    missing = [c for c in BASE_COLUMNS if c not in df.columns]
    if classes is not None:
        missing += [c for c in prob_columns(classes) if c not in df.columns]
        if raw:
            missing += [c for c in raw_prob_columns(classes) if c not in df.columns]
    elif raw:
        raise ValueError("read_predictions(raw=True) needs the classes")
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    return df


def read_calibration(predictions_csv: str | Path) -> PredictionCalibration:
    """The calibration record written beside a prediction file; a ContractError when it is
    absent or does not match its contract (the prediction file is then stale or hand-made)."""
    p = calibration_path(predictions_csv)
    if not p.is_file():
        raise ContractError(
            f"{p} is missing: every prediction file is written with its calibration record "
            f"(pipeline.predictions.write_predictions); rerun the stage that wrote {Path(predictions_csv).name}"
        )
    return read_contract(p, PredictionCalibration)
