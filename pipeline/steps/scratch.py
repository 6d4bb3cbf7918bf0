"""scratch stage: the same network from random initialisation, its own rate and step budget."""

from __future__ import annotations

from pipeline.params import Params
from pipeline.trained_methods import run_trained_method, torchrun_capable
from pipeline.training import TrainResult
from pipeline.workspace import Workspace


@torchrun_capable
def run_scratch(params: Params, workspace: Workspace) -> TrainResult:
    return run_trained_method("scratch", params, workspace)
