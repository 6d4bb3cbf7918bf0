"""split stage: patient-level, label-stratified train/val/test split of the manifest."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from pipeline import paths
from pipeline.common import get_logger
from pipeline.contracts import SplitReport, write_contract
from pipeline.params import Params
from pipeline.splits import make_splits, split_report
from pipeline.workspace import Workspace

log = get_logger("split")


def read_manifest(workspace: Workspace) -> pd.DataFrame:
    """data/processed/manifest.csv with text columns kept as text ("NA" stays a sex or view)."""
    path = workspace.require(paths.MANIFEST, "ingest")
    return pd.read_csv(path, keep_default_na=False, na_values=[""],
                       dtype={"patient": str, "file": str, "view": str, "sex": str, "source": str})


def run_split(params: Params, workspace: Workspace) -> dict[str, Any]:
    manifest = read_manifest(workspace)
    splits = make_splits(
        manifest,
        val_fraction=params.split.val_fraction,
        test_fraction=params.split.test_fraction,
        seed=params.seed,
        classes=list(params.data.classes),
    )
    report = split_report(
        splits, manifest, seed=params.seed, val_fraction=params.split.val_fraction,
        test_fraction=params.split.test_fraction, stratified_by="patient majority label",
    )
    out = workspace.splits
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    splits.to_csv(tmp, index=False)
    os.replace(tmp, out)
    write_contract(workspace.path(paths.SPLIT_REPORT), SplitReport, report)
    for name, r in report.items():
        if isinstance(r, dict) and "patients" in r:
            log.info("%-8s %4d patients %5d images %s", name, r["patients"], r["images"], r["labels"])
    return report
