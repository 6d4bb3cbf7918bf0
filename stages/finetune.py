"""finetune stage: fine-tune the pretrained backbone with per-layer-group learning rates.

The 2:4:6 rule by default: lr 1e-6 bottom groups, 1e-4 other pretrained groups, 1e-2 new head.

Reads params `seed`, `data.*`, `augment.*`, `backbone.*`, `train.*`, `finetune.*`;
writes predictions/finetune.csv (every manifest row), models/finetune/best.pt,
reports/train/finetune.json (model card + per-epoch history) and the dvclive dir
reports/train/finetune/.
A per-epoch checkpoint in models/finetune/ckpt/ lets an interrupted run resume where it stopped.
"""

from __future__ import annotations

import argparse

from pipeline.params import load_params
from pipeline.training import run_training_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    run_training_stage("finetune", load_params(args.params))


if __name__ == "__main__":
    main()
