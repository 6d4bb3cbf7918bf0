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
    assert FeaturesInfo.model_validate(info).model_dump(exclude_unset=True) == info  # info.json contract


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


def test_embeddings_copied_to_the_host_in_groups_keep_row_order(model, monkeypatch) -> None:
    """The embeddings stay on the device for FLUSH_BATCHES batches, then go to the host together:
    a flush in the middle of the run puts every row where it belongs."""
    import pipeline.features as features

    images = _store(7, seed=3)
    monkeypatch.setattr(features, "FLUSH_BATCHES", 100)
    whole, _ = embed(model, images, batch_size=2)
    monkeypatch.setattr(features, "FLUSH_BATCHES", 3)  # 4 batches: a flush in the loop, one after it
    grouped, _ = embed(model, images, batch_size=2)
    np.testing.assert_array_equal(grouped, whole)
    assert np.abs(grouped[-1] - grouped[0]).max() > 1e-3


def test_empty_augmented_store_gives_empty_features(model) -> None:
    feats, aug_feats, info = extract_features(
        model, _store(2), np.empty((0, 32, 32), np.float16), batch_size=8, num_threads=0
    )
    assert aug_feats.shape == (0, 1280) and feats.shape == (2, 1280)
    assert info["n_augmented"] == 0
    with pytest.raises(ValueError, match="augmented views have shape"):
        extract_features(model, _store(2), _store(1, size=16), batch_size=8, num_threads=0)


def test_imagenet_logits_are_the_original_networks_output() -> None:
    """The kept ImageNet classifier on the frozen embedding = the unmodified pretrained network."""
    from efficientnet_lite_pytorch import EfficientNet

    from pipeline.backbones import _lite_weights_file, create_backbone_with_imagenet_head
    from pipeline.features import imagenet_logits, prepare_frozen

    model, head, note = create_backbone_with_imagenet_head(Backbone(name="efficientnet_lite0"), num_classes=2)
    assert note is None and head is not None and (head.in_features, head.out_features) == (1280, 1000)
    assert not any(p is q for p in head.parameters() for q in model.parameters())  # not part of the model
    model = prepare_frozen(model, torch.device("cpu"))
    images = _store(3, seed=4)
    feats, _ = embed(model, images, batch_size=2)
    ours = imagenet_logits(head, feats)
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    net.load_state_dict(torch.load(_lite_weights_file("efficientnet_lite0"), weights_only=True))
    net.eval()
    with torch.no_grad():
        x = model.preprocess(torch.from_numpy(images.astype(np.float32))[:, None]).contiguous()
        ref = net(x).numpy()
    assert ours.shape == (3, 1000) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="features must be"):
        imagenet_logits(head, feats[:, :10])


def test_features_stage_writes_logits_or_says_why_not(tmp_path, monkeypatch) -> None:
    from conftest import make_processed, repo_params, write_params

    from pipeline import paths
    from pipeline.backbones import _EfficientNetLiteTrunk
    from pipeline.contracts import read_contract
    from pipeline.steps.features import run_features
    from pipeline.store import write_store
    from pipeline.workspace import Workspace

    ws = Workspace(tmp_path)
    make_processed(ws, ["train", "train", "val", "test"], size=32)
    write_store(ws.path(paths.AUGMENTED_STORE), _store(2))
    raw = repo_params()
    raw["train"].update(device="cpu", num_threads=1)
    params = write_params(tmp_path, raw)
    run_features(params, ws)
    info = read_contract(ws.path(paths.FEATURES_INFO), FeaturesInfo)
    feats, logits = np.load(ws.path(paths.FEATURES)), np.load(ws.path(paths.LOGITS))
    assert info.logits_dim == 1000 and info.logits_note is None
    assert logits.shape == (4, 1000) and np.load(ws.path(paths.AUGMENTED_LOGITS)).shape == (2, 1000)
    assert feats.shape == (4, 1280) and np.isfinite(logits).all() and logits.std() > 0
    # A backbone without an ImageNet classifier: no logits (old ones removed), the reason recorded.
    monkeypatch.setattr(_EfficientNetLiteTrunk, "imagenet_classifier", lambda self: None)
    run_features(params, ws)
    info = read_contract(ws.path(paths.FEATURES_INFO), FeaturesInfo)
    assert info.logits_dim is None and "no ImageNet classifier" in info.logits_note
    assert not ws.path(paths.LOGITS).exists() and not ws.path(paths.AUGMENTED_LOGITS).exists()
