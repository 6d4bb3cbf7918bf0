"""recommend stage: which transfer method this data set rewards, chosen on validation only."""

from __future__ import annotations

from typing import Any

from pipeline import paths
from pipeline.common import get_logger
from pipeline.contracts import Diagnostics, Evaluation, Recommendation, read_contract, train_log_model, write_contract
from pipeline.params import Params
from pipeline.recommendation import recommend
from pipeline.workspace import Workspace

log = get_logger("recommend")


def run_recommend(params: Params, workspace: Workspace) -> dict[str, Any]:
    """reports/recommendation.json from reports/evaluation.json (val AUROCs and paired
    comparisons), reports/diagnostics.json (overfitting verdicts, near-chance flags, learning
    curve) and the train logs of the evaluated methods (cost). Params read:
    ``diagnose.chance_margin`` and ``strategies.variants`` (the configured methods)."""
    evaluation = read_contract(workspace.require(paths.EVALUATION, "evaluate"), Evaluation).model_dump(by_alias=True)
    diagnostics = read_contract(workspace.require(paths.DIAGNOSTICS, "diagnose"), Diagnostics).model_dump(by_alias=True)
    train_logs: dict[str, dict[str, Any] | None] = {}
    for m in evaluation["paths"]:
        p = workspace.train_log(m)
        train_logs[m] = read_contract(p, train_log_model(m)).model_dump(by_alias=True) if p.exists() else None
    doc = recommend(evaluation, diagnostics, train_logs, params.diagnose.chance_margin, paths.methods(params))
    write_contract(workspace.path(paths.RECOMMENDATION), Recommendation, doc)
    for note in doc["notes"]:
        log.warning(note)
    log.info("%s", doc["text"])
    return doc
