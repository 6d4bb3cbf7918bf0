"""Where every stage reads and writes, relative to the repository root.

``dvc.yaml`` names the same paths; a test checks that the two agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.params import REPO_ROOT

PROCESSED = Path("data/processed")
# Image stores are folders of .npy shards + store.json (pipeline/store.py: open_store, StoreWriter).
STORE = PROCESSED / "images"  # (N, size, size) float16 in [0, 1], manifest row order
MANIFEST = PROCESSED / "manifest.csv"
SPLITS = PROCESSED / "splits.csv"
AUGMENTED_STORE = PROCESSED / "augmented"  # (M, size, size) float16, augmented.csv order
AUGMENTED_INDEX = PROCESSED / "augmented.csv"  # aug_row, row (source manifest row), copy
AUGMENTED_INDEX_COLUMNS = ("aug_row", "row", "copy")

FEATURES_DIR = Path("data/features")
FEATURES = FEATURES_DIR / "images.npy"  # (N, D) float32, manifest row order
AUGMENTED_FEATURES = FEATURES_DIR / "augmented.npy"  # (M, D) float32, augmented.csv order
FEATURES_INFO = FEATURES_DIR / "info.json"
# The pretrained network's ImageNet class scores (its own classifier on the embeddings): (N, C)
# and (M, C) float32; absent for a backbone without an ImageNet classifier (info.json says why).
LOGITS = FEATURES_DIR / "logits.npy"
AUGMENTED_LOGITS = FEATURES_DIR / "augmented_logits.npy"

MODELS = Path("models")
PREDICTIONS = Path("predictions")
REPORTS = Path("reports")
FIGURES = REPORTS / "figures"
TRAIN_LOGS = REPORTS / "train"  # <path>.json (history + model card); <path>/ dvclive dir
PLOTS = REPORTS / "plots"

INGEST_REPORT = REPORTS / "ingest.json"
SPLIT_REPORT = REPORTS / "split.json"
METRICS = REPORTS / "metrics.json"
EVALUATION = REPORTS / "evaluation.json"
DIAGNOSTICS = REPORTS / "diagnostics.json"
RECOMMENDATION = REPORTS / "recommendation.json"
REPORT_HTML = REPORTS / "report.html"
REPORT_MD = REPORTS / "report.md"
INTROSPECTION_DIR = REPORTS / "introspection"
INTROSPECTION = INTROSPECTION_DIR / "introspection.json"
INTROSPECTION_FIGURES = INTROSPECTION_DIR / "figures"
TRANSFERABILITY = REPORTS / "transferability.json"

PATHS = ("linear", "finetune", "scratch")  # the three main transfer methods, in report order


def methods(params: Any) -> tuple[str, ...]:
    """Every method a run produces predictions for: the three main ones, then
    ``strategies.variants`` in their configured order."""
    return PATHS + tuple(v for v in params.strategies.variants if v not in PATHS)


def predictions_csv(path_name: str) -> Path:
    return PREDICTIONS / f"{path_name}.csv"


def calibration_json(method: str) -> Path:
    """The val-fitted calibration record written beside ``predictions/<method>.csv``."""
    return PREDICTIONS / f"{method}.calibration.json"


def train_log(path_name: str) -> Path:
    return TRAIN_LOGS / f"{path_name}.json"


def repo_path(rel: Path | str) -> Path:
    """Absolute path of a repository-relative artifact."""
    return REPO_ROOT / rel
