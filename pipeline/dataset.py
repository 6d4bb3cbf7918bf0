"""The ingested, split data set as the modelling stages see it: manifest + split + image store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import paths
from pipeline.params import REPO_ROOT, Params
from pipeline.store import open_store

SPLIT_NAMES = ("train", "val", "test", "external")


@dataclass(frozen=True)
class Dataset:
    """Manifest rows (with their split) beside the store they index.

    ``manifest.row`` equals the DataFrame position and the store row, so ``images[r]`` is the
    image of manifest row ``r``.
    """

    manifest: pd.DataFrame
    images: Any  # pipeline.store.Images: the ImageStore (or an (N, S, S) ndarray in tests)
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.manifest)
        if len(self.images) != n:
            raise ValueError(f"store has {len(self.images)} images but the manifest {n} rows")
        if not np.array_equal(self.manifest["row"].to_numpy(), np.arange(n)):
            raise ValueError("manifest rows must be 0..N-1 in order")
        unknown = sorted(set(self.manifest["label"]) - set(self.classes))
        if unknown:
            raise ValueError(f"manifest labels {unknown} are not in data.classes {list(self.classes)}")

    def rows(self, split: str) -> np.ndarray:
        """Manifest rows of one split (train/val/test/external), in row order."""
        if split not in SPLIT_NAMES:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLIT_NAMES}")
        return self.manifest.index[self.manifest["split"] == split].to_numpy()

    def labels(self) -> np.ndarray:
        """Class index (position in data.classes) of every manifest row."""
        lookup = {c: i for i, c in enumerate(self.classes)}
        return self.manifest["label"].map(lookup).to_numpy(dtype=np.int64)

    def patients(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Pseudonymous patient id of the given rows (all rows when None)."""
        col = self.manifest["patient"].to_numpy()
        return col if rows is None else col[np.asarray(rows)]


def load_dataset(params: Params, root: Path = REPO_ROOT, mmap: bool = True) -> Dataset:
    """Join manifest.csv and splits.csv and open the store read-only (memory-mapped shards;
    ``mmap=False`` reads it into memory)."""
    manifest = pd.read_csv(root / paths.MANIFEST, keep_default_na=False, na_values=[""])
    splits = pd.read_csv(root / paths.SPLITS, keep_default_na=False)
    if "split" in manifest.columns:
        manifest = manifest.drop(columns="split")
    merged = manifest.merge(splits[["row", "split"]], on="row", how="left", validate="one_to_one")
    missing = merged["split"].isna()
    if missing.any():
        raise ValueError(f"{int(missing.sum())} manifest rows have no split; rerun the split stage (dvc repro split)")
    merged = merged.sort_values("row").reset_index(drop=True)
    images = open_store(root / paths.STORE) if mmap else np.asarray(open_store(root / paths.STORE))
    return Dataset(manifest=merged, images=images, classes=tuple(params.data.classes))
