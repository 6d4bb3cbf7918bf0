"""The ONE augmentation definition (MONAI), used offline and on the fly.

The augment stage materialises a few deterministic views of every training image (for the frozen-
feature linear path, which never sees pixels again), and the trainer calls :func:`augment_image`
on the fly for finetune/scratch. Both go through :func:`make_augmentation`, so the three paths
see the same distribution of views.

Choices for chest radiographs:

* the affine warp pads with **zeros**: the store is letterboxed with black (``ingest.fit: pad``)
  and black is air, so new border pixels look like what is already there; ``border`` would smear
  collimator edges and burnt-in markers into streaks, ``reflection`` would mirror anatomy;
* interpolation is bilinear (cheap, no ringing on the [0, 1] range);
* horizontal flip is off by default: a flipped chest puts the heart on the right (a situs
  inversus look-alike), which is not a plausible acquisition;
* the output is clipped to [0, 1] so that noise and warps never leave the store's range.

``import monai`` takes seconds, so it happens inside the functions, not at module import.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.common import progress
from pipeline.params import Augment
from pipeline.store import Images, StoreWriter, open_store

if TYPE_CHECKING:  # pragma: no cover - typing only
    from monai.transforms import Compose

INDEX_COLUMNS = ("aug_row", "row", "copy")
# MONAI random states take a uint32 seed.
_MAX_SEED = 2**32


def view_seed(seed: int, row: int, copy: int) -> int:
    """Seed of one augmented view, derived from (global seed, manifest row, copy/epoch number).

    ``SeedSequence`` mixes the three integers so that neighbouring rows/copies get unrelated
    random streams, and the same triple always gives the same view (materialised views are
    reproducible, and the trainer can ask for the view of (row, epoch) independently of order).
    """
    return int(np.random.SeedSequence([int(seed), int(row), int(copy)]).generate_state(1)[0])


def _rand_affine_fraction_class() -> type:
    """A ``RandAffine`` whose translation is a fraction of the image side, not pixels.

    MONAI's ``translate_range`` is in pixels; ``params.augment.translate`` is a fraction so that
    the same params mean the same thing at any ``ingest.size``. The range is set from the input's
    spatial shape just before each call (the random draw happens inside the call).

    Built on first use (importing MONAI is slow) and published as the module attribute
    ``RandAffineFraction`` (see :func:`__getattr__`), so a transform pickles into DataLoader
    worker processes.
    """
    cls = globals().get("RandAffineFraction")
    if cls is not None:
        return cls
    from monai.transforms import RandAffine

    class RandAffineFraction(RandAffine):
        def __init__(self, translate_fraction: float, **kwargs) -> None:
            super().__init__(**kwargs)
            self.translate_fraction = float(translate_fraction)

        def __call__(self, img, *args, **kwargs):  # type: ignore[override]
            spatial = tuple(img.shape[1:])
            self.rand_affine_grid.translate_range = tuple(self.translate_fraction * s for s in spatial)
            return super().__call__(img, *args, **kwargs)

    RandAffineFraction.__module__ = __name__
    RandAffineFraction.__qualname__ = "RandAffineFraction"
    globals()["RandAffineFraction"] = RandAffineFraction
    return RandAffineFraction


def __getattr__(name: str):
    # PEP 562: `pipeline.augment.RandAffineFraction` resolves (and imports MONAI) on demand, which
    # is what unpickling a transform in a fresh worker process looks up.
    if name == "RandAffineFraction":
        return _rand_affine_fraction_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_augmentation(cfg: Augment) -> Compose:
    """The augmentation pipeline for channel-first float32 images ``(1, S, S)`` in [0, 1].

    Each random transform fires with probability ``cfg.prob``. Transforms whose range is zero are
    left out (an identity warp would still resample and blur the image).
    """
    from monai.transforms import (
        Compose,
        RandAdjustContrast,
        RandFlip,
        RandGaussianNoise,
        ScaleIntensityRange,
    )

    transforms = []
    if cfg.rotate_deg > 0 or cfg.scale > 0 or cfg.translate > 0:
        RandAffineFraction = _rand_affine_fraction_class()
        transforms.append(
            RandAffineFraction(
                translate_fraction=cfg.translate,
                prob=cfg.prob,
                # rotate_range in radians, in-plane (2-D: one angle).
                rotate_range=(float(np.deg2rad(cfg.rotate_deg)),) if cfg.rotate_deg > 0 else None,
                # zoom factor per axis drawn from 1 + U(-scale, scale): size and habitus changes
                scale_range=(cfg.scale, cfg.scale) if cfg.scale > 0 else None,
                mode="bilinear",
                padding_mode="zeros",
            )
        )
    if tuple(cfg.gamma) != (1.0, 1.0):
        # gamma < 1 brightens, > 1 darkens: mimics exposure / processing differences between sites.
        transforms.append(RandAdjustContrast(prob=cfg.prob, gamma=tuple(cfg.gamma)))
    if cfg.noise_std > 0:
        # MONAI draws the std of each view from U(0, noise_std): a mix of clean and noisy views.
        transforms.append(RandGaussianNoise(prob=cfg.prob, mean=0.0, std=cfg.noise_std))
    if cfg.horizontal_flip:
        # spatial axis 1 of (C, H, W) is the image width: left <-> right.
        transforms.append(RandFlip(prob=cfg.prob, spatial_axis=1))
    # Identity intensity map with clip=True: keeps every view in the store's [0, 1] range.
    transforms.append(ScaleIntensityRange(a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True))
    return Compose(transforms)


def augment_image(transform: Compose, image: np.ndarray, seed: int) -> np.ndarray:
    """One augmented view of a ``(S, S)`` image: float32 ``(S, S)`` in [0, 1], fixed by ``seed``.

    Reseeds ``transform`` in place (not thread-safe: give each worker its own transform). The
    same (transform config, image, seed) always gives the same view.
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"augment_image expects a 2-D (S, S) image, got shape {img.shape}")
    return augment_batch(transform, img[None], seed)[0]


def augment_batch(transform: Compose, images: np.ndarray, seed: int) -> np.ndarray:
    """Augmented views of a ``(B, S, S)`` batch, fixed by ``seed`` and the order of the images.

    The transform is seeded once for the whole batch and then draws for each image in turn:
    reseeding per image builds a new ``RandomState`` for every random transform, a quarter of the
    per-image cost at 128 px. The on-the-fly trainer uses this with a seed fixed by (seed, epoch,
    batch rows), so a resumed run sees the same views.
    """
    imgs = np.asarray(images)
    if imgs.ndim != 3:
        raise ValueError(f"augment_batch expects a 3-D (B, S, S) array, got shape {imgs.shape}")
    from monai.data import get_track_meta, set_track_meta

    transform.set_random_state(seed=int(seed) % _MAX_SEED)
    out = np.empty(imgs.shape, dtype=np.float32)
    # Metadata tracking (MetaTensor bookkeeping) is a third of the cost at 128 px and nothing here
    # reads it; the output is bit-identical without it. Restore the global flag for other users.
    tracking = get_track_meta()
    set_track_meta(False)
    try:
        for i, img in enumerate(imgs):
            view = transform(img[None].astype(np.float32, copy=True))
            # MONAI may return a tensor; callers get plain numpy.
            if hasattr(view, "detach"):
                view = view.detach().cpu().numpy()
            out[i] = np.asarray(view, dtype=np.float32)[0]
    finally:
        set_track_meta(tracking)
    return out


def empty_index() -> pd.DataFrame:
    """The augmented.csv index with its header and no rows (copies = 0)."""
    return pd.DataFrame({c: pd.Series(dtype=np.int64) for c in INDEX_COLUMNS})


def materialise(
    images: Images,
    train_rows: np.ndarray,
    cfg: Augment,
    seed: int,
    copies: int,
    out_path: str | Path | None = None,
) -> tuple[Images, pd.DataFrame]:
    """``copies`` deterministic views of each image in ``train_rows``.

    Returns the views ``(M, S, S)`` float16 (M = len(train_rows) * copies) and the index
    ``aug_row, row, copy`` (row = source manifest row). View ``(row, copy)`` uses
    :func:`view_seed`, so it does not depend on which other rows are augmented or in what order.
    With ``out_path`` the views are streamed into an image store at that folder
    (:class:`pipeline.store.StoreWriter`) and the returned value is that store, opened read-only;
    otherwise they are built in memory.
    """
    if copies < 0:
        raise ValueError(f"copies must be >= 0, got {copies}")
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"images must be (N, S, S), got shape {images.shape}")
    rows = np.asarray(train_rows, dtype=np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= len(images)):
        raise ValueError(f"train rows out of range 0..{len(images) - 1}")
    if len(np.unique(rows)) != len(rows):
        raise ValueError("train rows must be unique")
    size = images.shape[1]
    m = len(rows) * copies
    shape = (m, size, size)

    index = {
        "aug_row": np.arange(m, dtype=np.int64),
        "row": np.repeat(rows, copies),
        "copy": np.tile(np.arange(copies, dtype=np.int64), len(rows)),
    }
    pairs = list(zip(index["row"].tolist(), index["copy"].tolist(), strict=False))
    transform = make_augmentation(cfg)

    def views():
        import torch

        # MONAI's per-image ops on a 128 px image gain nothing from threads, and on a busy machine
        # a two-thread OpenMP region per tiny op costs ~10x more (measured: 36 vs 9 ms/view).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for row, copy in progress(pairs, total=m, desc="augment"):
                src = np.asarray(images[row], dtype=np.float32)
                yield augment_image(transform, src, view_seed(seed, row, copy))
        finally:
            torch.set_num_threads(threads)

    if out_path is not None:
        # Streamed, and renamed into place only when complete: an interrupted run never leaves
        # a half-written store under the real name.
        with StoreWriter(out_path, size=size, capacity=m) as writer:
            for view in views():
                writer.append(view)
        return open_store(out_path), pd.DataFrame(index, columns=list(INDEX_COLUMNS))
    out = np.empty(shape, dtype=np.float16)
    for i, view in enumerate(views()):
        out[i] = view
    return out, pd.DataFrame(index, columns=list(INDEX_COLUMNS))


def preview_grid(
    images: Images,
    rows: np.ndarray,
    transform: Compose,
    seed: int,
    path: str | Path,
    copies: int = 3,
) -> Path:
    """Save a PNG: one training image per line, the original then ``copies`` augmented views.

    The views are the ones :func:`materialise` writes for the same (seed, row, copy), so the
    figure shows what the models are trained on. Titles carry the manifest row only (no patient
    identifiers).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        raise ValueError("preview_grid needs at least one image row")
    if copies < 1:
        raise ValueError(f"copies must be >= 1 for a preview, got {copies}")
    n_rows, n_cols = len(rows), 1 + copies
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.9 * n_cols, 1.9 * n_rows + 0.5), squeeze=False)
    for i, row in enumerate(rows):
        src = np.asarray(images[row], dtype=np.float32)
        panels = [src] + [augment_image(transform, src, view_seed(seed, row, c)) for c in range(copies)]
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(panel, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"row {row}: original" if j == 0 else f"view {j}", fontsize=8)
    fig.suptitle("Training augmentation: original (left) and augmented views", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
