"""finetune stage: the pretrained backbone fine-tuned with per-layer-group learning rates."""

from __future__ import annotations

from pipeline.params import Params
from pipeline.training import TrainResult, run_training_stage
from pipeline.workspace import Workspace


def run_finetune(params: Params, workspace: Workspace) -> TrainResult:
    return run_training_stage("finetune", params, workspace.root)
