"""Layer-group learning rates, optimiser parameter groups and per-group schedules.

Pure functions in the style of timm's ``param_groups_weight_decay`` / ``param_groups_layer_decay``:
a *plan* assigns each layer group of a :class:`~pipeline.backbones.ClassifierModel` (bottom to
head, ``model.layer_groups``) a learning rate and whether it trains; :func:`optimizer_groups` turns
a plan into optimiser parameter groups, with no weight decay on tensors of ndim <= 1 (BatchNorm
weights and biases, every bias: timm's rule); :func:`make_scheduler` gives each group its own
schedule, so a group that starts training late (the backbone after a head-only warm-up) starts its
schedule when it starts training, at its configured peak, never half-decayed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.params import Train

LayerGroups = Sequence[tuple[str, Sequence[torch.nn.Parameter]]]


@dataclass
class GroupPlan:
    """One layer group's place in the optimiser: its configured (peak) rate and whether it trains."""

    name: str
    params: list[torch.nn.Parameter]
    lr: float
    trainable: bool
    is_head: bool

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.params)


def _split_head(groups: LayerGroups) -> tuple[list[tuple[str, list[torch.nn.Parameter]]], list[torch.nn.Parameter]]:
    listed = [(n, list(ps)) for n, ps in groups]
    if not listed or listed[-1][0] != "head":
        raise AssertionError("the last layer group must be the new head")
    return listed[:-1], listed[-1][1]


def tier_of_groups(n_groups: int, n_tiers: int, boundaries: Sequence[int] | None) -> list[int]:
    """Tier index (0 = bottom) of each of ``n_groups`` backbone groups.

    ``boundaries``: the group indices where each next tier starts (``n_tiers - 1`` increasing
    values); None splits evenly, the bottom tiers taking the extra group when uneven.
    """
    if boundaries is None:
        chunks = np.array_split(np.arange(n_groups), n_tiers)
        return [int(t) for t, c in enumerate(chunks) for _ in c]
    bounds = list(boundaries)
    if len(bounds) != n_tiers - 1:
        raise ValueError(f"{n_tiers} tiers need {n_tiers - 1} boundaries, got {bounds}")
    if bounds and bounds[-1] >= n_groups:
        raise ValueError(f"boundaries {bounds} must be < the {n_groups} backbone layer groups")
    return [sum(b <= i for b in bounds) for i in range(n_groups)]


def tiered_plan(
    groups: LayerGroups,
    powers: Sequence[float],
    boundaries: Sequence[int] | None = None,
    train_last_n: int | None = None,
) -> list[GroupPlan]:
    """Tiered rates 10^-p: ``powers`` bottom to head, the last power the head's.

    The backbone groups are split into ``len(powers) - 1`` tiers at ``boundaries`` (or evenly);
    ``train_last_n`` freezes all but the last n backbone groups (None = all train).
    """
    if len(powers) < 2:
        raise ValueError(f"need at least two powers (backbone tiers + head), got {list(powers)}")
    backbone, head = _split_head(groups)
    n_b = len(backbone)
    rates = [10.0 ** (-float(p)) for p in powers]
    tier = tier_of_groups(n_b, len(rates) - 1, boundaries)
    n_train = n_b if train_last_n is None else int(train_last_n)
    if not 0 <= n_train <= n_b:
        raise ValueError(f"cannot train the last {n_train} of {n_b} backbone layer groups")
    plan = [GroupPlan(n, ps, rates[tier[i]], i >= n_b - n_train, False) for i, (n, ps) in enumerate(backbone)]
    plan.append(GroupPlan("head", head, rates[-1], True, True))
    return plan


def uniform_plan(groups: LayerGroups, lr: float) -> list[GroupPlan]:
    """Every group, head included, trains at one rate."""
    backbone, head = _split_head(groups)
    return [GroupPlan(n, ps, float(lr), True, False) for n, ps in backbone] + [
        GroupPlan("head", head, float(lr), True, True)
    ]


def layer_decay_plan(groups: LayerGroups, head_lr: float, decay: float) -> list[GroupPlan]:
    """Layer-wise rate decay (timm ``param_groups_layer_decay``, BEiT/ConvNeXt fine-tuning):
    backbone group i of n (0 = bottom) at ``head_lr * decay ** (n - i)``, the head at ``head_lr``."""
    if not 0 < decay <= 1:
        raise ValueError(f"layer decay must be in (0, 1], got {decay}")
    backbone, head = _split_head(groups)
    n = len(backbone)
    plan = [
        GroupPlan(name, ps, float(head_lr) * decay ** (n - i), True, False) for i, (name, ps) in enumerate(backbone)
    ]
    plan.append(GroupPlan("head", head, float(head_lr), True, True))
    return plan


def no_weight_decay(param: torch.nn.Parameter) -> bool:
    """timm's rule: biases and normalisation weights (every tensor of ndim <= 1) get no decay."""
    return param.ndim <= 1


def optimizer_groups(plan: Sequence[GroupPlan], weight_decay: float) -> list[dict[str, Any]]:
    """Optimiser parameter groups: per trainable layer group, one with ``weight_decay`` and one
    (same name and rate) without, for its ndim <= 1 tensors; empty groups are left out."""
    out: list[dict[str, Any]] = []
    for g in plan:
        if not g.trainable:
            continue
        decay = [p for p in g.params if not no_weight_decay(p)]
        rest = [p for p in g.params if no_weight_decay(p)]
        for ps, wd in ((decay, weight_decay), (rest, 0.0)):
            if ps:
                out.append({"params": ps, "lr": g.lr, "weight_decay": wd, "name": g.name})
    return out


def make_optimizer(plan: Sequence[GroupPlan], train: Train) -> torch.optim.Optimizer:
    """SGD (momentum, ``train.nesterov``) or AdamW over :func:`optimizer_groups`."""
    groups = optimizer_groups(plan, train.weight_decay)
    if not groups:
        raise ValueError("no layer group trains: nothing to optimise")
    if train.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=groups[-1]["lr"],
            momentum=train.momentum,
            nesterov=train.nesterov and train.momentum > 0,
        )
    if train.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=groups[-1]["lr"])
    raise ValueError(f"train.optimizer = {train.optimizer!r} is not supported")


def schedule_factor(schedule: str, step: int, total: int) -> float:
    """Multiplier of a group's peak rate after ``step`` of its ``total`` steps.

    cosine: half cosine from 1 to 0; constant: 1; onecycle: the shape of torch's OneCycleLR
    (pct_start 0.3, div_factor 25, final_div_factor 1e4, cosine annealing both ways).
    """
    total = max(1, int(total))
    t = min(max(step, 0), total) / total
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "onecycle":
        # torch.optim.lr_scheduler.OneCycleLR's phases: up until step pct * total - 1, down
        # until step total - 1.
        start, end = 1 / 25, 1 / 25 / 1e4
        up_end, down_end = 0.3 * total - 1, total - 1

        def anneal(a: float, b: float, f: float) -> float:
            return b + (a - b) / 2.0 * (1.0 + math.cos(math.pi * min(max(f, 0.0), 1.0)))

        if step <= up_end:
            return anneal(start, 1.0, step / up_end if up_end > 0 else 1.0)
        return anneal(1.0, end, (step - up_end) / max(down_end - up_end, 1e-12))
    raise ValueError(f"train.schedule = {schedule!r} is not supported")


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str,
    total_steps: int,
    start_step: dict[str, int] | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule, one per optimiser group: a group named in ``start_step`` begins its
    schedule at that step (its rate is 0 before; it is frozen then) and runs it over the steps
    that remain, so it reaches its peak and decays like every other group."""
    start_step = start_step or {}
    lambdas: list[Callable[[int], float]] = []
    for g in optimizer.param_groups:
        s0 = int(start_step.get(g["name"], 0))
        n = max(1, total_steps - s0)

        def f(step: int, s0: int = s0, n: int = n) -> float:
            return 0.0 if step < s0 else schedule_factor(schedule, step - s0, n)

        lambdas.append(f)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
