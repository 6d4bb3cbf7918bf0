"""pipeline.augment: the one augmentation definition, its materialised views and preview."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.augment import (
    INDEX_COLUMNS,
    Augmentation,
    Draw,
    augment_batch,
    augment_image,
    make_augmentation,
    make_draw,
    materialise,
    monai_affine,
    preview_grid,
    view_seed,
)
from pipeline.params import Augment
from pipeline.store import open_store

S = 32


def _cfg(**over) -> Augment:
    base = dict(
        copies=2,
        prob=0.8,
        rotate_deg=10.0,
        scale=0.1,
        translate=0.05,
        gamma=(0.7, 1.5),
        noise_std=0.02,
        horizontal_flip=False,
        preview_images=2,
    )
    base.update(over)
    return Augment(**base)


def _asymmetric(size: int = S) -> np.ndarray:
    """A left-right asymmetric image: a bright block on the left, a gradient on top."""
    img = np.zeros((size, size), np.float32)
    img[size // 4 : size // 2, 2 : size // 3] = 0.9
    img[:4, :] = np.linspace(0.1, 0.6, size)
    return img


@pytest.fixture(scope="module")
def default_transform():
    return make_augmentation(_cfg())


def test_deterministic_for_seed_and_differs_across_seeds(default_transform) -> None:
    img = _asymmetric()
    a = augment_image(default_transform, img, seed=7)
    b = augment_image(default_transform, img, seed=7)
    c = augment_image(default_transform, img, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # A fresh transform from the same config gives the same view: nothing depends on call history.
    np.testing.assert_array_equal(a, augment_image(make_augmentation(_cfg()), img, seed=7))


def test_shape_dtype_range_and_input_untouched() -> None:
    t = make_augmentation(_cfg(prob=1.0, noise_std=0.3, gamma=(0.5, 2.0)))
    img = np.clip(_asymmetric() + 0.1, 0, 1).astype(np.float16)  # store dtype
    before = img.copy()
    out = augment_image(t, img, seed=3)
    assert isinstance(out, np.ndarray) and out.shape == (S, S) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.any(out == 0.0) or np.any(out == 1.0)  # strong noise was clipped, not rescaled
    np.testing.assert_array_equal(img, before)
    with pytest.raises(ValueError, match="2-D"):
        augment_image(t, img[None], seed=3)


def test_no_horizontal_flip_when_off_and_flip_when_on() -> None:
    img = _asymmetric()
    off = make_augmentation(
        _cfg(prob=1.0, rotate_deg=0, scale=0, translate=0, gamma=(1.0, 1.0), noise_std=0.0, horizontal_flip=False)
    )
    for seed in range(20):
        np.testing.assert_allclose(augment_image(off, img, seed), img, atol=1e-6)
    on = make_augmentation(
        _cfg(prob=1.0, rotate_deg=0, scale=0, translate=0, gamma=(1.0, 1.0), noise_std=0.0, horizontal_flip=True)
    )
    np.testing.assert_allclose(augment_image(on, img, 0), img[:, ::-1], atol=1e-6)


def _centroid(img: np.ndarray) -> np.ndarray:
    yy, xx = np.indices(img.shape)
    return np.array([(img * yy).sum(), (img * xx).sum()]) / img.sum()


def test_translation_is_a_fraction_of_the_image_side() -> None:
    cfg = _cfg(prob=1.0, rotate_deg=0, scale=0, translate=0.2, gamma=(1.0, 1.0), noise_std=0.0)
    shifts = []
    for size in (32, 64):
        yy, xx = np.indices((size, size))
        blob = np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 16) ** 2))
        blob = blob.astype(np.float32)
        out = augment_image(make_augmentation(cfg), blob, seed=5)
        shifts.append((_centroid(out) - _centroid(blob)) / size)
    assert np.abs(shifts[0]).max() > 0.01  # it moved
    assert np.all(np.abs(shifts[0]) <= 0.2 + 1e-3)
    np.testing.assert_allclose(shifts[0], shifts[1], atol=0.01)  # same relative shift at 2x size


def test_transform_pickles_for_worker_processes(default_transform) -> None:
    img = _asymmetric()
    clone = pickle.loads(pickle.dumps(default_transform))
    np.testing.assert_array_equal(augment_image(clone, img, 11), augment_image(default_transform, img, 11))


def test_materialise_train_rows_only(tmp_path) -> None:
    rng = np.random.default_rng(0)
    images = rng.random((6, S, S)).astype(np.float16)
    train = np.array([1, 4])
    out_path = tmp_path / "augmented"
    views, index = materialise(images, train, _cfg(), seed=42, copies=3, out_path=out_path)
    assert list(index.columns) == list(INDEX_COLUMNS)
    assert len(index) == 6 and index["aug_row"].tolist() == list(range(6))
    assert index["row"].tolist() == [1, 1, 1, 4, 4, 4] and index["copy"].tolist() == [0, 1, 2] * 2
    stored = np.asarray(open_store(out_path))
    assert stored.shape == (6, S, S) and stored.dtype == np.float16
    np.testing.assert_array_equal(np.asarray(views), stored)  # the returned store is the written one
    assert stored.min() >= 0 and stored.max() <= 1
    # Each view is augment_image of its own source with the (seed, row, copy) seed.
    t = make_augmentation(_cfg())
    for aug_row, row, copy in index.itertuples(index=False):
        expect = augment_image(t, images[row].astype(np.float32), view_seed(42, row, copy))
        np.testing.assert_array_equal(stored[aug_row], expect.astype(np.float16))
    # Independent of which other rows are augmented: row 4's views are the same alone.
    alone, _ = materialise(images, np.array([4]), _cfg(), seed=42, copies=3)
    np.testing.assert_array_equal(alone, stored[3:])


def test_materialise_zero_copies_gives_empty_store_and_header(tmp_path) -> None:
    images = np.zeros((3, S, S), np.float16)
    views, index = materialise(images, np.array([0, 2]), _cfg(), seed=1, copies=0, out_path=tmp_path / "a")
    assert open_store(tmp_path / "a").shape == (0, S, S) and len(views) == 0
    index.to_csv(tmp_path / "a.csv", index=False)
    back = pd.read_csv(tmp_path / "a.csv")
    assert list(back.columns) == list(INDEX_COLUMNS) and len(back) == 0
    with pytest.raises(ValueError, match="out of range"):
        materialise(images, np.array([5]), _cfg(), seed=1, copies=1)


def test_preview_png(tmp_path, default_transform) -> None:
    from PIL import Image

    images = np.stack([_asymmetric()] * 3).astype(np.float16)
    path = preview_grid(
        images, np.array([0, 2]), default_transform, seed=42, path=tmp_path / "fig" / "augment_preview.png", copies=2
    )
    with Image.open(path) as im:
        im.verify()
        assert im.format == "PNG"
    with Image.open(path) as im:
        w, h = im.size
    assert w > h  # 3 columns (original + 2 views) by 2 lines


def test_batch_is_seeded_once_and_deterministic(default_transform) -> None:
    """augment_batch: same seed and order -> same views; each image gets its own draw."""
    img = _asymmetric()
    batch = np.stack([img, img, img])
    a = augment_batch(default_transform, batch, seed=11)
    b = augment_batch(default_transform, batch, seed=11)
    np.testing.assert_array_equal(a, b)
    assert a.shape == batch.shape and a.dtype == np.float32
    # Identical inputs still get different views within a batch.
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[1], a[2])
    with pytest.raises(ValueError, match="3-D"):
        augment_batch(default_transform, img, seed=1)


# ---------------------------------------------------------------------------------------------
# Against MONAI: each batched step equals MONAI's deterministic transform for the drawn parameters


def _explicit(n: int, **over) -> Draw:
    base = dict(
        warp=np.zeros(n, bool),
        angle=np.zeros(n),
        zoom=np.ones((n, 2)),
        shift=np.zeros((n, 2)),
        contrast=np.zeros(n, bool),
        gamma=np.ones(n),
        noise_std=np.zeros(n),
        flip=np.zeros(n, bool),
    )
    base.update(over)
    return make_draw(S, S + 8, 0, **base)


def _images(n: int, seed: int = 0) -> np.ndarray:
    """Smooth non-square images with some structure and a black border, in [0.05, 0.95]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:S, 0 : S + 8] / S
    out = [0.5 + 0.3 * np.sin(5 * xx + k) * np.cos(3 * yy - k) + 0.05 * rng.random((S, S + 8)) for k in range(n)]
    arr = np.clip(np.stack(out), 0.05, 0.95).astype(np.float32)
    arr[:, :, :3] = 0.0
    return arr


@pytest.fixture(scope="module")
def everything_on() -> Augmentation:
    return Augmentation(_cfg(prob=1.0, horizontal_flip=True))


def test_monai_affine_matrices_equal_monais_own() -> None:
    from monai.transforms.utils import create_rotate, create_scale, create_translate

    angle, zoom, shift = (
        np.array([0.3, -0.1]),
        np.array([[1.1, 0.9], [0.95, 1.02]]),
        np.array([[2.0, -3.0], [0.5, 1.5]]),
    )
    got = monai_affine(angle, zoom, shift)
    for i in range(2):
        ref = create_rotate(2, angle[i]) @ create_translate(2, shift[i]) @ create_scale(2, zoom[i])
        np.testing.assert_allclose(got[i], ref, atol=1e-12)


def test_batched_warp_equals_monai_affine_per_image(everything_on) -> None:
    from monai.transforms import Affine

    imgs = _images(3)
    angle, zoom = np.array([0.25, -0.4, 0.0]), np.array([[1.1, 0.9], [0.92, 1.06], [1.0, 1.0]])
    shift = np.array([[2.0, -3.5], [-1.25, 0.75], [0.0, 0.0]])
    warp = np.array([True, True, False])
    draw = _explicit(3, warp=warp, angle=angle, zoom=zoom, shift=shift)
    views = Augmentation(_cfg(prob=1.0, gamma=(1.0, 1.0), noise_std=0.0)).apply(torch.from_numpy(imgs)[:, None], draw)
    for i in range(2):
        ref = Affine(rotate_params=float(angle[i]), scale_params=tuple(map(float, zoom[i])),
                     translate_params=tuple(map(float, shift[i])),
                     mode="bilinear", padding_mode="zeros", image_only=True)(imgs[i][None])  # fmt: skip
        np.testing.assert_allclose(views[i, 0].numpy(), np.asarray(ref)[0], atol=1e-5)
        assert np.abs(views[i, 0].numpy() - imgs[i]).max() > 0.1  # it really moved
    np.testing.assert_array_equal(views[2, 0].numpy(), imgs[2])  # not fired: untouched, not resampled


def test_contrast_noise_flip_equal_monai(everything_on) -> None:
    from monai.transforms import AdjustContrast, Flip

    imgs = _images(3, seed=1)
    x = torch.from_numpy(imgs)[:, None]
    gamma = np.array([0.6, 1.7, 1.3])
    draw = _explicit(3, contrast=np.array([True, True, False]), gamma=gamma, flip=np.array([False, True, True]))
    views = everything_on.apply(x, draw)[:, 0].numpy()
    for i, (c, f) in enumerate([(True, False), (True, True), (False, True)]):
        ref = imgs[i][None]
        ref = np.asarray(AdjustContrast(gamma[i])(ref)) if c else ref
        ref = np.asarray(Flip(spatial_axis=1)(ref)) if f else ref
        np.testing.assert_allclose(views[i], np.clip(ref[0], 0, 1), atol=1e-6)
    # Noise: x + N(0, std) per image (MONAI's RandGaussianNoise for a drawn std), then the clip;
    # fixed by the draw's seed, different for another seed.
    flat = np.full((2, 1, S, S + 8), 0.5, np.float32)
    noisy = make_draw(S, S + 8, 5, **{**_explicit_args(2), "noise_std": np.array([0.02, 0.0])})
    out = everything_on.apply(torch.from_numpy(flat), noisy).numpy()
    assert abs(float((out[0] - 0.5).std()) - 0.02) < 0.002 and abs(float((out[0] - 0.5).mean())) < 0.002
    np.testing.assert_array_equal(out[1], flat[1])  # std 0: no noise
    again = everything_on.apply(torch.from_numpy(flat), noisy).numpy()
    np.testing.assert_array_equal(out, again)
    other = make_draw(S, S + 8, 6, **{**_explicit_args(2), "noise_std": np.array([0.02, 0.0])})
    assert not np.array_equal(everything_on.apply(torch.from_numpy(flat), other).numpy(), out)


def _explicit_args(n: int) -> dict:
    return dict(
        warp=np.zeros(n, bool), angle=np.zeros(n), zoom=np.ones((n, 2)), shift=np.zeros((n, 2)),
        contrast=np.zeros(n, bool), gamma=np.ones(n), noise_std=np.zeros(n), flip=np.zeros(n, bool),
    )  # fmt: skip


def test_draws_follow_monais_distributions() -> None:
    """Each transform fires with probability prob; angle in +-rotate_deg, zoom 1 +- scale per
    axis, shift +- translate x the side, gamma in its range, noise std in [0, noise_std]."""
    cfg = _cfg(
        prob=0.3, rotate_deg=12.0, scale=0.1, translate=0.05, gamma=(0.7, 1.5), noise_std=0.02, horizontal_flip=True
    )
    aug = Augmentation(cfg)
    d = aug.draw(4000, 64, 64, seed=3)
    for fired in (d.warp, d.contrast, d.noise_std > 0, d.flip):
        assert abs(float(fired.float().mean()) - 0.3) < 0.03
    theta = d.theta.numpy()[d.warp.numpy()]
    assert np.abs(np.arctan2(theta[:, 1, 0], theta[:, 0, 0])).max() <= np.deg2rad(12.0) * 1.12  # zoom skews it a bit
    gam = d.gamma.numpy()[d.contrast.numpy()]
    assert gam.min() >= 0.7 and gam.max() <= 1.5 and np.all(d.gamma.numpy()[~d.contrast.numpy()] == 1.0)
    assert d.noise_std.max() <= 0.02
    np.testing.assert_array_equal(
        d.theta[~d.warp].numpy(), np.tile([[1, 0, 0], [0, 1, 0]], (int((~d.warp).sum()), 1, 1))
    )
    # The same seed, the same draw; pinning and moving keep every field.
    again = aug.draw(4000, 64, 64, seed=3)
    assert torch.equal(again.theta, d.theta) and torch.equal(again.flip, d.flip)
    assert torch.equal(d.to("cpu").gamma, d.gamma) and len(d) == 4000


def test_transforms_left_out_and_shape_checked() -> None:
    off = Augmentation(_cfg(prob=1.0, rotate_deg=0, scale=0, translate=0, gamma=(1.0, 1.0), noise_std=0.0))
    x = torch.from_numpy(_images(2))[:, None]
    torch.testing.assert_close(off(x, seed=1), x)  # clip only: images already in [0, 1]
    assert "clip only" in repr(off) and "affine" in repr(Augmentation(_cfg()))
    with pytest.raises(ValueError, match="B, 1, H, W"):
        off(x[:, 0], seed=1)
    with pytest.raises(ValueError, match="drawn views"):
        off.apply(x, off.draw(3, S, S + 8, seed=0))
