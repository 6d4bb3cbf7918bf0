"""The ONE augmentation definition: batched torch ops that run on the training device.

The augment stage materialises a few deterministic views of every training image (for the frozen-
feature linear path, which never sees pixels again), and the trainer augments each batch on the fly
for finetune/scratch and the fine-tuning variants, on the device the model trains on (a GPU step is
not starved by a CPU loader augmenting one image at a time). Both go through
:class:`Augmentation`, so every path sees the same distribution of views.

The transforms are MONAI's, in MONAI's order and conventions, applied to a whole batch at once:

1. ``RandAffine`` (rotation, per-axis zoom, translation; bilinear, zero padding): the per-image
   matrix is MONAI's ``create_rotate @ create_translate @ create_scale`` in centred pixel
   coordinates (the pull direction, as ``monai.transforms.Affine`` samples), one
   ``torch.nn.functional.affine_grid`` + ``grid_sample`` for the batch;
2. ``RandAdjustContrast`` (gamma on each image's own [min, max] range, MONAI's formula);
3. ``RandGaussianNoise`` (the std of each view drawn from U(0, noise_std), as MONAI samples it);
4. ``RandFlip`` along the width (off by default);
5. a clip to [0, 1].

``tests/test_augment.py`` checks each step against MONAI's deterministic transform
(``Affine``, ``AdjustContrast``, ``Flip``) for the drawn parameters. The random draws are this
module's: every parameter of a batch comes from one ``numpy`` generator seeded by the batch's
seed (drawn on the CPU, so they are the same on every device), and the noise field from a torch
generator on the device seeded by the same seed: views are a pure function of (config, images,
seed) on a given device type; CPU and CUDA views differ only in their noise field (the two devices'
generators give different streams of the same distribution). Before 2026-12-03 the views came from
MONAI's array transforms one image at a time (same transforms and distributions, other random
streams).

Choices for chest radiographs:

* the affine warp pads with **zeros**: the store is letterboxed with black (``ingest.fit: pad``)
  and black is air, so new border pixels look like what is already there; ``border`` would smear
  collimator edges and burnt-in markers into streaks, ``reflection`` would mirror anatomy;
* interpolation is bilinear (cheap, no ringing on the [0, 1] range);
* horizontal flip is off by default: a flipped chest puts the heart on the right (a situs
  inversus look-alike), which is not a plausible acquisition;
* the output is clipped to [0, 1] so that noise and warps never leave the store's range.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from pipeline.common import progress
from pipeline.params import Augment
from pipeline.paths import AUGMENTED_INDEX_COLUMNS as INDEX_COLUMNS
from pipeline.store import Images, StoreWriter, open_store

#: MONAI's AdjustContrast guards the division by the image's intensity range with this.
GAMMA_EPS = 1e-7
_MAX_SEED = 2**63


def view_seed(seed: int, row: int, copy: int) -> int:
    """Seed of one augmented view, derived from (global seed, manifest row, copy/epoch number).

    ``SeedSequence`` mixes the three integers so that neighbouring rows/copies get unrelated
    random streams, and the same triple always gives the same view (materialised views are
    reproducible, and the trainer can ask for the view of (row, epoch) independently of order).
    """
    return int(np.random.SeedSequence([int(seed), int(row), int(copy)]).generate_state(1)[0])


@dataclass(frozen=True)
class Draw:
    """The random parameters of one batch of ``B`` views (CPU tensors; pin and move with
    :meth:`to`). Where a transform does not fire for an image its parameter is the identity."""

    theta: torch.Tensor  # (B, 2, 3) float32: affine_grid's normalised pull matrices (x, y order)
    warp: torch.Tensor  # (B,) bool: the affine fires
    gamma: torch.Tensor  # (B,) float32: contrast gamma (1 = not applied)
    contrast: torch.Tensor  # (B,) bool: the contrast change fires
    noise_std: torch.Tensor  # (B,) float32: std of the added noise (0 = none)
    flip: torch.Tensor  # (B,) bool: flipped left <-> right
    seed: int  # the batch's seed: the noise field's generator

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Draw:
        return Draw(
            theta=fn(self.theta),
            warp=fn(self.warp),
            gamma=fn(self.gamma),
            contrast=fn(self.contrast),
            noise_std=fn(self.noise_std),
            flip=fn(self.flip),
            seed=self.seed,
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Draw:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Draw:
        return self._map(lambda t: t.pin_memory())

    def __len__(self) -> int:
        return int(self.warp.shape[0])


def monai_affine(angle: np.ndarray, zoom: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """(B, 3, 3) matrices ``create_rotate(angle) @ create_translate(shift) @ create_scale(zoom)``
    of MONAI (2-D, axes (H, W), centred pixel coordinates), for B images at once."""
    angle = np.asarray(angle, np.float64)
    b = angle.shape[0]
    c, s = np.cos(angle), np.sin(angle)
    rot = np.zeros((b, 3, 3))
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s, s, c, 1.0
    tra = np.tile(np.eye(3), (b, 1, 1))
    tra[:, :2, 2] = shift
    sca = np.zeros((b, 3, 3))
    sca[:, 0, 0], sca[:, 1, 1], sca[:, 2, 2] = zoom[:, 0], zoom[:, 1], 1.0
    return rot @ tra @ sca


def grid_theta(affine: np.ndarray, height: int, width: int) -> np.ndarray:
    """(B, 2, 3) ``affine_grid`` matrices (normalised coordinates, x = width first,
    ``align_corners=False``) of (B, 3, 3) pull matrices in MONAI's centred (H, W) pixel
    coordinates: MONAI's ``Resample`` normalises a pixel coordinate q by ``2 q / size``."""
    d = np.diag([height / 2.0, width / 2.0, 1.0])
    normalised = np.linalg.inv(d) @ affine @ d
    swap = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # (H, W) -> (x, y)
    return (swap @ normalised @ swap)[:, :2]


def make_draw(
    height: int,
    width: int,
    seed: int,
    *,
    warp: np.ndarray,
    angle: np.ndarray,
    zoom: np.ndarray,
    shift: np.ndarray,
    contrast: np.ndarray,
    gamma: np.ndarray,
    noise_std: np.ndarray,
    flip: np.ndarray,
) -> Draw:
    """A :class:`Draw` from explicit per-image parameters (MONAI's meaning: ``angle`` in radians,
    ``zoom`` and ``shift`` (B, 2) along (H, W), ``shift`` in pixels); where ``warp`` or
    ``contrast`` is False that transform is the identity for the image."""
    warp = np.asarray(warp, bool)
    contrast = np.asarray(contrast, bool)
    affine = monai_affine(
        np.where(warp, angle, 0.0), np.where(warp[:, None], zoom, 1.0), np.where(warp[:, None], shift, 0.0)
    )
    return Draw(
        theta=torch.from_numpy(grid_theta(affine, height, width).astype(np.float32)),
        warp=torch.from_numpy(warp),
        gamma=torch.from_numpy(np.where(contrast, gamma, 1.0).astype(np.float32)),
        contrast=torch.from_numpy(contrast),
        noise_std=torch.from_numpy(np.asarray(noise_std, np.float32)),
        flip=torch.from_numpy(np.asarray(flip, bool)),
        seed=int(seed) % _MAX_SEED,
    )


class Augmentation:
    """Random views of channel-first batches ``(B, 1, H, W)`` float32 in [0, 1], on their device.

    ``draw`` makes a batch's random parameters on the CPU (the loader thread does it, and pins
    them for a GPU), ``apply`` runs the batched ops on the images' device; ``aug(x, seed)`` is
    both. Each random transform fires with probability ``cfg.prob``; a transform whose range is
    zero is left out (an identity warp would still resample and blur the image).
    """

    def __init__(self, cfg: Augment) -> None:
        self.cfg = cfg
        self.warps = cfg.rotate_deg > 0 or cfg.scale > 0 or cfg.translate > 0
        self.contrasts = tuple(cfg.gamma) != (1.0, 1.0)
        self.noises = cfg.noise_std > 0
        self.flips = bool(cfg.horizontal_flip)

    def __repr__(self) -> str:
        on = [n for n, f in (("affine", self.warps), ("contrast", self.contrasts), ("noise", self.noises),
                             ("flip", self.flips)) if f]  # fmt: skip
        return f"Augmentation({', '.join(on) or 'clip only'}; prob={self.cfg.prob})"

    def draw(self, n: int, height: int, width: int, seed: int) -> Draw:
        """The parameters of ``n`` views (in MONAI's distributions), fixed by ``seed``."""
        cfg, seed = self.cfg, int(seed) % _MAX_SEED
        rng = np.random.default_rng(seed)
        fire = rng.random((n, 4)) < cfg.prob  # affine, contrast, noise, flip
        r = float(np.deg2rad(cfg.rotate_deg))
        angle = rng.uniform(-r, r, n)
        zoom = 1.0 + rng.uniform(-cfg.scale, cfg.scale, (n, 2))  # MONAI: 1 + U(-s, s) per axis
        shift = rng.uniform(-1.0, 1.0, (n, 2)) * cfg.translate * np.array([height, width])  # a fraction
        gamma = rng.uniform(cfg.gamma[0], cfg.gamma[1], n)
        std = rng.uniform(0.0, cfg.noise_std, n)
        return make_draw(
            height,
            width,
            seed,
            warp=fire[:, 0] & self.warps,
            angle=angle,
            zoom=zoom,
            shift=shift,
            contrast=fire[:, 1] & self.contrasts,
            gamma=gamma,
            noise_std=np.where(fire[:, 2] & self.noises, std, 0.0),
            flip=fire[:, 3] & self.flips,
        )

    def apply(self, x: torch.Tensor, draw: Draw) -> torch.Tensor:
        """The views of ``x`` (B, 1, H, W) for ``draw`` (on ``x``'s device), clipped to [0, 1]."""
        _check_batch(x)
        if len(draw) != x.shape[0]:
            raise ValueError(f"{len(draw)} drawn views for a batch of {x.shape[0]}")
        x = x.float()
        one = (-1, 1, 1, 1)
        if self.warps:
            grid = F.affine_grid(draw.theta, list(x.shape), align_corners=False)
            warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            x = torch.where(draw.warp.view(one), warped, x)
        if self.contrasts:
            lo = x.amin(dim=(1, 2, 3), keepdim=True)
            span = x.amax(dim=(1, 2, 3), keepdim=True) - lo
            adjusted = ((x - lo) / (span + GAMMA_EPS)).pow(draw.gamma.view(one)) * span + lo
            x = torch.where(draw.contrast.view(one), adjusted, x)
        if self.noises:
            gen = torch.Generator(device=x.device).manual_seed(draw.seed)
            noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            x = x + noise * draw.noise_std.view(one)
        if self.flips:
            x = torch.where(draw.flip.view(one), x.flip(-1), x)
        return x.clamp(0.0, 1.0)

    def __call__(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        _check_batch(x)  # before reading H and W off it
        return self.apply(x, self.draw(x.shape[0], x.shape[2], x.shape[3], seed).to(x.device))


def _check_batch(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"Augmentation expects (B, 1, H, W) images, got shape {tuple(x.shape)}")


def make_augmentation(cfg: Augment) -> Augmentation:
    """The augmentation of ``params.augment`` (see :class:`Augmentation`)."""
    return Augmentation(cfg)


def augment_batch(transform: Augmentation, images: np.ndarray, seed: int) -> np.ndarray:
    """Views of a ``(B, S, S)`` numpy batch on the CPU: float32 ``(B, S, S)`` in [0, 1], fixed by
    ``seed`` and the order of the images (one draw for the batch)."""
    imgs = np.asarray(images)
    if imgs.ndim != 3:
        raise ValueError(f"augment_batch expects a 3-D (B, S, S) array, got shape {imgs.shape}")
    x = torch.from_numpy(np.array(imgs, dtype=np.float32))[:, None]
    with torch.no_grad():
        return transform(x, seed)[:, 0].numpy()


def augment_image(transform: Augmentation, image: np.ndarray, seed: int) -> np.ndarray:
    """One view of a ``(S, S)`` image: float32 ``(S, S)`` in [0, 1], fixed by ``seed``."""
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"augment_image expects a 2-D (S, S) image, got shape {img.shape}")
    return augment_batch(transform, img[None], seed)[0]


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
        # One view per call (its own seed): the ops on one 128 px image gain nothing from threads,
        # and on a busy machine a two-thread OpenMP region per tiny op costs many times more.
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
    transform: Augmentation,
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
