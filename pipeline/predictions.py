"""The prediction file contract shared by the three paths.

``predictions/<path>.csv``: ``row`` (manifest row), ``file`` (relative to its DICOM folder),
``split`` (train/val/test/external), ``source`` (``internal`` or the external set's name), ``label``
(class name), ``prob_<class>`` for every class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.common import write_csv
from pipeline.dataset import Dataset

BASE_COLUMNS = ("row", "file", "split", "source", "label")


def prob_columns(classes: tuple[str, ...] | list[str]) -> list[str]:
    return [f"prob_{c}" for c in classes]


def write_predictions(
    path: str | Path, dataset: Dataset, probs: np.ndarray, rows: np.ndarray | None = None
) -> pd.DataFrame:
    """Write one path's class probabilities; ``probs[i]`` belongs to manifest row ``rows[i]``."""
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
    out = pd.DataFrame({c: meta[c].to_numpy() for c in BASE_COLUMNS})
    for j, col in enumerate(prob_columns(dataset.classes)):
        out[col] = probs[:, j]
    out = out.sort_values("row").reset_index(drop=True)
    write_csv(out, path, float_format="%.6f")
    return out


def read_predictions(path: str | Path, classes: tuple[str, ...] | list[str] | None = None) -> pd.DataFrame:
    """Read and check a prediction file (columns, probability columns for ``classes``)."""
    df = pd.read_csv(path)
    missing = [c for c in BASE_COLUMNS if c not in df.columns]
    if classes is not None:
        missing += [c for c in prob_columns(classes) if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    return df
