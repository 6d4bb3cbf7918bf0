"""evaluate stage: clinical metrics with confidence intervals for every transfer path.

Reads params `seed`, `data.classes`, `data.positive_class`, `data.external` and `evaluate.*`,
data/processed/manifest.csv and the predictions/<path>.csv files that exist (at least one);
writes reports/metrics.json (flat, for `dvc metrics show`), reports/evaluation.json (everything,
schema in DESIGN.md) and the `dvc plots` CSVs under reports/plots/{roc,pr,calibration}/.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from pipeline import paths
from pipeline.common import get_logger, write_json
from pipeline.evaluation import evaluate_predictions, write_plot_data
from pipeline.params import REPO_ROOT, load_params
from pipeline.predictions import read_predictions

log = get_logger("evaluate")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument(
        "--root", default=str(REPO_ROOT), help="folder the artifact paths are relative to (default: repo)"
    )
    args = parser.parse_args(argv)
    params = load_params(args.params)
    root = Path(args.root)

    manifest_path = root / paths.MANIFEST
    if not manifest_path.exists():
        raise SystemExit(f"evaluate: {paths.MANIFEST} not found; run the ingest stage first")
    # keep_default_na=False: a sex of "NA" or a view "N/A" stays a string; only empty is missing.
    manifest = pd.read_csv(manifest_path, keep_default_na=False, na_values=[""])

    predictions = {}
    for name in paths.PATHS:
        p = root / paths.predictions_csv(name)
        if p.exists():
            predictions[name] = read_predictions(p, params.data.classes)
        else:
            log.warning("%s not found: path %s is not evaluated", paths.predictions_csv(name), name)
    if not predictions:
        raise SystemExit(
            "evaluate: no prediction files found (expected any of "
            + ", ".join(str(paths.predictions_csv(n)) for n in paths.PATHS)
            + "); run the linear, finetune or scratch stage first"
        )

    start = time.perf_counter()
    metrics, evaluation = evaluate_predictions(predictions, manifest, params)
    write_json(root / paths.METRICS, metrics)
    write_json(root / paths.EVALUATION, evaluation)
    plots = write_plot_data(evaluation, root / paths.PLOTS)
    for name, per_split in metrics.items():
        for split, m in per_split.items():
            log.info(
                "%s/%s: AUROC %.3f (95%% CI %s-%s), n=%d",
                name, split, m["auroc"] if m["auroc"] is not None else float("nan"),
                _fmt(m["auroc_ci_low"]), _fmt(m["auroc_ci_high"]), m["n"],
            )
    for note in evaluation["notes"]:
        log.warning(note)
    log.info(
        "%s, %s and %d plot files in %.1f s",
        paths.METRICS, paths.EVALUATION, len(plots), time.perf_counter() - start,
    )


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


if __name__ == "__main__":
    main()
