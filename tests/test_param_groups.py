"""pipeline.param_groups: tiered / uniform / layer-decay plans, no weight decay on norm and bias
tensors, per-group schedules (a late-starting group starts at its peak)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.backbones import create_backbone
from pipeline.param_groups import (
    layer_decay_plan,
    make_optimizer,
    make_scheduler,
    optimizer_groups,
    schedule_factor,
    tier_of_groups,
    tiered_plan,
    uniform_plan,
)
from pipeline.params import Backbone, Train
from pipeline.strategies import plan_groups
from tests.test_training import _params


@pytest.fixture(scope="module")
def model():
    return create_backbone(Backbone(name="efficientnet_lite0"), num_classes=2)


def test_2_4_6_rule_puts_every_parameter_in_one_group_at_its_rate(model) -> None:
    params = _params()  # lr_powers [6, 4, 2], lr_boundaries [3]
    opt = make_optimizer(plan_groups(model, "finetune", params), params.train)
    expected = {"stem": 1e-6, "stage1": 1e-6, "stage2": 1e-6, "head": 1e-2}
    seen: dict[int, str] = {}
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(expected.get(g["name"], 1e-4), rel=1e-12), g["name"]
        for p in g["params"]:
            assert id(p) not in seen, f"{g['name']} and {seen[id(p)]} share a parameter"
            seen[id(p)] = g["name"]
    assert set(seen) == {id(p) for p in model.parameters()}
    assert {seen[id(p)] for p in model.head.parameters()} == {"head"}


def test_no_weight_decay_on_norm_and_bias_tensors(model) -> None:
    groups = optimizer_groups(uniform_plan(model.layer_groups, 0.1), weight_decay=1e-4)
    for g in groups:
        ndims = {p.ndim for p in g["params"]}
        if g["weight_decay"] == 0.0:
            assert ndims <= {0, 1}, g["name"]
        else:
            assert min(ndims) >= 2 and g["weight_decay"] == 1e-4, g["name"]
    bn_ids = {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert bn_ids <= no_decay and id(model.head.bias) in no_decay and id(model.head.weight) not in no_decay


def test_nesterov_is_a_param(model) -> None:
    plan = uniform_plan(model.layer_groups, 0.1)
    on = make_optimizer(plan, Train(epochs=1, batch_size=2, nesterov=True))
    off = make_optimizer(plan, Train(epochs=1, batch_size=2, nesterov=False))
    assert on.param_groups[0]["nesterov"] and not off.param_groups[0]["nesterov"]


def test_even_split_unfreeze_and_errors(model) -> None:
    even = tiered_plan(model.layer_groups, [5, 4, 3, 2], None)
    # 9 backbone groups in 3 tiers of 3, bottom to top, then the head.
    assert [g.lr for g in even] == pytest.approx([1e-5] * 3 + [1e-4] * 3 + [1e-3] * 3 + [1e-2])
    last2 = tiered_plan(model.layer_groups, [6, 4, 2], [3], train_last_n=2)
    assert [g.name for g in last2 if g.trainable] == ["stage7", "head_conv", "head"]
    assert tier_of_groups(5, 2, None) == [0, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="boundaries"):
        tiered_plan(model.layer_groups, [6, 4, 2], [9])
    with pytest.raises(ValueError, match="last 10"):
        tiered_plan(model.layer_groups, [6, 4, 2], [3], train_last_n=10)


def test_layer_decay_is_geometric_towards_the_bottom(model) -> None:
    plan = layer_decay_plan(model.layer_groups, 1e-2, 0.5)
    n = len(plan) - 1
    assert [g.lr for g in plan] == pytest.approx([1e-2 * 0.5 ** (n - i) for i in range(n)] + [1e-2])
    assert all(g.trainable for g in plan)


@pytest.mark.parametrize("schedule", ["cosine", "onecycle", "constant"])
def test_schedules_scale_each_group_from_its_own_rate(model, schedule: str) -> None:
    params = _params(train={"schedule": schedule})
    opt = make_optimizer(plan_groups(model, "finetune", params), params.train)
    sched = make_scheduler(opt, schedule, total_steps=20)
    trace = []
    for _ in range(20):
        trace.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    trace = np.array(trace)
    configured = np.array([g["initial_lr"] for g in opt.param_groups])
    np.testing.assert_allclose(trace / trace[:, -1:], np.tile(configured / configured[-1], (20, 1)), rtol=1e-9)
    np.testing.assert_allclose(trace.max(axis=0), configured, rtol=2e-2)
    if schedule == "cosine":
        assert trace[-1, -1] < 0.01 * configured[-1]
    if schedule == "constant":
        assert (trace == configured).all()
    if schedule == "onecycle":  # torch's OneCycleLR shape: starts at peak / 25
        assert trace[0, -1] == pytest.approx(configured[-1] / 25)


def test_onecycle_shape_matches_torch() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=50, cycle_momentum=False)
    got = []
    for step in range(50):
        got.append((opt.param_groups[0]["lr"], schedule_factor("onecycle", step, 50)))
        opt.step()
        ref.step()
    np.testing.assert_allclose(*zip(*got, strict=True), rtol=1e-6)


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_a_late_group_starts_its_schedule_at_its_peak(model, schedule: str) -> None:
    """Head-only warm-up: the backbone's schedule begins when it starts training."""
    plan = tiered_plan(model.layer_groups, [4, 2], None)
    opt = make_optimizer(plan, Train(epochs=1, batch_size=2))
    starts = {g.name: 10 for g in plan if not g.is_head}
    sched = make_scheduler(opt, schedule, total_steps=30, start_step=starts)
    trace = []
    for _ in range(30):
        trace.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    trace = np.array(trace)
    first_backbone = 0  # stem, a backbone group
    assert (trace[:10, first_backbone] == 0).all()
    # From step 10 the backbone follows the same shape over its 20 steps as over a fresh run.
    expected = [1e-4 * schedule_factor(schedule, s, 20) for s in range(20)]
    np.testing.assert_allclose(trace[10:, first_backbone], expected, rtol=1e-9)
    assert trace[10:, first_backbone].max() == pytest.approx(1e-4, rel=2e-2)
