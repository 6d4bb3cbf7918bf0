"""The registry of transfer strategies: the three main methods and the variants of the menu.

Every strategy has a name (a contract: ``strategies.variants`` lists variant names, prediction
files are ``predictions/<name>.csv``), the rule of thumb it tests and its source. A *trained*
strategy (``kind = "trained"``) is one way to train the pipeline's network (``pipeline.training``
runs them all): where its weights start, which layer groups train at which rate (a
:mod:`pipeline.param_groups` plan), whether the head starts from the linear probe, and its budget.
A *features* strategy fits a scikit-learn model on frozen features (``pipeline.linear`` for
``linear``, ``pipeline.feature_variants`` for the others).

Builders register with :func:`register_strategy`, in the style of timm's ``@register_model``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pipeline.param_groups import GroupPlan, LayerGroups, layer_decay_plan, tiered_plan, uniform_plan
from pipeline.params import VARIANT_NAMES, Params

MAIN_METHODS = ("linear", "finetune", "scratch")
PlanFn = Callable[[LayerGroups, Params], list[GroupPlan]]


@dataclass(frozen=True)
class Strategy:
    name: str
    kind: Literal["trained", "features"]
    summary: str  # what it does, one line
    rule_of_thumb: str  # the folklore it tests
    source: str
    pretrained: bool = True
    plan: PlanFn | None = None
    head_init: Literal["random", "linear_probe"] = "random"
    # scratch runs its optimiser-step budget (scratch.steps) in full: whether a randomly
    # initialised network can fit the data is the question, and early stopping on a near-chance
    # val curve would end it before it could.
    early_stopping: bool = True

    def layer_plan(self, groups: LayerGroups, params: Params) -> list[GroupPlan]:
        if self.plan is None:
            raise ValueError(f"strategy {self.name!r} fits frozen features: it has no layer-group plan")
        return self.plan(groups, params)

    def bn_policy(self, params: Params) -> Literal["adapt", "freeze"]:
        """BatchNorm running statistics while training: a random network must estimate them."""
        return params.finetune.bn if self.pretrained else "adapt"

    def warmup_epochs(self, params: Params) -> int:
        return params.finetune.warmup_epochs if self.name == "finetune" else 0

    def epochs(self, params: Params, batches_per_epoch: int) -> int:
        """The planned number of epochs: ``train.epochs``; scratch: its step budget in epochs."""
        if self.name == "scratch":
            return max(1, math.ceil(params.scratch.steps / max(1, batches_per_epoch)))
        return params.train.epochs


_REGISTRY: dict[str, Strategy] = {}


def register_strategy(
    name: str,
    *,
    kind: Literal["trained", "features"] = "trained",
    summary: str,
    rule_of_thumb: str,
    source: str,
    pretrained: bool = True,
    head_init: Literal["random", "linear_probe"] = "random",
    early_stopping: bool = True,
) -> Callable[[PlanFn], PlanFn]:
    """Register a trained strategy's layer-group plan builder under ``name``."""

    def deco(fn: PlanFn) -> PlanFn:
        if name in _REGISTRY:
            raise ValueError(f"strategy {name!r} is registered twice")
        _REGISTRY[name] = Strategy(
            name, kind, summary, rule_of_thumb, source, pretrained, fn, head_init, early_stopping
        )
        return fn

    return deco


def _register_features(name: str, summary: str, rule_of_thumb: str, source: str) -> None:
    _REGISTRY[name] = Strategy(name, "features", summary, rule_of_thumb, source)


def get_strategy(name: str) -> Strategy:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(_REGISTRY)}") from None


def list_strategies(kind: str | None = None) -> tuple[str, ...]:
    return tuple(n for n, s in _REGISTRY.items() if kind is None or s.kind == kind)


# ------------------------------------------------------------------------------- main methods

_register_features(
    "linear",
    "frozen ImageNet features + logistic regression (C by patient-grouped CV)",
    "frozen features plus a linear classifier suit a small set close to the source task",
    "Kornblith et al., CVPR 2019; Raghu et al., NeurIPS 2019",
)


@register_strategy(
    "finetune",
    summary="ImageNet weights, tiered per-layer-group rates (finetune.lr_powers, 2:4:6 by default)",
    rule_of_thumb="per-layer learning rates: 10^-6 bottom, 10^-4 middle, 10^-2 new head",
    source="Howard & Ruder, ACL 2018 (discriminative fine-tuning); the 2:4:6 rule for ResNets",
)
def _finetune(groups: LayerGroups, params: Params) -> list[GroupPlan]:
    ft = params.finetune
    return tiered_plan(groups, ft.lr_powers, ft.lr_boundaries, ft.unfreeze_last_n)


@register_strategy(
    "scratch",
    summary="the same network from random initialisation, one rate (chosen on val) and a step budget",
    rule_of_thumb="with enough data, training from scratch catches up with transfer",
    source="Raghu et al., NeurIPS 2019 (Transfusion); He et al., ICCV 2019",
    pretrained=False,
    early_stopping=False,
)
def _scratch(groups: LayerGroups, params: Params) -> list[GroupPlan]:
    if params.scratch.lr is None:
        raise ValueError("scratch.lr is unset: choose it first (pipeline.lr_search)")
    return uniform_plan(groups, params.scratch.lr)


# ------------------------------------------------------------------------------- variants


@register_strategy(
    "full_ft",
    summary="every layer at one rate (strategies.full_ft_lr)",
    rule_of_thumb="fine-tune everything when data are plentiful",
    source="Kornblith et al., CVPR 2019 (Do better ImageNet models transfer better?)",
)
def _full_ft(groups: LayerGroups, params: Params) -> list[GroupPlan]:
    return uniform_plan(groups, params.strategies.full_ft_lr)


@register_strategy(
    "unfreeze_last",
    summary="only the last strategies.unfreeze_last_n backbone groups and the head train (tiered rates)",
    rule_of_thumb="selective unfreezing of the top layers is rarely worth it",
    source="Yosinski et al., NeurIPS 2014 (How transferable are features?)",
)
def _unfreeze_last(groups: LayerGroups, params: Params) -> list[GroupPlan]:
    ft = params.finetune
    n_b = len(groups) - 1
    n = min(params.strategies.unfreeze_last_n, n_b)
    return tiered_plan(groups, ft.lr_powers, ft.lr_boundaries, n)


def _tiered(powers: tuple[float, ...]) -> PlanFn:
    def plan(groups: LayerGroups, params: Params) -> list[GroupPlan]:
        return tiered_plan(groups, powers, None)

    return plan


for _name, _powers, _rule in (
    ("dlr_234", (4.0, 3.0, 2.0), "2:3:4: gentler tiers than 2:4:6"),
    ("dlr_246", (6.0, 4.0, 2.0), "2:4:6 worked for ResNets (backbone split evenly into two tiers)"),
    ("dlr_23456", (6.0, 5.0, 4.0, 3.0, 2.0), "2:3:4:5:6: five tiers, one decade apart"),
):
    register_strategy(
        _name,
        summary=f"tiered rates 10^-p, p = {', '.join(f'{p:g}' for p in _powers)} bottom to head (even tiers)",
        rule_of_thumb=_rule,
        source="Howard & Ruder, ACL 2018 (discriminative fine-tuning)",
    )(_tiered(_powers))


@register_strategy(
    "layer_decay",
    summary="layer-wise rate decay: group i of n at head_lr * strategies.layer_decay^(n - i)",
    rule_of_thumb="the continuous form of the tiered rule",
    source="Clark et al., ICLR 2020 (ELECTRA); Bao et al., ICLR 2022 (BEiT); timm param_groups_layer_decay",
)
def _layer_decay(groups: LayerGroups, params: Params) -> list[GroupPlan]:
    return layer_decay_plan(groups, 10.0 ** (-params.finetune.lr_powers[-1]), params.strategies.layer_decay)


@register_strategy(
    "lp_ft",
    summary="linear probe first (the head starts at the converged linear method), then tiered fine-tuning",
    rule_of_thumb="fine-tuning from a random head distorts pretrained features; probe first",
    source="Kumar et al., ICLR 2022 (Fine-tuning can distort pretrained features)",
    head_init="linear_probe",
)
def _lp_ft(groups: LayerGroups, params: Params) -> list[GroupPlan]:
    ft = params.finetune
    return tiered_plan(groups, ft.lr_powers, ft.lr_boundaries, ft.unfreeze_last_n)


_register_features(
    "linear_on_logits",
    "logistic regression on the 1000 ImageNet class scores (not the penultimate features)",
    "the oldest form of frozen + linear: re-use the source task's outputs",
    "Razavian et al., CVPR-W 2014; Donahue et al., ICML 2014 (DeCAF)",
)
_register_features(
    "knn",
    "k-nearest neighbours on standardised frozen features (k by patient-grouped CV)",
    "a strong, cheap baseline on frozen features",
    "Doerrich et al., 2024 (Rethinking model prototyping through the MedMNIST+ dataset collection)",
)

_missing = set(VARIANT_NAMES) - set(_REGISTRY)
if _missing:  # the contract names and the registry must agree
    raise AssertionError(f"variants without a strategy: {sorted(_missing)}")


def plan_groups(model: object, name: str, params: Params) -> list[GroupPlan]:
    """The layer-group plan of trained strategy ``name`` for ``model`` (its ``layer_groups``)."""
    return get_strategy(name).layer_plan(model.layer_groups, params)  # type: ignore[attr-defined]


def markdown_table() -> str:
    """The README table of every strategy (``python -m pipeline.strategies --markdown``)."""
    rows = ["| name | kind | what it does | rule of thumb it tests | source |", "|---|---|---|---|---|"]
    for name, s in _REGISTRY.items():
        kind = "main method" if name in MAIN_METHODS else f"variant ({s.kind})"
        rows.append(f"| `{name}` | {kind} | {s.summary} | {s.rule_of_thumb} | {s.source} |")
    return "\n".join(rows)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m pipeline.strategies --markdown")
    print(markdown_table())
