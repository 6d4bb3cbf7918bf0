"""finetune stage: the pretrained backbone fine-tuned with per-layer-group learning rates."""

from __future__ import annotations

from pipeline.params import Params
from pipeline.trained_methods import run_trained_method, torchrun_capable
from pipeline.training import TrainResult
from pipeline.workspace import Workspace


@torchrun_capable
def run_finetune(params: Params, workspace: Workspace) -> TrainResult:
    return run_trained_method("finetune", params, workspace)
