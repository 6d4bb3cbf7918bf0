"""diagnose stage: overfitting diagnostics, transfer trifecta, validation and learning curves."""

from __future__ import annotations

import time
from typing import Any

from pipeline import diagnostics as D
from pipeline import paths
from pipeline.common import get_logger, seed_everything
from pipeline.contracts import Diagnostics, Evaluation, Metrics, read_contract, train_log_model, write_contract
from pipeline.dataset import load_dataset
from pipeline.linear import load_linear_inputs
from pipeline.params import Params
from pipeline.report import figures
from pipeline.workspace import Workspace

log = get_logger("diagnose")
FIGURE_DIR = paths.FIGURES / "diagnose"


def run_diagnose(params: Params, workspace: Workspace) -> dict[str, Any]:
    """reports/diagnostics.json and reports/figures/diagnose/*.png; the learning curve retrains
    every method with the main run's settings on fractions of the training patients."""
    seed_everything(params.seed)
    start = time.perf_counter()
    # Validated against their contracts; pipeline.diagnostics reads the plain documents.
    logs = {
        p: read_contract(workspace.require(paths.train_log(p), p), train_log_model(p)).model_dump(by_alias=True)
        for p in paths.PATHS
    }
    metrics = read_contract(workspace.require(paths.METRICS, "evaluate"), Metrics).model_dump()
    evaluation = read_contract(workspace.require(paths.EVALUATION, "evaluate"), Evaluation).model_dump()
    rules = D.Rules.from_params(params)

    params = with_chosen_scratch_lr(params, logs.get("scratch"))
    dataset = load_dataset(params, root=workspace.root)
    linear_inputs = load_linear_inputs(workspace.root)
    fit = D.make_fit(dataset, params, linear_inputs)
    lc = D.pipeline_learning_curve(dataset, params, fit, predictions_dir=workspace.path(paths.PREDICTIONS))
    doc = D.build_diagnostics(logs, metrics, rules, lc, (evaluation.get("comparisons") or {}).get("test"))

    fig_dir = workspace.path(FIGURE_DIR)
    out = {
        "curves": figures.plot_training_curves(doc["paths"], fig_dir / "curves.png"),
        "trifecta": figures.plot_trifecta(doc["paths"], fig_dir / "trifecta.png"),
        "validation_curve": figures.plot_validation_curve(doc["paths"]["linear"], fig_dir / "validation_curve.png"),
        "learning_curve": figures.plot_learning_curve(lc["summary"], fig_dir / "learning_curve.png"),
    }
    doc["figures"] = {k: workspace.show(v) for k, v in out.items()}
    doc["wall_time_s"] = round(time.perf_counter() - start, 1)
    write_contract(workspace.path(paths.DIAGNOSTICS), Diagnostics, doc)
    for method, v in doc["verdicts"].items():
        log.info("%s: %s", method, v["text"])
    for ref, c in lc["scratch_catch_up"].items():
        log.info("learning curve vs %s: %s", ref, c["text"])
    log.info("diagnose done in %.1f s", doc["wall_time_s"])
    return doc


def with_chosen_scratch_lr(params: Params, scratch_log: dict[str, Any] | None) -> Params:
    """params whose scratch.lr is the rate the scratch stage chose on val (when it chose one):
    the learning curve retrains scratch as the main run did."""
    search = (scratch_log or {}).get("lr_search")
    if params.scratch.lr is not None or not search:
        return params
    return params.model_copy(update={"scratch": params.scratch.model_copy(update={"lr": search["chosen_lr"]})})
