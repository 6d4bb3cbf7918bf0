"""Matplotlib figures of the diagnose and report stages, drawn from the JSON reports only.

Every function takes already-computed numbers (diagnostics.json, evaluation.json) and writes one
PNG; none computes a statistic. The Agg backend is forced: stages run headless under DVC and CI.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display under DVC / CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.params import VARIANT_NAMES  # noqa: E402
from pipeline.report.blocks import fci, fnum  # noqa: E402

# One colour per method across every figure, so a reader can follow a method from plot to plot:
# the main three, then each variant its own (fixed by its place in the contract's name list).
PATH_COLORS = {"linear": "#1b9e77", "finetune": "#d95f02", "scratch": "#7570b3"}
VARIANT_COLORS = dict(
    zip(
        VARIANT_NAMES,
        ("#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#1f78b4", "#b2df8a", "#fb9a99", "#cab2d6", "#17becf"),
        strict=False,
    )
)
DPI = 110


def _color(path: str) -> str:
    return PATH_COLORS.get(path) or VARIANT_COLORS.get(path, "#444444")


def _save(fig: plt.Figure, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    # metadata: no Software chunk, so the same numbers give byte-identical PNGs (DVC cache).
    fig.savefig(out, dpi=DPI, metadata={"Software": None}, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    return out


def png_data_uri(path: str | Path) -> str:
    """A PNG file as a ``data:`` URI, so the HTML report is one self-contained file."""
    data = Path(path).read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError(f"{path} is not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _none_to_nan(values: Sequence[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


# --------------------------------------------------------------------------- diagnose figures


def plot_training_curves(paths: Mapping[str, Mapping[str, Any]], out: str | Path) -> Path:
    """Loss and AUROC per epoch (train dashed, val solid) per epoch-trained path.

    Marks the kept (best) epoch with a dot and the overfitting onset with a vertical line.
    """
    names = [p for p in ("finetune", "scratch") if p in paths]
    if not names:
        raise ValueError("no epoch-trained path to plot")
    fig, axes = plt.subplots(2, len(names), figsize=(5.2 * len(names), 6.4), squeeze=False)
    for j, name in enumerate(names):
        d = paths[name]
        ep = np.array(d["epochs"])
        c = d["curves"]
        for i, (metric, ylabel) in enumerate((("loss", "loss"), ("auroc", "AUROC"))):
            ax = axes[i][j]
            tr, va = _none_to_nan(c[f"train_{metric}"]), _none_to_nan(c[f"val_{metric}"])
            ax.plot(ep, tr, "--o", color=_color(name), alpha=0.6, ms=3, label="train")
            ax.plot(ep, va, "-o", color=_color(name), ms=3, label="validation")
            best = d["best_epoch"]
            k = list(ep).index(best)
            ax.plot([best], [va[k]], "o", ms=10, mfc="none", mec="black", label=f"kept epoch {best}")
            onset = d.get("overfit_onset")
            if onset:
                ax.axvline(onset["epoch"], color="crimson", lw=1, ls=":", label=f"overfit onset {onset['epoch']}")
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{name}: {ylabel}")
            ax.grid(alpha=0.3)
            if metric == "auroc":
                ax.set_ylim(0.0, 1.02)
            ax.legend(fontsize=7, loc="best")
    return _save(fig, out)


def plot_validation_curve(linear: Mapping[str, Any], out: str | Path) -> Path:
    """Linear path: train vs cross-validated AUROC over C (log axis), chosen C marked."""
    rows = linear["curve"]
    C = np.array([r["C"] for r in rows], dtype=float)
    tr = _none_to_nan([r["train_auroc"] for r in rows])
    cv = _none_to_nan([r["cv_auroc"] for r in rows])
    sd = np.nan_to_num(_none_to_nan([r.get("cv_auroc_std") for r in rows]))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogx(C, tr, "--o", color=_color("linear"), alpha=0.6, label="train folds")
    ax.semilogx(C, cv, "-o", color=_color("linear"), label="cross-validated")
    ax.fill_between(C, cv - sd, cv + sd, color=_color("linear"), alpha=0.15, label="CV ± 1 SD")
    ax.axvline(linear["best_C"], color="black", ls=":", lw=1, label=f"chosen C = {linear['best_C']:g}")
    ax.set_xlabel("C (inverse regularisation)")
    ax.set_ylabel("AUROC")
    ax.set_ylim(0.0, 1.02)
    ax.set_title("linear: validation curve over C")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def plot_learning_curve(summary: Sequence[Mapping[str, Any]], out: str | Path) -> Path:
    """Test AUROC (patient-level 95% CI) against the number of training patients, one line per path."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    names = [p for p in ("linear", "finetune", "scratch") if any(r["path"] == p for r in summary)]
    offsets = {n: (i - (len(names) - 1) / 2) * 0.012 for i, n in enumerate(names)}
    for name in names:
        rows = sorted((r for r in summary if r["path"] == name), key=lambda r: r["n_patients"])
        n = np.array([r["n_patients"] for r in rows], dtype=float)
        a = _none_to_nan([r["test_auroc"] for r in rows])
        lo = _none_to_nan([r["ci_low"] for r in rows])
        hi = _none_to_nan([r["ci_high"] for r in rows])
        x = n * (1 + offsets[name])  # small dodge so the error bars do not hide each other
        yerr = np.vstack([np.nan_to_num(a - lo), np.nan_to_num(hi - a)])
        ax.errorbar(x, a, yerr=yerr, fmt="-o", capsize=3, color=_color(name), label=name)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("training patients")
    ax.set_ylabel("test AUROC (patient-level 95% CI)")
    ax.set_ylim(0.0, 1.02)
    ax.set_title("Learning curve")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def plot_trifecta(paths: Mapping[str, Mapping[str, Any]], out: str | Path) -> Path:
    """Validation AUROC per epoch of finetune vs scratch with start, 95%-convergence and best."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name in ("finetune", "scratch"):
        if name not in paths:
            continue
        d = paths[name]
        ep = np.array(d["epochs"])
        va = _none_to_nan(d["curves"]["val_auroc"])
        ax.plot(ep, va, "-o", ms=3, color=_color(name), label=f"{name} (val)")
        conv = d.get("convergence")
        if conv:
            ax.axhline(conv["threshold"], color=_color(name), lw=0.8, ls=":")
            ax.plot(
                [conv["epoch"]],
                [va[list(ep).index(conv["epoch"])]],
                "s",
                color=_color(name),
                ms=7,
                mfc="none",
                label=f"{name}: 95% of best at epoch {conv['epoch']}",
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation AUROC")
    ax.set_ylim(0.0, 1.02)
    ax.set_title("Transfer trifecta: start, convergence, asymptote")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out)


# --------------------------------------------------------------------------- report figures


def _split_results(evaluation: Mapping[str, Any], split: str) -> list[tuple[str, Mapping[str, Any]]]:
    out = []
    for path in evaluation.get("paths", []):
        s = evaluation.get("results", {}).get(path, {}).get("splits", {}).get(split)
        if s:
            out.append((path, s))
    return out


def plot_roc_pr(evaluation: Mapping[str, Any], splits: Sequence[str], kind: str, out: str | Path) -> Path:
    """ROC (``kind='roc'``) or precision-recall (``'pr'``) curves of every path, one panel per split."""
    if kind not in ("roc", "pr"):
        raise ValueError(f"kind must be roc or pr, got {kind}")
    fig, axes = plt.subplots(1, len(splits), figsize=(5.0 * len(splits), 4.4), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=False):
        for path, s in _split_results(evaluation, split):
            curves = (s.get("curves") or {}).get(kind) or []
            if not curves:
                continue
            c = curves[0]
            if kind == "roc":
                a = s.get("auroc") or {}
                lab = f"{path} AUROC {fci(a.get('value'), a.get('ci_low'), a.get('ci_high'), 2)}"
                ax.plot(c["fpr"], c["tpr"], color=_color(path), label=lab)
            else:
                lab = f"{path} AP {fnum(s.get('average_precision'), 2)}"
                ax.step(c["recall"], c["precision"], where="post", color=_color(path), label=lab)
        if kind == "roc":
            ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
            ax.set_xlabel("1 − specificity (FPR)")
            ax.set_ylabel("sensitivity (TPR)")
        else:
            ax.set_xlabel("recall (sensitivity)")
            ax.set_ylabel("precision (PPV)")
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.02)
        ax.set_title(f"{'ROC' if kind == 'roc' else 'Precision-recall'}: {split}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right" if kind == "roc" else "lower left")
    return _save(fig, out)


def plot_calibration(evaluation: Mapping[str, Any], splits: Sequence[str], out: str | Path) -> Path:
    """Reliability diagrams (mean predicted vs observed fraction positive per bin)."""
    fig, axes = plt.subplots(1, len(splits), figsize=(5.0 * len(splits), 4.4), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=False):
        for path, s in _split_results(evaluation, split):
            cal = s.get("calibration") or {}
            bins = [b for b in cal.get("bins", []) if b.get("mean_predicted") is not None and b.get("count")]
            if not bins:
                continue
            x = [b["mean_predicted"] for b in bins]
            y = [b["fraction_positive"] for b in bins]
            ax.plot(
                x,
                y,
                "-o",
                ms=4,
                color=_color(path),
                label=f"{path} ECE {fnum(cal.get('ece'), 2)}, Brier {fnum(cal.get('brier'), 2)}",
            )
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="perfect calibration")
        ax.set_xlabel("mean predicted probability")
        ax.set_ylabel("observed fraction positive")
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.02)
        ax.set_title(f"Calibration: {split}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    return _save(fig, out)


def plot_confusion(
    evaluation: Mapping[str, Any], splits: Sequence[str], classes: Sequence[str], positive: str, out: str | Path
) -> Path:
    """Confusion matrices at the validation-chosen operating point: rows = paths, cols = splits."""
    paths = list(evaluation.get("paths", []))
    fig, axes = plt.subplots(len(paths), len(splits), figsize=(3.4 * len(splits), 3.0 * len(paths)), squeeze=False)
    neg = "not " + positive if len(classes) != 2 else next(c for c in classes if c != positive)
    for i, path in enumerate(paths):
        for j, split in enumerate(splits):
            ax = axes[i][j]
            res = evaluation.get("results", {}).get(path, {})
            s = res.get("splits", {}).get(split) or {}
            blk = s.get("at_threshold") or {}
            conf = blk.get("confusion")
            ax.set_title(f"{path}: {split}", fontsize=9)
            if not conf:
                ax.text(0.5, 0.5, "not available", ha="center", va="center")
                ax.axis("off")
                continue
            m = np.array([[conf["tn"], conf["fp"]], [conf["fn"], conf["tp"]]], dtype=float)
            ax.imshow(m, cmap="Blues", vmin=0, vmax=max(1.0, m.max()))
            for (r, c), v in np.ndenumerate(m):
                ax.text(
                    c,
                    r,
                    f"{int(v)}",
                    ha="center",
                    va="center",
                    color="white" if v > m.max() / 2 else "black",
                    fontsize=11,
                )
            ax.set_xticks([0, 1], [f"pred {neg}", f"pred {positive}"], fontsize=7)
            ax.set_yticks([0, 1], [f"true {neg}", f"true {positive}"], fontsize=7)
            thr = (res.get("operating_point") or {}).get("threshold")
            ax.set_xlabel(f"threshold {fnum(thr, 3)}", fontsize=7)
    return _save(fig, out)


def cam_figure(
    cases: Sequence[Mapping[str, Any]],
    images: Sequence[np.ndarray],
    cams: Sequence[np.ndarray],
    scale: tuple[float, float],
    cmap: str,
    colorbar_label: str,
    title: str,
    positive: str,
) -> plt.Figure:
    """Images with their class activation maps overlaid, every map on the one colour scale
    ``scale`` with a colour bar; each panel titled with outcome, manifest row, true and predicted
    label and the probability of ``positive``."""
    n = len(cases)
    if n == 0:
        raise ValueError("no cases to draw")
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols + 0.8, 3.5 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    overlay = None
    for ax, case, img, cam in zip(axes.ravel(), cases, images, cams, strict=False):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        overlay = ax.imshow(cam, cmap=cmap, alpha=0.45, vmin=scale[0], vmax=scale[1])
        ax.set_title(
            f"{case['outcome']} · row {case['row']}\ntrue {case['label']} · pred {case['predicted']}\n"
            f"p({positive}) = {fnum(case['prob'])}",
            fontsize=8,
        )
    fig.suptitle(title, fontsize=9)
    assert overlay is not None
    bar = fig.colorbar(overlay, ax=axes.ravel().tolist(), shrink=0.8, pad=0.02)
    bar.set_label(colorbar_label, fontsize=8)
    return fig


def plot_cam_grid(
    cases: Sequence[Mapping[str, Any]],
    images: Sequence[np.ndarray],
    cams: Sequence[np.ndarray],
    out: str | Path,
    scale: tuple[float, float],
    cmap: str,
    colorbar_label: str,
    title: str,
    positive: str,
) -> Path:
    """:func:`cam_figure` saved as one PNG."""
    fig = cam_figure(cases, images, cams, scale, cmap, colorbar_label, title, positive)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # No tight_layout: it cannot place a colour bar shared by several axes.
    fig.savefig(out, dpi=DPI, metadata={"Software": None}, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    return out
