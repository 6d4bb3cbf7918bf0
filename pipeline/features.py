"""Frozen embedding of an image store: the input of the linear (logistic regression) path, and
the pretrained network's ImageNet class scores computed from it (the linear_on_logits variant).

The backbone runs in eval mode (BatchNorm uses its ImageNet statistics, dropout is off) under
``torch.inference_mode`` (no autograd bookkeeping, and the weights cannot be modified), batch by
batch straight from the float16 memmap, so memory stays flat whatever the store size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.backbones import ClassifierModel, set_num_threads
from pipeline.common import get_logger, progress
from pipeline.loader import iter_images
from pipeline.store import Images

#: Batches of embeddings kept on the device between two copies to the host.
FLUSH_BATCHES = 16


log = get_logger(__name__)


@dataclass
class EmbedStats:
    n_images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.n_images / self.seconds if self.seconds > 0 else float("nan")


def prepare_frozen(model: ClassifierModel, device: torch.device) -> ClassifierModel:
    """Eval mode, no gradients, NHWC on the device: the setting every frozen embedding uses."""
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    # channels_last: the NHWC layout is what oneDNN (CPU) and cuDNN convolutions run fastest on.
    return model.use_channels_last(device.type in ("cpu", "cuda"))


def embed(
    model: ClassifierModel,
    images: Images,
    batch_size: int,
    device: torch.device | str = "cpu",
    desc: str = "features",
) -> tuple[np.ndarray, EmbedStats]:
    """``(N, S, S)`` images in [0, 1] -> ``(N, D)`` float32 pooled embeddings, in row order.

    ``model`` should come from :func:`prepare_frozen`; it is put in eval mode here regardless,
    so the embedding never depends on the caller's mode.
    """
    if images.ndim != 3:
        raise ValueError(f"images must be (N, S, S), got shape {images.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    model.eval()
    n = len(images)
    out = np.empty((n, model.num_features), dtype=np.float32)
    t0 = time.perf_counter()
    n_batches = -(-n // batch_size)
    done: list[tuple[int, torch.Tensor]] = []  # embeddings still on the device

    def flush() -> None:
        # One device -> host transfer per FLUSH_BATCHES batches, not a host sync per batch.
        for start, emb in done:
            out[start : start + len(emb)] = emb.cpu().numpy()
        done.clear()

    with torch.inference_mode():
        batches = iter_images(images, np.arange(n), batch_size, device)
        for rows, x in progress(batches, total=n_batches, desc=desc):
            done.append((int(rows[0]), model.forward_features(x).float()))
            if len(done) >= FLUSH_BATCHES:
                flush()
        flush()
    return out, EmbedStats(n, time.perf_counter() - t0)


def extract_features(
    model: ClassifierModel,
    images: Images,
    augmented: Images | None,
    batch_size: int,
    device: torch.device | str = "cpu",
    num_threads: int = 0,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Embed the store and the augmented views with the frozen ``model``.

    Returns ``(features (N, D), augmented features (M, D), info)``; ``info`` carries backbone,
    weights_sha256, D, image size, seconds and images/s for ``data/features/info.json``.
    """
    threads = set_num_threads(num_threads)
    device = torch.device(device)
    model = prepare_frozen(model, device)
    size = int(images.shape[-1])
    if augmented is None:
        augmented = np.empty((0, size, size), dtype=np.float16)
    if len(augmented) and augmented.shape[1:] != images.shape[1:]:
        raise ValueError(f"augmented views have shape {augmented.shape[1:]}, the store {images.shape[1:]}")
    feats, s1 = embed(model, images, batch_size, device, desc="features: images")
    aug_feats, s2 = embed(model, augmented, batch_size, device, desc="features: augmented")
    n_total, secs = s1.n_images + s2.n_images, s1.seconds + s2.seconds
    info = {
        **model.describe(),
        "D": model.num_features,
        "image_size": size,
        "n_images": s1.n_images,
        "n_augmented": s2.n_images,
        "batch_size": batch_size,
        "device": str(device),
        "num_threads": threads,
    }
    # Timings go to the log, not into info.json: info.json is part of a DVC output that linear and
    # diagnose depend on, and a wall time would make them rerun after every identical re-embedding.
    log.info(
        "embedded %d images + %d augmented views -> D=%d in %.1f s (%.1f img/s, %s, %d threads)",
        s1.n_images,
        s2.n_images,
        model.num_features,
        secs,
        n_total / secs if secs > 0 else 0.0,
        device,
        threads,
    )
    return feats, aug_feats, info


def imagenet_logits(head: nn.Linear, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """``(N, D)`` pooled embeddings -> ``(N, C)`` float32 ImageNet class scores (logits).

    ``head`` is the pretrained network's own classifier
    (:func:`pipeline.backbones.create_backbone_with_imagenet_head`); applied to the eval-mode
    pooled embedding it gives exactly the original network's eval-mode output (its dropout is
    the identity there), so no second pass over the images is needed.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[1] != head.in_features:
        raise ValueError(f"features must be (N, {head.in_features}), got shape {features.shape}")
    head = head.to("cpu").eval()
    out = np.empty((len(features), head.out_features), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(features), batch_size):
            stop = min(start + batch_size, len(features))
            out[start:stop] = head(torch.from_numpy(features[start:stop])).numpy()
    return out
