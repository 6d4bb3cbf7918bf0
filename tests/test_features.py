"""pipeline.features: frozen embedding of a store, weights untouched, order kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.backbones import create_backbone
from pipeline.contracts import FeaturesInfo
from pipeline.features import embed, extract_features
from pipeline.params import Backbone


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_backbone(Backbone(name="efficientnet_lite0"), num_classes=2)


def _store(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size)).astype(np.float16)


def test_extract_features_keeps_weights_bit_identical(model) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}  # weights AND BN statistics
    model.train()  # a caller's train mode must not leak into the embedding
    images, augmented = _store(7), _store(5, seed=1)
    feats, aug_feats, info = extract_features(model, images, augmented, batch_size=3, num_threads=0)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert feats.shape == (7, 1280) and aug_feats.shape == (5, 1280)
    assert feats.dtype == np.float32 and np.isfinite(feats).all()
    assert info["D"] == 1280 and info["image_size"] == 32
    assert info["n_images"] == 7 and info["n_augmented"] == 5
    assert info["weights_sha256"] == model.weights_sha256 and len(info["weights_sha256"]) == 64
    # No wall time in info.json: it is a DVC dependency of linear/diagnose and must be
    # identical for an identical embedding.
    assert not {"seconds", "images_per_s"} & set(info)
    assert FeaturesInfo.model_validate(info).model_dump() == info  # the contract of data/features/info.json


def test_embedding_is_the_eval_mode_forward_in_row_order(model) -> None:
    images = _store(6, seed=2)
    feats, _ = embed(model, images, batch_size=4)
    model.eval()
    with torch.no_grad():
        ref = model.forward_features(torch.from_numpy(images.astype(np.float32))[:, None]).numpy()
    np.testing.assert_allclose(feats, ref, rtol=1e-4, atol=1e-5)
    # Row i of the output belongs to image i whatever the batching.
    single, _ = embed(model, images[::-1].copy(), batch_size=1)
    np.testing.assert_allclose(single[::-1], feats, rtol=1e-4, atol=1e-5)
    # Different images give different embeddings (not a constant output).
    assert np.abs(feats[0] - feats[1]).max() > 1e-3


def test_empty_augmented_store_gives_empty_features(model) -> None:
    feats, aug_feats, info = extract_features(
        model, _store(2), np.empty((0, 32, 32), np.float16), batch_size=8, num_threads=0
    )
    assert aug_feats.shape == (0, 1280) and feats.shape == (2, 1280)
    assert info["n_augmented"] == 0
    with pytest.raises(ValueError, match="augmented views have shape"):
        extract_features(model, _store(2), _store(1, size=16), batch_size=8, num_threads=0)
