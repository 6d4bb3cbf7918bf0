"""scratch stage: train the same network from random initialisation (the no-transfer baseline).

Reads params `seed`, `data.*`, `augment.*`, `backbone.*`, `train.*`, `scratch.*`;
writes predictions/scratch.csv (every manifest row), models/scratch/best.pt,
reports/train/scratch.json (model card + per-epoch history) and the dvclive dir
reports/train/scratch/.
A per-epoch checkpoint in models/scratch/ckpt/ lets an interrupted run resume where it stopped.
"""

from __future__ import annotations

import argparse

from pipeline.params import load_params
from pipeline.training import run_training_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    run_training_stage("scratch", load_params(args.params))


if __name__ == "__main__":
    main()
