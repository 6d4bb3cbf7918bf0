"""Introspection of the re-used network (pipeline.introspection, the introspect stage) on tiny
inputs: efficientnet_lite0 at 32 px, a few steps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_processed, repo_params, write_params
from PIL import Image

from pipeline import introspection as I
from pipeline.backbones import create_backbone
from pipeline.params import validate_params

SIZE = 32


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    return I.frozen(create_backbone(validate_params(repo_params()).backbone, 2))


def test_architecture_lists_every_group_in_order_with_shapes_and_counts(model) -> None:
    arch = I.architecture(model, SIZE)
    names = [g["name"] for g in arch["groups"]]
    assert names == [n for n, _ in model.layer_groups]
    assert names[0] == "stem" and names[-1] == "head"
    assert arch["total_params"] == sum(p.numel() for p in model.parameters())
    assert arch["groups"][-1]["output_shape"] == [1, 2]
    assert arch["groups"][-2]["output_shape"] == [1, model.num_features, 1, 1]  # the pooled map
    assert arch["groups"][0]["output_shape"] == [1, 32, SIZE // 2, SIZE // 2]  # stride-2 stem
    sides = [g["output_shape"][-1] for g in arch["groups"][:-1]]
    assert sides == sorted(sides, reverse=True)  # resolution never grows with depth
    assert all(g["mult_adds"] > 0 for g in arch["groups"])


def test_training_plans_follow_the_trainers_rule() -> None:
    raw = repo_params()
    raw["finetune"].update(lr_powers=[5, 3, 1], lr_boundaries=[2], unfreeze_last_n=4)
    params = validate_params(raw)
    torch.manual_seed(0)
    m = create_backbone(params.backbone, 2, pretrained=False)
    plans = I.training_plans(m, params)
    assert not any(g["trains"] for g in plans["linear"]["groups"])
    ft = plans["finetune"]["groups"]
    n_b = len(ft) - 1
    assert [g["trains"] for g in ft] == [i >= n_b - 4 for i in range(n_b)] + [True]
    assert ft[-1]["lr"] == pytest.approx(0.1)
    assert [g["lr"] for g in ft[:-1] if g["trains"]] == pytest.approx([1e-3] * 4)
    assert all(g["lr"] is None for g in ft if not g["trains"])
    assert {g["lr"] for g in plans["scratch"]["groups"]} == {params.scratch.lr}


def test_units_top_k_and_selection(model) -> None:
    rng = np.random.default_rng(0)
    images = rng.random((6, SIZE, SIZE)).astype(np.float32)
    outs = I.group_outputs(model, SIZE)
    means = I.channel_means(model, images, {"stage7": outs["stage7"]}, batch_size=4)["stage7"]
    assert means.shape == (6, 320)
    units = I.select_units(means, 3)
    assert len(set(units)) == 3 and means[:, units[0]].std() == pytest.approx(means.std(axis=0).max())
    rows = np.array([10, 11, 12, 13, 14, 15])
    top, acts = I.top_rows(means, rows, units[0], 2)
    assert acts == sorted(means[:, units[0]], reverse=True)[:2] and top[0] == rows[np.argmax(means[:, units[0]])]


def test_activation_maximisation_raises_the_unit_over_its_start(model) -> None:
    outs = I.group_outputs(model, SIZE)
    for group, channel in (("stage6", 3), ("stage7", 11), ("head_conv", 100)):
        mx = I.maximise_unit(model, outs[group], channel, SIZE, steps=8, lr=0.05, l2=0.01, blur_every=4, seed=0)
        assert mx.image.shape == (SIZE, SIZE) and mx.image.min() >= 0 and mx.image.max() <= 1
        assert mx.final > mx.start + 0.1, (group, mx.history)
        # The reported value is the unit's activation on the returned image.
        x = torch.from_numpy(mx.image)[None, None]
        assert float(I.unit_activation(model, outs[group], channel, x)[0]) == pytest.approx(mx.final, rel=1e-4)
    # Several units in one batch give each the result of its own run.
    both = I.maximise_units(
        model, outs["head_conv"], [100, 7], SIZE, steps=8, lr=0.05, l2=0.01, blur_every=4, seeds=[0, 5]
    )
    alone = I.maximise_unit(model, outs["head_conv"], 7, SIZE, steps=8, lr=0.05, l2=0.01, blur_every=4, seed=5)
    assert both[0].history == pytest.approx(mx.history, rel=1e-3, abs=1e-3)
    assert both[1].history == pytest.approx(alone.history, rel=1e-3, abs=1e-3)
    again = I.maximise_unit(model, outs["head_conv"], 100, SIZE, steps=8, lr=0.05, l2=0.01, blur_every=4, seed=0)
    assert again.history == mx.history  # fixed seed: reproducible


def test_guided_backprop_differs_from_the_plain_gradient(model) -> None:
    outs = I.group_outputs(model, SIZE)
    images = np.random.default_rng(1).random((2, SIZE, SIZE)).astype(np.float32)
    guided = I.guided_backprop(model, outs["stage7"], 5, images)
    deconv = I.guided_backprop(model, outs["stage7"], 5, images, method="deconvolution")
    x = torch.from_numpy(images)[:, None].requires_grad_(True)
    I.unit_activation(model, outs["stage7"], 5, x).sum().backward()
    plain = x.grad[:, 0].numpy()
    assert guided.shape == deconv.shape == (2, SIZE, SIZE)
    assert np.abs(guided).sum() > 0 and not np.allclose(guided, plain, atol=1e-6)
    assert not np.allclose(guided, deconv)
    # The ReLU6 swap happens on a copy: the model itself keeps its ReLU6 modules.
    assert not any(isinstance(m, I._GuidedReLU6) for m in model.modules())


def test_introspect_step_writes_json_and_figures(workspace) -> None:
    from pipeline.steps.introspect import FINETUNED, REPORT, run_introspect
    from pipeline.training import TrainResult, save_trained

    split = ["train"] * 8 + ["val"] * 2 + ["test"] * 2
    make_processed(workspace, split, size=SIZE)
    raw = repo_params()
    raw["introspect"] = {
        "last_groups": 2,
        "units_per_group": 2,
        "top_k": 3,
        "steps": 3,
        "feature_map_depths": 3,
        "feature_map_channels": 4,
        "batch_size": 4,
    }
    raw["train"]["num_threads"] = 1
    params = write_params(workspace.root, raw)
    torch.manual_seed(1)
    tuned = create_backbone(params.backbone, 2)
    with torch.no_grad():
        tuned.trunk.first_conv().weight.mul_(1.5)  # a visible "fine-tuning" of the stem
    save_trained(
        workspace.path(FINETUNED),
        TrainResult(tuned, [], 0, {"image_size": SIZE}, "loss", False, None, ""),
        ("normal", "abnormal"),
        params.backbone,
    )
    doc = run_introspect(params, workspace)
    assert json.loads(workspace.path(REPORT).read_text())["units"]["figures"] == doc["units"]["figures"]
    assert doc["first_layer"]["relative_change"] == pytest.approx(0.5, rel=1e-5)
    assert doc["feature_maps"]["groups"] == ["stem", "stage4", "head_conv"]
    groups = doc["units"]["groups"]
    assert list(groups) == ["stage7", "head_conv"]
    for us in groups.values():
        assert len(us) == 2
        for u in us:
            for m in ("before", "after"):
                d = u[m]
                assert len(d["top_rows"]) == 3 and set(d["top_rows"]) <= set(range(8))
                assert d["top_activations"] == sorted(d["top_activations"], reverse=True)
                assert d["actmax_final"] >= d["actmax_start"]
    figs = [doc["first_layer"]["figure"], doc["feature_maps"]["figure"], *doc["units"]["figures"].values()]
    assert len(figs) == 4
    for f in figs:
        with Image.open(workspace.path(f)) as im:
            assert im.format == "PNG" and im.size[0] > 100
