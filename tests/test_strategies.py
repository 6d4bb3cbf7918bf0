"""pipeline.strategies: every variant's layer groups, rates and frozen parameters match its
definition; LP-FT's head starts at the linear probe's solution; scratch's rate search."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.backbones import create_backbone
from pipeline.errors import StageError
from pipeline.lr_search import search_scratch_lr
from pipeline.param_groups import make_optimizer
from pipeline.params import VARIANT_NAMES, Backbone
from pipeline.steps.variant import run_variant
from pipeline.strategies import get_strategy, list_strategies, plan_groups
from pipeline.trained_methods import probe_head
from pipeline.training import predict_logits, set_head, train
from pipeline.workspace import Workspace
from tests.test_training import _dataset, _params


@pytest.fixture(scope="module")
def model():
    return create_backbone(Backbone(name="efficientnet_lite0"), num_classes=2)


def _rates(plan) -> list[float | None]:
    return [g.lr if g.trainable else None for g in plan]


def test_every_contract_name_has_a_strategy() -> None:
    assert set(VARIANT_NAMES) | {"linear", "finetune", "scratch"} == set(list_strategies())
    assert {get_strategy(n).kind for n in ("linear", "linear_on_logits", "knn")} == {"features"}
    for n in list_strategies():
        s = get_strategy(n)
        assert s.summary and s.rule_of_thumb and s.source, n


def test_variant_plans_match_their_definitions(model) -> None:
    params = _params(strategies={"unfreeze_last_n": 3, "layer_decay": 0.5, "full_ft_lr": 3e-3})
    n = len(model.layer_groups) - 1  # 9 backbone groups + head
    assert _rates(plan_groups(model, "full_ft", params)) == pytest.approx([3e-3] * (n + 1))
    # unfreeze_last: the last 3 backbone groups + head train, at the finetune tiers' rates.
    ul = _rates(plan_groups(model, "unfreeze_last", params))
    assert ul[: n - 3] == [None] * (n - 3) and ul[n - 3 :] == pytest.approx([1e-4] * 3 + [1e-2])
    # Tiered: backbone split evenly into len(powers) - 1 tiers, bottom tier lowest.
    assert _rates(plan_groups(model, "dlr_234", params)) == pytest.approx([1e-4] * 5 + [1e-3] * 4 + [1e-2])
    assert _rates(plan_groups(model, "dlr_246", params)) == pytest.approx([1e-6] * 5 + [1e-4] * 4 + [1e-2])
    assert _rates(plan_groups(model, "dlr_23456", params)) == pytest.approx(
        [1e-6] * 3 + [1e-5] * 2 + [1e-4] * 2 + [1e-3] * 2 + [1e-2]
    )
    assert _rates(plan_groups(model, "layer_decay", params)) == pytest.approx(
        [1e-2 * 0.5 ** (n - i) for i in range(n)] + [1e-2]
    )
    assert _rates(plan_groups(model, "lp_ft", params)) == _rates(plan_groups(model, "finetune", params))
    assert get_strategy("lp_ft").head_init == "linear_probe"
    assert not get_strategy("scratch").pretrained and get_strategy("full_ft").pretrained


def test_frozen_groups_are_not_in_the_optimiser(model) -> None:
    params = _params(strategies={"unfreeze_last_n": 2})
    plan = plan_groups(model, "unfreeze_last", params)
    opt = make_optimizer(plan, params.train)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    for g in plan:
        assert all((id(p) in in_opt) == g.trainable for p in g.params), g.name


def test_lp_ft_head_starts_at_the_linear_probe(model) -> None:
    """The network with the probe head gives the logistic regression's own probabilities."""
    ds = _dataset(n=24)
    m = create_backbone(Backbone(name="efficientnet_lite0"), num_classes=2).eval()
    x = torch.from_numpy(np.asarray(ds.images, np.float32)[:, None])
    with torch.no_grad():
        feats = m.forward_features(x).numpy().astype(np.float64)
    y = np.asarray(ds.labels())
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)).fit(feats, y)
    set_head(m, *probe_head(probe, 2))
    logits = predict_logits(m, ds.images, None, 8)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(probs[:, 1], probe.predict_proba(feats)[:, 1], atol=1e-4)


def test_lp_ft_training_starts_from_the_probe_head() -> None:
    ds = _dataset()
    # Rates of 1e-12: one epoch leaves every weight where it started.
    params = _params(train={"epochs": 1}, finetune={"lr_powers": [12, 12, 12]})
    w = np.random.default_rng(0).normal(size=(2, 1280)).astype(np.float32)
    b = np.array([0.3, -0.3], np.float32)
    res = train("lp_ft", ds, params, ds.rows("train"), ds.rows("val"), None, None, head_init=(w, b))
    np.testing.assert_allclose(res.final_state["head.weight"].numpy(), w, rtol=1e-6)
    np.testing.assert_allclose(res.final_state["head.bias"].numpy(), b, rtol=1e-6)
    with pytest.raises(ValueError, match="head_init"):
        train("lp_ft", ds, params, ds.rows("train"), ds.rows("val"), None, None)


def test_scratch_lr_search_uses_train_and_val_only_and_picks_the_best() -> None:
    ds = _dataset()
    params = _params(scratch={"lr": None, "lr_grid": [0.01, 1e-6], "grid_steps": 2})
    tr, va = ds.rows("train"), ds.rows("val")
    out = search_scratch_lr(ds, params, tr, va)
    assert [t["lr"] for t in out["trials"]] == [0.01, 1e-6]
    best = max(out["trials"], key=lambda t: (t["val_auroc"], -t["val_loss"]))
    assert out["chosen_lr"] == best["lr"]
    # Test rows are never used: changing their pixels changes nothing.
    ds.images[ds.rows("test")] = 0
    assert search_scratch_lr(ds, params, tr, va) == out


def test_variant_stage_runs_only_listed_variants(tmp_path) -> None:
    with pytest.raises(StageError, match="not listed"):
        run_variant(_params(), Workspace(tmp_path), "full_ft")


def test_readme_documents_every_strategy_from_the_registry() -> None:
    from pipeline.params import REPO_ROOT
    from pipeline.strategies import markdown_table

    readme = (REPO_ROOT / "README.md").read_text()
    block = readme.split("<!-- strategies:begin -->")[1].split("<!-- strategies:end -->")[0]
    assert block.strip() == markdown_table().strip(), "regenerate: python -m pipeline.strategies --markdown"
