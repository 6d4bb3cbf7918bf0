"""scratch stage: the same network trained from random initialisation (the no-transfer baseline)."""

from __future__ import annotations

from pipeline.params import Params
from pipeline.training import TrainResult, run_training_stage
from pipeline.workspace import Workspace


def run_scratch(params: Params, workspace: Workspace) -> TrainResult:
    return run_training_stage("scratch", params, workspace.root)
