"""augment stage: materialise `augment.copies` deterministic views of every TRAIN image."""

from __future__ import annotations

import time

import numpy as np

from pipeline import paths
from pipeline.augment import make_augmentation, materialise, preview_grid
from pipeline.common import get_logger, write_csv
from pipeline.dataset import load_dataset
from pipeline.errors import StageError
from pipeline.params import Params
from pipeline.workspace import Workspace

log = get_logger("augment")


def run_augment(params: Params, workspace: Workspace) -> None:
    """Views of the train split only (val, test and external images are never augmented), their
    index and a preview figure of the augmentation definition."""
    cfg = params.augment
    dataset = load_dataset(params, root=workspace.root)
    train_rows = dataset.rows("train")
    if train_rows.size == 0:
        raise StageError("the train split is empty; check the split stage")

    start = time.perf_counter()
    views, index = materialise(
        dataset.images,
        train_rows,
        cfg,
        seed=params.seed,
        copies=cfg.copies,
        out_path=workspace.path(paths.AUGMENTED_STORE),
    )
    write_csv(index, workspace.path(paths.AUGMENTED_INDEX))
    log.info(
        "%d views of %d train images (%d copies each) in %.1f s -> %s",
        len(views),
        len(train_rows),
        cfg.copies,
        time.perf_counter() - start,
        paths.AUGMENTED_STORE,
    )

    # Preview: a seeded sample of training images. With copies = 0 the trainers still augment on
    # the fly, so the figure shows three views of that same definition.
    rng = np.random.default_rng(params.seed)
    n = min(cfg.preview_images, train_rows.size)
    shown = np.sort(rng.choice(train_rows, size=n, replace=False))
    out = preview_grid(
        dataset.images,
        shown,
        make_augmentation(cfg),
        seed=params.seed,
        path=workspace.path(paths.FIGURES / "augment_preview.png"),
        copies=cfg.copies if cfg.copies > 0 else 3,
    )
    log.info("preview -> %s", workspace.show(out))
