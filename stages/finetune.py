"""finetune stage: fine-tune the pretrained backbone with per-layer-group learning rates.

The 2:4:6 rule by default: lr 1e-6 bottom groups, 1e-4 other pretrained groups, 1e-2 new head.

Reads params `seed`, `data.*`, `augment.*`, `backbone.*`, `train.*`, `finetune.*`;
writes predictions/finetune.csv (every manifest row), models/finetune/best.pt,
reports/train/finetune.json (model card + per-epoch history) and the dvclive dir
reports/train/finetune/.
A per-epoch checkpoint in models/.resume/finetune/ lets an interrupted run resume where it stopped.
"""

from pipeline.cli import entry
from pipeline.steps.finetune import run_finetune

if __name__ == "__main__":
    entry("finetune", run_finetune, __doc__)
