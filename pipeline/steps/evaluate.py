"""evaluate stage: clinical metrics with confidence intervals for every transfer method."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from pipeline import paths
from pipeline.common import get_logger
from pipeline.contracts import Evaluation, Metrics, write_contract
from pipeline.errors import StageError
from pipeline.evaluation import evaluate_predictions, write_plot_data
from pipeline.params import Params
from pipeline.predictions import read_calibration, read_predictions
from pipeline.workspace import Workspace

log = get_logger("evaluate")


def run_evaluate(params: Params, workspace: Workspace) -> tuple[dict[str, Any], dict[str, Any]]:
    """reports/metrics.json (flat, for `dvc metrics show`), reports/evaluation.json (everything)
    and the `dvc plots` CSVs, from the prediction files that exist (at least one)."""
    manifest_path = workspace.require(paths.MANIFEST, "ingest")
    # keep_default_na=False: a sex of "NA" or a view "N/A" stays a string; only empty is missing.
    manifest = pd.read_csv(manifest_path, keep_default_na=False, na_values=[""], dtype={"source": str})
    predictions, calibration = {}, {}
    for name in paths.methods(params):
        p = workspace.predictions(name)
        if p.exists():
            predictions[name] = read_predictions(p, params.data.classes, raw=True)
            calibration[name] = read_calibration(p).model_dump(by_alias=True)
        else:
            log.warning("%s not found: method %s is not evaluated", paths.predictions_csv(name), name)
    if not predictions:
        raise StageError(
            "no prediction files found (expected any of "
            + ", ".join(str(paths.predictions_csv(n)) for n in paths.methods(params))
            + "); run the linear, finetune or scratch stage first"
        )
    start = time.perf_counter()
    metrics, evaluation = evaluate_predictions(predictions, manifest, params, calibration)
    write_contract(workspace.path(paths.METRICS), Metrics, metrics)
    write_contract(workspace.path(paths.EVALUATION), Evaluation, evaluation)
    plots = write_plot_data(evaluation, workspace.path(paths.PLOTS))
    for name, per_split in metrics.items():
        for split, m in per_split.items():
            log.info(
                "%s/%s: AUROC %s (95%% CI %s-%s), n=%d",
                name,
                split,
                _fmt(m["auroc"]),
                _fmt(m["auroc_ci_low"]),
                _fmt(m["auroc_ci_high"]),
                m["n"],
            )
    for note in evaluation["notes"]:
        log.warning(note)
    log.info(
        "%s, %s and %d plot files in %.1f s", paths.METRICS, paths.EVALUATION, len(plots), time.perf_counter() - start
    )
    return metrics, evaluation


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
