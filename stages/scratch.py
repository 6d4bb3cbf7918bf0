"""scratch stage: train the same network from random initialisation (the no-transfer baseline).

Reads params `seed`, `data.*`, `augment.*`, `backbone.*`, `train.*`, `scratch.*`;
writes predictions/scratch.csv (every manifest row), models/scratch/best.pt,
reports/train/scratch.json (model card + per-epoch history) and the dvclive dir
reports/train/scratch/.
A per-epoch checkpoint in models/.resume/scratch/ lets an interrupted run resume where it stopped.
"""

from pipeline.cli import entry
from pipeline.steps.scratch import run_scratch

if __name__ == "__main__":
    entry("scratch", run_scratch, __doc__)
