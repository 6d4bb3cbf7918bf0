"""Grad-CAM heatmaps of the fine-tuned model for a few test cases of each outcome (TP/FP/TN/FN).

Why: a reader should see *where* the network looks, especially for its errors (a model that
scores the image border or a text marker rather than the lungs is not learning the disease).
MONAI's :class:`monai.visualize.GradCAM` is hooked on the model's ``gradcam_layer`` (the last
convolutional feature map, module ``"cam"`` of :class:`pipeline.backbones.ClassifierModel`) and
explains the positive-class logit.

Cases are chosen deterministically from the test split at the validation-chosen threshold: for
each outcome the most confident ones (TP/FP: highest probability first; TN/FN: lowest first), ties
broken by manifest row. Captions carry only the outcome, the manifest row and the probability.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.store import Images

OUTCOMES = ("TP", "FP", "TN", "FN")
OUTCOME_NAMES = {
    "TP": "true positive",
    "FP": "false positive",
    "TN": "true negative",
    "FN": "false negative",
}


class GradcamUnavailable(RuntimeError):
    """Grad-CAM cannot be drawn; the message says why (the report prints it)."""


@dataclass
class GradcamResult:
    figure: Path
    cases: list[dict[str, Any]]
    layer: str
    target_class: str
    threshold: float
    missing_outcomes: list[str] = field(default_factory=list)


def select_cases(
    test: pd.DataFrame, prob_col: str, positive_class: str, threshold: float, per_outcome: int
) -> list[dict[str, Any]]:
    """``per_outcome`` test cases per outcome at ``threshold`` (predict positive when prob >= it).

    ``test`` has columns ``row``, ``label`` and ``prob_col``. Returns dicts with ``outcome``,
    ``row``, ``label`` and ``prob``; an outcome with fewer cases contributes what it has.
    """
    if per_outcome < 0:
        raise ValueError(f"per_outcome must be >= 0, got {per_outcome}")
    df = test[["row", "label", prob_col]].rename(columns={prob_col: "prob"})
    pos = df["label"].astype(str) == positive_class
    pred = df["prob"] >= threshold
    masks = {"TP": pos & pred, "FP": ~pos & pred, "TN": ~pos & ~pred, "FN": pos & ~pred}
    out: list[dict[str, Any]] = []
    for outcome in OUTCOMES:
        sub = df[masks[outcome]]
        # Most confident first: high probability for predicted positives, low for negatives.
        ascending = outcome in ("TN", "FN")
        sub = sub.sort_values(["prob", "row"], ascending=[ascending, True], kind="mergesort")
        for r in sub.head(per_outcome).itertuples():
            out.append({"outcome": outcome, "row": int(r.row), "label": str(r.label), "prob": float(r.prob)})
    return out


def gradcam_maps(model: Any, layer_name: str, images: np.ndarray, class_idx: int) -> np.ndarray:
    """Grad-CAM of ``class_idx`` for grey images ``(n, S, S)`` in [0, 1] -> ``(n, S, S)`` in [0, 1].

    MONAI upsamples the map to the input size and min-max normalises each map.
    """
    import torch
    from monai.visualize import GradCAM  # lazy: importing MONAI costs seconds

    x = torch.from_numpy(np.asarray(images, dtype=np.float32)).unsqueeze(1)
    model = model.to("cpu").eval()
    cam = GradCAM(nn_module=model, target_layers=layer_name)
    with torch.enable_grad():
        maps = cam(x=x, class_idx=class_idx)
    # A constant map (no spatial evidence) normalises to 0/0: show it as no highlight, not NaN.
    return np.nan_to_num(maps.detach().cpu().numpy()[:, 0].astype(np.float32), nan=0.0)


def run_gradcam(
    model: Any,
    images: Images,
    test: pd.DataFrame,
    classes: Sequence[str],
    positive_class: str,
    threshold: float | None,
    per_outcome: int,
    out_png: Path,
) -> GradcamResult:
    """Select cases, compute their heatmaps and draw one overlay grid; or raise GradcamUnavailable."""
    from pipeline.report.figures import plot_gradcam_grid

    if per_outcome == 0:
        raise GradcamUnavailable("report.gradcam_per_outcome is 0")
    if threshold is None:
        raise GradcamUnavailable("the fine-tuned model has no validation-chosen threshold in evaluation.json")
    if len(test) == 0:
        raise GradcamUnavailable("the test split is empty")
    layer = getattr(model, "gradcam_layer_name", None)
    if not layer:
        raise GradcamUnavailable("the model exposes no gradcam_layer_name")
    prob_col = f"prob_{positive_class}"
    cases = select_cases(test, prob_col, positive_class, threshold, per_outcome)
    if not cases:
        raise GradcamUnavailable("no test cases to explain")
    rows = np.array([c["row"] for c in cases], dtype=np.int64)
    imgs = np.asarray(images[rows], dtype=np.float32)
    class_idx = list(classes).index(positive_class)
    maps = gradcam_maps(model, layer, imgs, class_idx)
    fig = plot_gradcam_grid(cases, list(imgs), list(maps), out_png)
    present = {c["outcome"] for c in cases}
    return GradcamResult(
        figure=fig,
        cases=cases,
        layer=layer,
        target_class=positive_class,
        threshold=float(threshold),
        missing_outcomes=[o for o in OUTCOMES if o not in present],
    )


def pipeline_gradcam(root: Path, params: Any, evaluation: dict | None, out_png: Path) -> GradcamResult:
    """Grad-CAM of the pipeline's fine-tuned model (models/finetune/best.pt) on its test cases.

    Raises :class:`GradcamUnavailable` with the reason when an input is missing (no checkpoint, no
    predictions, no threshold, no positive class), so the report can say so.
    """
    from pipeline import paths
    from pipeline.predictions import read_predictions

    root = Path(root)
    ckpt = root / paths.MODELS / "finetune" / "best.pt"
    preds = root / paths.predictions_csv("finetune")
    store = root / paths.STORE
    for f, what in ((ckpt, "fine-tuned model"), (preds, "fine-tune predictions"), (store, "image store")):
        if not f.exists():
            raise GradcamUnavailable(f"the {what} {f.relative_to(root)} is missing")
    positive = params.data.positive_class
    if positive is None:
        raise GradcamUnavailable("no data.positive_class: there is no single class to explain")
    if not evaluation:
        raise GradcamUnavailable("reports/evaluation.json is missing (it holds the operating threshold)")
    op = (evaluation.get("results", {}).get("finetune") or {}).get("operating_point") or {}
    classes = list(params.data.classes)
    df = read_predictions(preds, classes)
    test = df[df["split"] == "test"]
    from pipeline.store import open_store
    from pipeline.training import load_trained

    model = load_trained(ckpt, device="cpu")
    return run_gradcam(
        model,
        open_store(store),
        test,
        classes,
        positive,
        op.get("threshold"),
        params.report.gradcam_per_outcome,
        out_png,
    )
