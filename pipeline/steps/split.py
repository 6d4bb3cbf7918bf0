"""split stage: patient-level, label-stratified train/val/test split of the manifest."""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipeline import paths
from pipeline.common import get_logger, write_csv
from pipeline.contracts import SplitReport, write_contract
from pipeline.params import Params
from pipeline.splits import make_splits, split_report
from pipeline.workspace import Workspace

log = get_logger("split")


def read_manifest(workspace: Workspace) -> pd.DataFrame:
    """data/processed/manifest.csv with text columns kept as text ("NA" stays a sex or view)."""
    path = workspace.require(paths.MANIFEST, "ingest")
    return pd.read_csv(
        path,
        keep_default_na=False,
        na_values=[""],
        dtype={"patient": str, "file": str, "view": str, "sex": str, "source": str},
    )


def run_split(params: Params, workspace: Workspace) -> dict[str, Any]:
    manifest = read_manifest(workspace)
    splits = make_splits(
        manifest,
        val_fraction=params.split.val_fraction,
        test_fraction=params.split.test_fraction,
        seed=params.seed,
        classes=list(params.data.classes),
        max_patient_share=params.split.max_patient_share,
    )
    forced = splits.attrs.get("forced_to_train", [])
    report = split_report(
        splits,
        manifest,
        seed=params.seed,
        val_fraction=params.split.val_fraction,
        test_fraction=params.split.test_fraction,
        stratified_by="patient majority label",
        max_patient_share=params.split.max_patient_share,
    )
    if forced:
        log.info(
            "%d patient(s) kept in train: each would hold more than %.0f%% of val or test "
            "images (split.max_patient_share)",
            len(forced),
            100 * params.split.max_patient_share,
        )
    write_csv(splits, workspace.splits)
    write_contract(workspace.path(paths.SPLIT_REPORT), SplitReport, report)
    for name, r in report.items():
        if isinstance(r, dict) and "patients" in r:
            log.info("%-8s %4d patients %5d images %s", name, r["patients"], r["images"], r["labels"])
    return report
