"""Class activation maps for a few test cases of each outcome (TP/FP/TN/FN): Grad-CAM of the
fine-tuned network and the exact class activation map (CAM) of the linear method.

Why: a reader should see *where* a model looks, especially for its errors (a model that scores
the image border or a text marker rather than the lungs is not learning the disease).

* **finetune**: MONAI's :class:`monai.visualize.GradCAM` hooked on the model's ``gradcam_layer``
  (the last convolutional feature map, module ``"cam"`` of
  :class:`pipeline.backbones.ClassifierModel`), explaining the positive-class logit. The maps are
  kept raw (MONAI's per-map min-max normalisation is switched off), so one colour scale serves
  every panel of the figure and panels can be compared.
* **linear**: its head is a logistic regression on the pooled, standardised frozen features
  (``models/linear/model.joblib``: ``StandardScaler -> LogisticRegression``), so the map is the
  original CAM of Zhou et al. (CVPR 2016): ``CAM(x, y) = sum_c (w_c / sigma_c) * A_c(x, y)``, with
  ``A`` the frozen backbone's last feature map, ``w`` the regression's weights of the positive
  class and ``sigma`` the scaler's standard deviations. Because the pooling is a spatial mean,
  the mean of the CAM plus the intercept terms (``b - sum_c w_c mu_c / sigma_c``) *is* the
  model's logit (:func:`linear_cam_weights`); the map shows, in logit units per cell, where the
  evidence for (red) and against (blue) the positive class lies.

Cases are chosen deterministically from the test split at each method's validation-chosen
threshold: for each outcome the most confident ones (TP/FP: highest probability first; TN/FN:
lowest first), ties broken by manifest row. Panels carry only the outcome, the manifest row, the
true and predicted labels and the probability.
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
#: The methods whose maps the report draws, in report order.
CAM_METHODS = ("finetune", "linear")


class GradcamUnavailable(RuntimeError):
    """A map cannot be drawn; the message says why (the report prints it)."""


@dataclass
class CamResult:
    method: str
    kind: str  # "Grad-CAM" or "CAM"
    figure: Path
    cases: list[dict[str, Any]]
    layer: str
    target_class: str
    threshold: float
    scale: tuple[float, float]  # the figure's one colour scale (vmin, vmax)
    missing_outcomes: list[str] = field(default_factory=list)


GradcamResult = CamResult  # the name of earlier versions


def negative_name(classes: Sequence[str], positive_class: str) -> str:
    """The predicted label when the positive class is not predicted."""
    others = [c for c in classes if c != positive_class]
    return others[0] if len(others) == 1 else f"not {positive_class}"


def select_cases(
    test: pd.DataFrame,
    prob_col: str,
    positive_class: str,
    threshold: float,
    per_outcome: int,
    negative: str | None = None,
) -> list[dict[str, Any]]:
    """``per_outcome`` test cases per outcome at ``threshold`` (predict positive when prob >= it).

    ``test`` has columns ``row``, ``label`` and ``prob_col``. Returns dicts with ``outcome``,
    ``row``, ``label``, ``predicted`` and ``prob``; an outcome with fewer cases contributes what
    it has.
    """
    if per_outcome < 0:
        raise ValueError(f"per_outcome must be >= 0, got {per_outcome}")
    negative = negative or f"not {positive_class}"
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
            out.append(
                {
                    "outcome": outcome,
                    "row": int(r.row),
                    "label": str(r.label),
                    "predicted": positive_class if outcome in ("TP", "FP") else negative,
                    "prob": float(r.prob),
                }
            )
    return out


def gradcam_maps(model: Any, layer_name: str, images: np.ndarray, class_idx: int) -> np.ndarray:
    """Raw Grad-CAM of ``class_idx`` for grey images ``(n, S, S)`` in [0, 1] -> ``(n, S, S)``.

    MONAI upsamples each map to the input size; its per-map min-max normalisation is replaced by
    the identity, so maps keep their common units (ReLU of the gradient-weighted activations).
    """
    import torch
    from monai.visualize import GradCAM  # lazy: importing MONAI costs seconds

    x = torch.from_numpy(np.asarray(images, dtype=np.float32)).unsqueeze(1)
    model = model.to("cpu").eval()
    cam = GradCAM(nn_module=model, target_layers=layer_name, postprocessing=lambda m: m)
    with torch.enable_grad():
        maps = cam(x=x, class_idx=class_idx)
    return np.nan_to_num(maps.detach().cpu().numpy()[:, 0].astype(np.float32), nan=0.0)


def linear_cam_weights(model: Any, class_index: int) -> tuple[np.ndarray, float]:
    """``(w_eff (D,), b_eff)`` of a ``StandardScaler -> LogisticRegression`` pipeline such that the
    score of class ``class_index`` is ``w_eff . f + b_eff`` for pooled features ``f``: the
    decision function for class 1 of a binary model (its negative for class 0), the class's row
    of ``decision_function`` for more classes."""
    scaler = model.named_steps["standardscaler"]
    lr = model.named_steps["logisticregression"]
    coef = np.asarray(lr.coef_, dtype=np.float64)
    intercept = np.asarray(lr.intercept_, dtype=np.float64)
    if coef.shape[0] == 1:  # binary: one row, the logit of class 1
        sign = 1.0 if class_index == 1 else -1.0
        w, b = sign * coef[0], sign * float(intercept[0])
    else:
        w, b = coef[class_index], float(intercept[class_index])
    scale = np.ones_like(w) if scaler.scale_ is None else np.asarray(scaler.scale_, dtype=np.float64)
    mean = np.zeros_like(w) if scaler.mean_ is None else np.asarray(scaler.mean_, dtype=np.float64)
    w_eff = w / scale
    return w_eff, b - float(w_eff @ mean)


def linear_cam_maps(backbone: Any, model: Any, images: np.ndarray, class_index: int) -> tuple[np.ndarray, np.ndarray]:
    """CAM of the linear method: ``(maps (n, S, S) upsampled bilinearly, cells (n, h, w))`` in logit
    units, for grey images ``(n, S, S)``. ``cells.mean((1, 2)) + b_eff`` equals the logistic
    regression's score of ``class_index`` on the frozen, pooled features (checked here:
    :class:`GradcamUnavailable` when the backbone does not pool by a spatial mean)."""
    import torch
    import torch.nn.functional as F

    from pipeline.backbones import images_to_tensor

    w, _ = linear_cam_weights(model, class_index)
    backbone = backbone.to("cpu").eval()
    with torch.inference_mode():
        fmap = backbone.feature_map(
            images_to_tensor(np.asarray(images, dtype=np.float32), torch.device("cpu"))
        ).double()
        pooled = backbone.trunk.pool(fmap).double()
        if not torch.allclose(pooled, fmap.mean(dim=(2, 3)), rtol=1e-5, atol=1e-6):
            raise GradcamUnavailable("the backbone's pooling is not a spatial mean, so the linear CAM is undefined")
        if fmap.shape[1] != len(w):
            raise GradcamUnavailable(
                f"the linear model expects {len(w)} features, the backbone's feature map has {fmap.shape[1]} channels"
            )
        cells = torch.einsum("c,nchw->nhw", torch.from_numpy(w), fmap)
        size = images.shape[-2:]
        up = F.interpolate(cells[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return up.float().numpy(), cells.numpy()


def cam_scale(maps: Sequence[np.ndarray], signed: bool) -> tuple[float, float]:
    """One colour scale for every map of a figure: ``[0, max]``, or ``[-m, m]`` for signed maps."""
    peak = float(max((np.abs(m).max() for m in maps), default=0.0)) or 1e-12
    return (-peak, peak) if signed else (0.0, peak)


def _draw(
    method: str,
    kind: str,
    layer: str,
    cases: list[dict[str, Any]],
    images: np.ndarray,
    maps: np.ndarray,
    signed: bool,
    positive: str,
    threshold: float,
    out_png: Path,
) -> CamResult:
    from pipeline.report.figures import plot_cam_grid

    scale = cam_scale(list(maps), signed)
    label = "logit contribution per cell" if signed else "Grad-CAM (raw, shared scale)"
    fig = plot_cam_grid(
        cases,
        list(images),
        list(maps),
        out_png,
        scale=scale,
        cmap="RdBu_r" if signed else "inferno",
        colorbar_label=label,
        title=f"{method}: {kind} of p({positive}), one colour scale",
        positive=positive,
    )
    present = {c["outcome"] for c in cases}
    return CamResult(
        method=method,
        kind=kind,
        figure=fig,
        cases=cases,
        layer=layer,
        target_class=positive,
        threshold=float(threshold),
        scale=scale,
        missing_outcomes=[o for o in OUTCOMES if o not in present],
    )


def _cases(
    test: pd.DataFrame, classes: Sequence[str], positive: str, threshold: float | None, per_outcome: int, what: str
) -> list[dict[str, Any]]:
    if per_outcome == 0:
        raise GradcamUnavailable("report.gradcam_per_outcome is 0")
    if threshold is None:
        raise GradcamUnavailable(f"the {what} has no validation-chosen threshold in evaluation.json")
    if len(test) == 0:
        raise GradcamUnavailable("the test split is empty")
    cases = select_cases(test, f"prob_{positive}", positive, threshold, per_outcome, negative_name(classes, positive))
    if not cases:
        raise GradcamUnavailable("no test cases to explain")
    return cases


def run_gradcam(
    model: Any,
    images: Images,
    test: pd.DataFrame,
    classes: Sequence[str],
    positive_class: str,
    threshold: float | None,
    per_outcome: int,
    out_png: Path,
    method: str = "finetune",
) -> CamResult:
    """Select cases, compute their Grad-CAMs and draw one overlay grid; or raise GradcamUnavailable."""
    layer = getattr(model, "gradcam_layer_name", None)
    if not layer:
        raise GradcamUnavailable("the model exposes no gradcam_layer_name")
    cases = _cases(test, classes, positive_class, threshold, per_outcome, f"{method} model")
    imgs = np.asarray(images[np.array([c["row"] for c in cases], dtype=np.int64)], dtype=np.float32)
    maps = gradcam_maps(model, layer, imgs, list(classes).index(positive_class))
    return _draw(method, "Grad-CAM", layer, cases, imgs, maps, False, positive_class, float(threshold), out_png)  # type: ignore[arg-type]


def run_linear_cam(
    backbone: Any,
    model: Any,
    images: Images,
    test: pd.DataFrame,
    classes: Sequence[str],
    positive_class: str,
    threshold: float | None,
    per_outcome: int,
    out_png: Path,
) -> CamResult:
    """The linear method's CAM for its test cases at its threshold; or raise GradcamUnavailable."""
    cases = _cases(test, classes, positive_class, threshold, per_outcome, "linear model")
    imgs = np.asarray(images[np.array([c["row"] for c in cases], dtype=np.int64)], dtype=np.float32)
    maps, _ = linear_cam_maps(backbone, model, imgs, list(classes).index(positive_class))
    return _draw("linear", "CAM", "cam", cases, imgs, maps, True, positive_class, float(threshold), out_png)  # type: ignore[arg-type]


def _require(root: Path, files: Sequence[tuple[Path, str]]) -> None:
    for f, what in files:
        if not (root / f).exists():
            raise GradcamUnavailable(f"the {what} {f} is missing")


def method_cam(root: Path, params: Any, evaluation: dict | None, method: str, out_png: Path) -> CamResult:
    """The map of ``method`` (finetune: Grad-CAM; linear: CAM) on its test cases.

    Raises :class:`GradcamUnavailable` with the reason when an input is missing (no model, no
    predictions, no threshold, no positive class), so the report can say so.
    """
    from pipeline import paths
    from pipeline.predictions import read_predictions
    from pipeline.store import open_store

    root = Path(root)
    preds = paths.predictions_csv(method)
    if method == "finetune":
        model_file = paths.MODELS / "finetune" / "best.pt"
        _require(
            root, [(model_file, "fine-tuned model"), (preds, "fine-tune predictions"), (paths.STORE, "image store")]
        )
    elif method == "linear":
        model_file = paths.MODELS / "linear" / "model.joblib"
        _require(
            root,
            [
                (model_file, "linear model"),
                (preds, "linear predictions"),
                (paths.FEATURES_INFO, "features info"),
                (paths.STORE, "image store"),
            ],
        )
    else:
        raise GradcamUnavailable(f"no class activation map is defined for {method}")
    positive = params.data.positive_class
    if positive is None:
        raise GradcamUnavailable("no data.positive_class: there is no single class to explain")
    if not evaluation:
        raise GradcamUnavailable("reports/evaluation.json is missing (it holds the operating threshold)")
    op = (evaluation.get("results", {}).get(method) or {}).get("operating_point") or {}
    classes = list(params.data.classes)
    df = read_predictions(root / preds, classes)
    test = df[df["split"] == "test"]
    store = open_store(root / paths.STORE)
    per = params.report.gradcam_per_outcome
    if method == "finetune":
        from pipeline.training import load_trained

        model = load_trained(root / model_file, device="cpu")
        return run_gradcam(model, store, test, classes, positive, op.get("threshold"), per, out_png)
    backbone, linear = _frozen_backbone(root, params), _load_linear(root / model_file)
    return run_linear_cam(backbone, linear, store, test, classes, positive, op.get("threshold"), per, out_png)


def _load_linear(path: Path) -> Any:
    import joblib

    return joblib.load(path)


def _frozen_backbone(root: Path, params: Any) -> Any:
    """The backbone the features stage embedded with (checked by its weights' sha256)."""
    import torch

    from pipeline import contracts as C
    from pipeline import paths
    from pipeline.backbones import BackboneError, create_backbone

    info = C.read_contract(root / paths.FEATURES_INFO, C.FeaturesInfo)
    try:
        with torch.random.fork_rng(devices=[]):
            backbone = create_backbone(params.backbone, len(params.data.classes))
    except BackboneError as err:
        raise GradcamUnavailable(f"the frozen backbone cannot be built: {err}") from None
    if backbone.weights_sha256 != info.weights_sha256 or backbone.backbone_name != info.backbone:
        raise GradcamUnavailable(
            f"the configured backbone ({backbone.backbone_name}) is not the one the features were made with "
            f"({info.backbone}, weights sha256 {info.weights_sha256[:12]}…); rerun the features and linear stages"
        )
    return backbone


def pipeline_cams(
    root: Path, params: Any, evaluation: dict | None, fig_dir: Path
) -> tuple[dict[str, CamResult], dict[str, str]]:
    """The maps of :data:`CAM_METHODS` (``fig_dir/cam_<method>.png``), and why any is missing."""
    cams: dict[str, CamResult] = {}
    notes: dict[str, str] = {}
    for method in CAM_METHODS:
        try:
            cams[method] = method_cam(root, params, evaluation, method, Path(fig_dir) / f"cam_{method}.png")
        except GradcamUnavailable as err:
            notes[method] = str(err)
    return cams, notes


__all__ = [
    "CAM_METHODS",
    "CamResult",
    "GradcamUnavailable",
    "cam_scale",
    "gradcam_maps",
    "linear_cam_maps",
    "linear_cam_weights",
    "method_cam",
    "pipeline_cams",
    "run_gradcam",
    "run_linear_cam",
    "select_cases",
]
