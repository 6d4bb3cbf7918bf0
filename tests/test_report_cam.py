"""Class activation maps of the report: the linear method's CAM is its logit cell by cell, Grad-CAM
maps keep their raw scale, and every figure has one colour scale with a colour bar and labelled
panels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.backbones import create_backbone
from pipeline.features import embed, prepare_frozen
from pipeline.params import Backbone
from pipeline.report import gradcam as G

SIZE = 96  # a 3 x 3 last feature map: the CAM has cells to differ


@pytest.fixture(scope="module")
def tiny() -> tuple[object, np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    model = create_backbone(Backbone(name="efficientnet_lite0"), 2, pretrained=False)
    images = np.random.default_rng(0).random((12, SIZE, SIZE)).astype(np.float32)
    frozen = prepare_frozen(model, torch.device("cpu"))
    feats, _ = embed(frozen, images, 6)
    return frozen, images, feats


@pytest.mark.parametrize("n_classes", [2, 3])
def test_linear_cam_is_the_logit_up_to_the_pooling(tiny, n_classes) -> None:
    backbone, images, feats = tiny
    y = np.arange(len(images)) % n_classes
    linear = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)).fit(feats, y)
    scores = linear.decision_function(feats)
    for k in range(n_classes):
        maps, cells = G.linear_cam_maps(backbone, linear, images, k)
        _, b = G.linear_cam_weights(linear, k)
        assert maps.shape == (len(images), SIZE, SIZE) and cells.shape[1:] == (3, 3)
        assert np.ptp(cells[0]) > 0  # a map, not a constant
        want = scores[:, k] if n_classes > 2 else (scores if k == 1 else -scores)
        np.testing.assert_allclose(cells.mean(axis=(1, 2)) + b, want, rtol=1e-4, atol=1e-4)


def test_linear_cam_refuses_a_feature_count_it_does_not_match(tiny) -> None:
    backbone, images, feats = tiny
    linear = make_pipeline(StandardScaler(), LogisticRegression()).fit(feats[:, :5], np.arange(12) % 2)
    with pytest.raises(G.GradcamUnavailable, match="expects 5 features"):
        G.linear_cam_maps(backbone, linear, images, 1)


def test_gradcam_maps_keep_their_raw_common_scale() -> None:
    torch.manual_seed(1)
    model = create_backbone(Backbone(name="efficientnet_lite0"), 2, pretrained=False)
    images = np.random.default_rng(1).random((3, 32, 32)).astype(np.float32)
    maps = G.gradcam_maps(model, "cam", images, 1)
    assert maps.shape == (3, 32, 32) and (maps >= 0).all()
    peaks = maps.reshape(3, -1).max(axis=1)
    assert not np.allclose(peaks, 1.0)  # MONAI's per-map min-max normalisation is off
    assert len(set(np.round(peaks, 6))) > 1


def test_one_colour_scale_per_figure() -> None:
    maps = [np.array([[0.0, 2.0]]), np.array([[0.5, 0.1]])]
    assert G.cam_scale(maps, signed=False) == (0.0, 2.0)
    assert G.cam_scale([np.array([[-3.0, 1.0]]), np.array([[2.0]])], signed=True) == (-3.0, 3.0)
    assert G.cam_scale([np.zeros((2, 2))], signed=False)[1] > 0  # a blank figure still has a scale


def test_cam_figure_shares_its_scale_has_a_colour_bar_and_labelled_panels() -> None:
    from matplotlib.image import AxesImage

    from pipeline.report.figures import cam_figure

    cases = [
        {"outcome": "TP", "row": 3, "label": "abnormal", "predicted": "abnormal", "prob": 0.91},
        {"outcome": "FN", "row": 8, "label": "abnormal", "predicted": "normal", "prob": 0.2},
        {"outcome": "FP", "row": 5, "label": "normal", "predicted": "abnormal", "prob": 0.7},
    ]
    rng = np.random.default_rng(0)
    images = [rng.random((8, 8)) for _ in cases]
    cams = [rng.normal(0, s, (8, 8)) for s in (0.1, 1.0, 3.0)]
    scale = G.cam_scale(cams, signed=True)
    fig = cam_figure(cases, images, cams, scale, "RdBu_r", "logit contribution per cell", "t", "abnormal")
    overlays = [im for ax in fig.axes for im in ax.get_images() if isinstance(im, AxesImage) and im.get_alpha()]
    assert len(overlays) == 3 and {im.get_clim() for im in overlays} == {scale}
    bars = [ax for ax in fig.axes if ax.get_ylabel() == "logit contribution per cell"]
    assert len(bars) == 1
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert "FN · row 8\ntrue abnormal · pred normal\np(abnormal) = 0.200" in titles
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_select_cases_names_the_predicted_label() -> None:
    import pandas as pd

    test = pd.DataFrame({"row": [1, 2, 3, 4], "label": ["a", "b", "a", "b"], "prob_a": [0.9, 0.8, 0.1, 0.2]})
    got = G.select_cases(test, "prob_a", "a", 0.5, 1, G.negative_name(["a", "b"], "a"))
    assert [(c["outcome"], c["label"], c["predicted"]) for c in got] == [
        ("TP", "a", "a"),
        ("FP", "b", "a"),
        ("TN", "b", "b"),
        ("FN", "a", "b"),
    ]
    assert G.negative_name(["a", "b", "c"], "a") == "not a"
