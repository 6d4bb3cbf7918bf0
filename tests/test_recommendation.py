"""The recommendation: chosen on validation only, ties declared and broken by cost, flagged
methods not ranked, test/external numbers evidence only; its contract and its stage."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import report_inputs as RI

from pipeline import contracts as C
from pipeline import paths
from pipeline import recommendation as R
from pipeline.errors import MissingArtifactError
from pipeline.steps.recommend import run_recommend
from pipeline.workspace import Workspace

MARGIN = 0.05


def _cmp(a: str, b: str, d: float, lo: float, hi: float) -> dict:
    return {
        "path_a": a,
        "path_b": b,
        "n": 60,
        "n_patients": 30,
        "difference": d,
        "ci_low": lo,
        "ci_high": hi,
        "p_value": 0.04,
    }


def _ev(val: dict[str, float], val_pairs: dict[tuple[str, str], tuple[float, float]], rng_seed: int = 0) -> dict:
    """A minimal evaluation.json: val AUROCs, paired val comparisons (given), and test/external
    blocks and comparisons from a seeded random generator (evidence the rule must ignore)."""
    rng = np.random.default_rng(rng_seed)
    methods = list(val)
    results = {
        m: {
            "validation": {"n": 60, "n_patients": 30, "auroc": {"value": v, "ci_low": v - 0.1, "ci_high": v + 0.1}},
            "splits": {
                s: {"auroc": {"value": float(rng.uniform(0.4, 0.95)), "ci_low": 0.3, "ci_high": 0.99}}
                for s in ("test", "external/site-b")
            },
        }
        for m, v in val.items()
    }
    comparisons: dict[str, list[dict]] = {"val": [], "test": [], "external/site-b": []}
    for i, a in enumerate(methods):
        for b in methods[i + 1 :]:
            if (a, b) in val_pairs:
                lo, hi = val_pairs[a, b]
            elif (b, a) in val_pairs:
                lo, hi = -val_pairs[b, a][1], -val_pairs[b, a][0]
            else:  # not given: a wide interval, not separated
                lo, hi = val[a] - val[b] - 0.3, val[a] - val[b] + 0.3
            comparisons["val"].append(_cmp(a, b, val[a] - val[b], lo, hi))
            for s in ("test", "external/site-b"):
                d = float(rng.normal(0, 0.2))
                comparisons[s].append(_cmp(a, b, d, d - 0.05, d + 0.05))
    return {
        "seed": 42,
        "paths": methods,
        "splits": ["test", "external/site-b"],
        "results": results,
        "comparisons": comparisons,
    }


def _log(n_params: int, seconds: float, train_auroc: float = 0.9) -> dict:
    groups = [{"name": "backbone", "lr": 1e-4, "n_params": n_params - 10, "trainable": True}]
    groups += [{"name": "head", "lr": 1e-2, "n_params": 10, "trainable": True}]
    groups += [{"name": "frozen", "lr": 0.0, "n_params": 10**6, "trainable": False}]
    return {
        "model_card": {"layer_groups": groups, "wall_time_s": seconds},
        "history": [{"train_auroc": 0.5}, {"train_auroc": train_auroc}],
    }


LOGS = {"big": _log(3_000_000, 300.0), "small": _log(1_300, 10.0), "mid": _log(50_000, 60.0)}


def _rec(ev: dict, logs: dict | None = None, diagnostics: dict | None = None) -> dict:
    return R.recommend(ev, diagnostics, LOGS if logs is None else logs, MARGIN, list(ev["paths"]))


def test_separated_on_val_picks_the_highest_val_auroc() -> None:
    ev = _ev({"big": 0.85, "small": 0.70, "mid": 0.65}, {("big", "small"): (0.03, 0.27), ("big", "mid"): (0.05, 0.35)})
    doc = _rec(ev)
    assert (doc["recommended"], doc["runner_up"], doc["decided_by"]) == ("big", "small", "val_auroc")
    assert doc["selection_split"] == "val" and doc["ranking"] == ["big", "small", "mid"]
    assert doc["tied_with"] == [] and doc["methods"]["big"]["rank"] == 1
    assert doc["versus_runner_up"]["val"]["verdict"] == "big higher"
    assert set(doc["differences"]) == {"val", "test", "external/site-b"}
    for split in doc["differences"]:
        assert set(doc["differences"][split]) == {"small", "mid"}
    assert doc["text"].startswith("Recommended: big, chosen on validation only")
    assert "excludes 0" in doc["text"] and "no significant difference" not in doc["text"].lower()
    assert doc["methods"]["big"]["cost"] == {"trained_parameters": 3_000_000, "train_wall_time_s": 300.0}


def test_a_tie_on_val_is_declared_and_goes_to_the_cheaper_method() -> None:
    # big is best on val, but the paired CI with small includes 0: no significant difference.
    ev = _ev({"big": 0.82, "small": 0.79, "mid": 0.60}, {("big", "small"): (-0.04, 0.10), ("big", "mid"): (0.1, 0.3)})
    doc = _rec(ev)
    assert (doc["recommended"], doc["runner_up"], doc["decided_by"]) == ("small", "big", "cost")
    assert doc["best_on_val"] == "big" and doc["tied_with"] == ["small"]
    assert "No significant difference on validation between big and small" in doc["text"]
    assert "rests on cost, not accuracy" in doc["text"] and "1,300 trained parameters" in doc["text"]
    # recommended - runner-up is reported with the right sign on val
    assert doc["versus_runner_up"]["val"]["ci_low"] == pytest.approx(-0.10)
    assert doc["versus_runner_up"]["val"]["verdict"] == "not separated"
    # Equal trained parameters: the shorter training wins the tie.
    logs = {"big": _log(1_300, 300.0), "small": _log(1_300, 10.0), "mid": LOGS["mid"]}
    assert _rec(ev, logs)["recommended"] == "small"
    logs = {"big": _log(1_300, 5.0), "small": _log(1_300, 10.0), "mid": LOGS["mid"]}
    assert _rec(ev, logs)["recommended"] == "big"


def test_every_method_tied_with_the_best_competes_on_cost() -> None:
    ev = _ev(
        {"big": 0.82, "mid": 0.80, "small": 0.78},
        {("big", "mid"): (-0.05, 0.09), ("big", "small"): (-0.02, 0.10), ("mid", "small"): (-0.05, 0.09)},
    )
    doc = _rec(ev)
    assert doc["tied_with"] == ["mid", "small"] and doc["recommended"] == "small" and doc["runner_up"] == "big"


def test_flagged_methods_are_not_ranked_and_the_text_says_why() -> None:
    ev = _ev(
        {"big": 0.90, "small": 0.75, "mid": 0.52},
        {("big", "small"): (0.05, 0.25), ("big", "mid"): (0.2, 0.5), ("small", "mid"): (0.1, 0.4)},
    )
    logs = {**LOGS, "big": _log(3_000_000, 300.0, train_auroc=0.52)}  # never fitted its training data
    doc = _rec(ev, logs)
    assert doc["recommended"] == "small" and doc["runner_up"] is None and doc["decided_by"] == "only_eligible"
    m = doc["methods"]
    assert not m["big"]["eligible"] and "never fitted its training data" in m["big"]["flags"][0]
    assert not m["mid"]["eligible"] and "never left chance on validation" in m["mid"]["flags"][0]
    assert m["big"]["rank"] is None and doc["ranking"] == ["small"]
    assert "Not ranked: big, which never fitted" in doc["text"] and "mid, which never left chance" in doc["text"]
    # Without a fit block, near-constant outputs are listed as not checked, never silently passed.
    assert m["small"]["source"] == R.DERIVED_SOURCE
    assert any("near-constant" in u for u in m["small"]["unchecked"])
    # The diagnostics' near_chance flag excludes a method too.
    doc = _rec(ev, LOGS, {"verdicts": {"big": {"level": "no", "text": "Did not learn", "near_chance": True}}})
    assert not doc["methods"]["big"]["eligible"] and doc["recommended"] == "small"
    assert doc["methods"]["big"]["overfitting"] == {"level": "no", "text": "Did not learn"}


def test_the_fit_block_of_evaluation_decides_fit_and_near_constant_when_present() -> None:
    ev = _ev({"big": 0.90, "small": 0.75}, {("big", "small"): (0.05, 0.25)})
    ev["results"]["big"]["fit"] = {"fitted": True, "near_constant": True, "train_auroc": 0.97}
    ev["results"]["small"]["fit"] = {"fitted": True, "near_constant": False, "train_auroc": 0.8}
    logs = {"big": _log(10, 1.0, train_auroc=0.5), "small": LOGS["small"]}  # the block wins over the log
    doc = _rec(ev, logs)
    assert doc["recommended"] == "small"
    # Not fitted by its kept model, though an epoch of its log fitted: the flag says which.
    ev["results"]["big"]["fit"] = {"fitted": False, "near_constant": False, "train_auroc": 0.5}
    log = _log(10, 1.0, train_auroc=0.99)
    log["history"] = [{"epoch": 1, "train_auroc": 0.5}, {"epoch": 2, "train_auroc": 0.99}]
    log["model_card"]["best_epoch"] = 1
    flag = _rec(ev, {"big": log, "small": LOGS["small"]})["methods"]["big"]["flags"][0]
    assert flag.startswith("kept an epoch that does not fit its training data (train AUROC 0.500 at epoch 1")
    assert "reached 0.990 at epoch 2" in flag
    log["history"][1]["train_auroc"] = 0.51  # no epoch fitted: it never fitted
    flag = _rec(ev, {"big": log, "small": LOGS["small"]})["methods"]["big"]["flags"][0]
    assert flag == "never fitted its training data (train AUROC 0.500)"
    assert doc["methods"]["big"]["flags"] == ["has near-constant outputs"]
    assert doc["methods"]["small"]["source"] == R.FIT_SOURCE and doc["methods"]["small"]["unchecked"] == []


def test_no_eligible_method_gives_no_recommendation() -> None:
    ev = _ev({"big": 0.51, "small": 0.50}, {("big", "small"): (-0.1, 0.1)})
    doc = _rec(ev)
    assert doc["recommended"] is None and doc["decided_by"] == "none" and doc["differences"] == {}
    assert doc["text"].startswith("No recommendation")
    C.Recommendation.model_validate(doc)


def test_test_and_external_numbers_never_change_the_choice() -> None:
    separated = {("big", "small"): (0.02, 0.18), ("big", "mid"): (0.1, 0.3), ("small", "mid"): (0.01, 0.2)}
    tied = {("big", "small"): (-0.04, 0.10), ("big", "mid"): (0.02, 0.2)}
    for val, pairs, want in (
        ({"big": 0.85, "small": 0.75, "mid": 0.65}, separated, ("big", "small", "val_auroc")),
        ({"big": 0.82, "small": 0.79, "mid": 0.70}, tied, ("small", "big", "cost")),
    ):
        base = _rec(_ev(val, pairs, rng_seed=0))
        for seed in range(1, 10):
            ev = _ev(val, pairs, rng_seed=seed)
            star = list(val)[seed % 3]  # another method looks best on test and external
            for m, res in ev["results"].items():
                for block in res["splits"].values():
                    block["auroc"]["value"] = 0.99 if m == star else 0.4
            doc = _rec(ev)
            assert (doc["recommended"], doc["runner_up"], doc["decided_by"]) == want
            assert doc["tied_with"] == base["tied_with"] and doc["ranking"] == base["ranking"]
            assert doc["differences"]["test"] != base["differences"]["test"]  # the evidence did change
    # ... while a change on validation does change it.
    flipped = _rec(_ev({**val, "mid": 0.9}, {**pairs, ("big", "mid"): (-0.2, -0.05), ("mid", "small"): (0.02, 0.2)}))
    assert flipped["recommended"] == "mid"


def test_transfer_gap_turns_the_learning_curve_around() -> None:
    ev = _ev({"big": 0.85, "small": 0.70}, {("big", "small"): (0.03, 0.27)})
    pair_summary = [
        {
            "challenger": "scratch",
            "reference": "big",
            "fraction": f,
            "n_patients": n,
            "difference": d,
            "ci_low": lo,
            "ci_high": hi,
        }
        for f, n, d, lo, hi in ((1.0, 120, -0.02, -0.2, 0.16), (0.25, 30, -0.2, -0.35, -0.05))
    ]
    doc = _rec(ev, diagnostics={"learning_curve": {"pair_summary": pair_summary}})
    g = doc["transfer_gap"]["big"]
    assert [p["n_patients"] for p in g["points"]] == [30, 120]
    assert g["points"][0]["gap"] == pytest.approx(0.2) and g["points"][0]["ci_low"] == pytest.approx(0.05)
    assert g["separated_at"] == [30] and g["change"] == pytest.approx(-0.18)
    assert "falling point estimates" in g["text"] and g["text"] in doc["text"]
    assert any(
        "learning curve covers big" in s
        for s in _rec(
            _ev({"small": 0.85, "big": 0.70}, {("small", "big"): (0.03, 0.27)}),
            diagnostics={"learning_curve": {"pair_summary": pair_summary}},
        )["limits"]
    )


def test_contract_round_trip_and_unknown_keys_fail() -> None:
    ev = _ev({"big": 0.82, "small": 0.79}, {("big", "small"): (-0.04, 0.10)})
    doc = json.loads(json.dumps(_rec(ev)))
    back = C.Recommendation.model_validate(doc).model_dump(mode="json", by_alias=True)
    assert back == doc
    bad = copy.deepcopy(doc)
    bad["methods"]["big"]["surprise"] = 1
    with pytest.raises(Exception, match="surprise"):
        C.Recommendation.model_validate(bad)
    assert any("One split" in s for s in doc["limits"]) and any("One data set" in s for s in doc["limits"])


def test_the_step_on_a_tiny_workspace(tmp_path) -> None:
    params, _ = RI.build(tmp_path, with_model=False)
    ws = Workspace(tmp_path)
    doc = run_recommend(params, ws)
    stored = C.read_contract(ws.path(paths.RECOMMENDATION), C.Recommendation)
    assert stored.recommended == doc["recommended"] and stored.selection_split == "val"
    ev = C.read_contract(ws.path(paths.EVALUATION), C.Evaluation)
    # Every evaluated method (the main three and the fixture's variant), none invented.
    assert set(stored.methods) == set(ev.results) and {"linear", "finetune", "scratch"} < set(ev.results)
    assert stored.recommended in stored.methods and stored.methods[stored.recommended].eligible
    best = max(stored.ranking, key=lambda m: ev.results[m].validation.auroc.value)  # type: ignore[union-attr]
    assert stored.best_on_val == best
    assert set(stored.differences) == {"val", *ev.splits}
    assert stored.methods["linear"].cost.trained_parameters is not None
    assert stored.transfer_gap is not None and set(stored.transfer_gap) == {"finetune", "linear"}
    ws.path(paths.DIAGNOSTICS).unlink()
    with pytest.raises(MissingArtifactError, match="diagnostics.json"):
        run_recommend(params, ws)


# ------------------------------------------------------------------- the report's use of it


def _tie_doc() -> dict:
    ev = _ev({"big": 0.82, "small": 0.79, "mid": 0.52}, {("big", "small"): (-0.04, 0.10), ("big", "mid"): (0.1, 0.4)})
    return _rec(ev)


def test_report_blocks_render_the_choice_the_evidence_and_the_limits() -> None:
    from pipeline.report.recommendation import headline, recommendation_blocks
    from pipeline.report.render import Table, render_html, render_markdown, sanitize_blocks

    doc = _tie_doc()
    blocks = recommendation_blocks(doc)
    assert blocks[0]["kind"] == "h3" and blocks[1]["kind"] == "callout"
    assert "No significant difference on validation" in blocks[1]["text"] and "cost, not accuracy" in blocks[1]["text"]
    tables = [b["table"] for b in blocks if b["kind"] == "table"]
    assert all(isinstance(t, Table) for t in tables) and len(tables) == 2
    methods = tables[0]
    assert methods.rows[0][0] == "big (runner-up)" and methods.rows[1][0] == "small (recommended)"
    assert methods.row_classes == ["", "", "flagged"] and methods.rows[2][1].startswith("no: never left chance")
    diffs = tables[1]
    assert {r[1] for r in diffs.rows} == {"val (chosen on)", "test (evidence only)", "external/site-b (evidence only)"}
    # The contract model gives the same blocks; the blocks render in both formats.
    model_blocks = recommendation_blocks(C.Recommendation.model_validate(doc))
    assert [b.get("text") for b in model_blocks] == [b.get("text") for b in blocks]
    sections = [{"id": "summary", "title": "Summary", "number": 1, "blocks": blocks}]
    sanitize_blocks(sections)
    md = render_markdown("R", sections)
    assert "| small (recommended) |" in md and "One split" in md
    assert "small (recommended)" in render_html("R", sections, {})
    assert headline(doc) == (
        "Recommended: small (no significant difference on validation from big; chosen on cost, not accuracy; "
        "val AUROC 0.790)."
    )
    assert recommendation_blocks(None)[0]["kind"] == "missing" and headline(None) is None


def test_the_answer_starts_with_the_recommendation_and_uses_its_flags() -> None:
    from pipeline.report.answer import answer, method_flags

    doc = _tie_doc()
    ev = _ev({"big": 0.82, "small": 0.79, "mid": 0.52}, {("big", "small"): (-0.04, 0.10), ("big", "mid"): (0.1, 0.4)})
    answers = answer(ev, {}, None, {"test": "test split"}, recommendation=C.Recommendation.model_validate(doc))
    head, test = answers[0], answers[1]
    assert head["split"] == "val" and head["sentences"][0].startswith("Recommended: small")
    assert any("mid: never left chance" in w for w in head["warnings"])
    assert any("chosen on validation" in s and "vs the runner-up big here" in s for s in test["sentences"])
    assert method_flags({}, None, doc) == {"mid": doc["methods"]["mid"]["flags"]}
    assert any(w.startswith("mid: never left chance") for w in test["warnings"])
    # Without a recommendation the answer is the per-split one, as before.
    assert [a["split"] for a in answer(ev, {}, None, {})] == ["test", "external/site-b"]
