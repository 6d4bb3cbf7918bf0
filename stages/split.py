"""split stage: patient-level, label-stratified train/val/test split of the manifest.

Reads params `seed`, `data.classes`, `split.*` and data/processed/manifest.csv; writes
data/processed/splits.csv (row, patient, label, split; external rows: split = external) and
reports/split.json (per split: patients, images, labels, sex, view). Fails if a patient would be
in two of train/val/test.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd

from pipeline import paths
from pipeline.common import get_logger, write_json
from pipeline.params import REPO_ROOT, ParamsError, load_params
from pipeline.splits import PatientLeakError, SplitError, make_splits, split_report

log = get_logger("split")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--out-root", type=Path, default=REPO_ROOT,
                        help="folder holding data/processed and reports (default: the repository root)")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
    except ParamsError as err:
        raise SystemExit(f"split: {err}") from None
    manifest_path = args.out_root / paths.MANIFEST
    if not manifest_path.is_file():
        raise SystemExit(f"split: {manifest_path} not found; run the ingest stage first")
    manifest = pd.read_csv(manifest_path, keep_default_na=False, na_values=[""],
                           dtype={"patient": str, "file": str, "view": str, "sex": str})
    try:
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
    except (SplitError, PatientLeakError) as err:
        raise SystemExit(f"split: {err}") from None

    out = args.out_root / paths.SPLITS
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    splits.to_csv(tmp, index=False)
    os.replace(tmp, out)
    write_json(args.out_root / paths.SPLIT_REPORT, report)
    for name in ("train", "val", "test", "external"):
        if name in report:
            r = report[name]
            log.info("%-8s %4d patients %5d images %s", name, r["patients"], r["images"], r["labels"])


if __name__ == "__main__":
    main()
