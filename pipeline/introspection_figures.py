"""The PNG figures of reports/introspection/: filters, feature maps, and one sheet per unit group."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display under DVC / CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

MODELS = ("before", "after")
TITLES = {"before": "pretrained", "after": "fine-tuned"}


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _off(ax: Any) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _norm(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def plot_filters(filters: Mapping[str, np.ndarray], path: Path) -> Path:
    """First-layer filters (n, kh, kw) per model, each on a shared symmetric colour scale."""
    n = len(next(iter(filters.values())))
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(
        rows,
        cols * len(filters) + len(filters) - 1,
        figsize=(0.45 * (cols * len(filters) + 1), 0.45 * rows + 0.6),
        squeeze=False,
    )
    for ax in axes.ravel():
        ax.axis("off")
    for m, (name, w) in enumerate(filters.items()):
        vmax = float(np.abs(w).max()) or 1.0
        off = m * (cols + 1)
        for i in range(n):
            ax = axes[i // cols, off + i % cols]
            ax.imshow(w[i], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            ax.axis("on")
            _off(ax)
        axes[0, off].set_title(TITLES.get(name, name), loc="left", fontsize=9)
    fig.suptitle("First-layer filters (summed over colour channels: what a grey image meets)", fontsize=9)
    return _save(fig, path)


def plot_feature_maps(image: np.ndarray, maps: Mapping[str, Mapping[str, np.ndarray]], path: Path) -> Path:
    """One radiograph and, per model and depth, the first channels of the group output."""
    groups = list(next(iter(maps.values())))
    n_ch = len(next(iter(next(iter(maps.values())).values())))
    rows = len(maps) * len(groups)
    fig, axes = plt.subplots(rows, n_ch + 1, figsize=(1.3 * (n_ch + 1), 1.3 * rows), squeeze=False)
    r = 0
    for model, by_group in maps.items():
        for g in groups:
            axes[r, 0].imshow(image, cmap="gray", vmin=0, vmax=1)
            axes[r, 0].set_ylabel(f"{TITLES.get(model, model)}\n{g}", fontsize=7)
            for c, fmap in enumerate(by_group[g]):
                axes[r, c + 1].imshow(fmap, cmap="viridis")
                if r == 0:
                    axes[r, c + 1].set_title(f"ch {c}", fontsize=7)
            for ax in axes[r]:
                _off(ax)
            r += 1
    fig.suptitle("Feature maps of one training radiograph at several depths", fontsize=9)
    return _save(fig, path)


def plot_units(group: str, units: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Per unit (row) and model: the top-k training images, the activation-maximisation image and
    the guided-backprop reconstruction of the top image."""
    k = len(units[0]["before"]["top_images"])
    per = k + 2
    fig, axes = plt.subplots(len(units), per * 2, figsize=(1.1 * per * 2, 1.25 * len(units) + 0.4), squeeze=False)
    for r, u in enumerate(units):
        for m, model in enumerate(MODELS):
            d = u[model]
            base = m * per
            for j, (img, act) in enumerate(zip(d["top_images"], d["top_activations"], strict=True)):
                ax = axes[r, base + j]
                ax.imshow(img, cmap="gray", vmin=0, vmax=1)
                head = f"{TITLES[model]}\n" if r == 0 and j == 0 else ""
                ax.set_title(f"{head}{act:.2f}", fontsize=6, loc="left" if head else "center")
            axes[r, base + k].imshow(d["actmax_image"], cmap="gray", vmin=0, vmax=1)
            axes[r, base + k].set_title(f"max {d['actmax_start']:.1f}->{d['actmax_final']:.1f}", fontsize=6)
            axes[r, base + k + 1].imshow(_norm(np.abs(d["reconstruction"])), cmap="magma")
            axes[r, base + k + 1].set_title("guided BP", fontsize=6)
        axes[r, 0].set_ylabel(f"ch {u['channel']}", fontsize=7)
        for ax in axes[r]:
            _off(ax)
    fig.suptitle(
        f"{group}: top-{k} training radiographs (mean activation), activation maximisation, "
        "guided backprop; left pretrained, right fine-tuned",
        fontsize=8,
    )
    return _save(fig, path)
