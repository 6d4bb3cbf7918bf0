"""Overfitting diagnostics on synthetic training logs with known answers, and learning-curve sampling."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipeline import diagnostics as D

RULES = D.Rules(overfit_k=2, gap_mild=0.05, gap_severe=0.15)


def _history(train_loss, val_loss, train_auroc, val_auroc):
    return [
        {
            "epoch": i + 1,
            "train_loss": tl,
            "val_loss": vl,
            "train_auroc": ta,
            "val_auroc": va,
            "lr": {"head": 0.01},
            "seconds": 10.0,
        }
        for i, (tl, vl, ta, va) in enumerate(zip(train_loss, val_loss, train_auroc, val_auroc, strict=True))
    ]


# A run that overfits: val loss bottoms out at epoch 3, then rises while train loss keeps falling.
OVERFIT = {
    "history": _history(
        [1.0, 0.8, 0.6, 0.5, 0.4, 0.3],
        [1.0, 0.9, 0.85, 0.9, 0.95, 1.0],
        [0.60, 0.75, 0.85, 0.92, 0.97, 0.99],
        [0.60, 0.70, 0.78, 0.80, 0.79, 0.77],
    ),
    "best_epoch": 4,
    "model_card": {},
}


def test_onset_is_the_kth_consecutive_rise_with_falling_train_loss() -> None:
    tl = [h["train_loss"] for h in OVERFIT["history"]]
    vl = [h["val_loss"] for h in OVERFIT["history"]]
    assert D.overfitting_onset(tl, vl, 1) == 3
    assert D.overfitting_onset(tl, vl, 2) == 4
    assert D.overfitting_onset(tl, vl, 3) == 5
    assert D.overfitting_onset(tl, vl, 4) is None


def test_no_onset_when_both_losses_rise_or_a_rise_is_isolated() -> None:
    # Diverging optimiser: both losses go up -> not overfitting.
    assert D.overfitting_onset([1, 1.1, 1.2, 1.3], [1, 1.1, 1.2, 1.3], 2) is None
    # One uptick, then down again, then one uptick: never two in a row.
    assert D.overfitting_onset([1, 0.9, 0.8, 0.7, 0.6], [1, 1.1, 1.0, 1.05, 1.0], 2) is None
    # A NaN (undefined) loss breaks a run.
    assert D.overfitting_onset([1, 0.9, 0.8, 0.7], [1, 1.1, None, 1.2], 2) is None
    with pytest.raises(ValueError):
        D.overfitting_onset([1, 2], [1], 1)


def test_epoch_diagnostics_best_gaps_onset_convergence() -> None:
    d = D.epoch_curve_diagnostics(OVERFIT, RULES)
    assert d["best_epoch"] == 4
    assert d["epochs_run"] == 6
    assert d["at_best"]["auroc_gap"] == pytest.approx(0.92 - 0.80)
    assert d["at_best"]["loss_gap"] == pytest.approx(0.9 - 0.5)
    assert d["at_last"]["epoch"] == 6
    assert d["at_last"]["auroc_gap"] == pytest.approx(0.99 - 0.77)
    assert d["overfit_onset"] == {"epoch": 5, "rise_after_epoch": 3}
    assert d["start_val_auroc"] == pytest.approx(0.60)
    assert d["best_val_auroc"] == pytest.approx(0.80)
    # From chance: 0.5 + 0.95 x (0.80 - 0.5) = 0.785, first reached at epoch 4 (0.80); the old
    # 0.95 x best (0.76) would have said epoch 3.
    assert d["convergence"]["epochs"] == 4
    assert d["convergence"]["threshold"] == pytest.approx(0.785)
    assert d["convergence"]["seconds"] == pytest.approx(40.0)
    assert d["near_chance"] is False
    assert d["val_decline"] == {
        "peak_epoch": 4,
        "peak_val_auroc": 0.8,
        "last_val_auroc": 0.77,
        "drop": pytest.approx(0.03),
        "train_auroc_change": pytest.approx(0.07),
    }
    # gap 0.12 is between 0.05 and 0.15.
    assert d["verdict"]["level"] == "mild"
    assert "0.120" in d["verdict"]["text"]


def test_best_epoch_must_be_logged() -> None:
    with pytest.raises(ValueError, match="best_epoch 9"):
        D.epoch_curve_diagnostics({**OVERFIT, "best_epoch": 9}, RULES)
    with pytest.raises(ValueError, match="lacks"):
        D.epoch_curve_diagnostics({"history": [{"epoch": 1}], "best_epoch": 1}, RULES)


@pytest.mark.parametrize(
    ("gap", "onset", "level"),
    [
        (0.0, False, "no"),
        (0.049, False, "no"),
        (0.049, True, "mild"),
        (0.05, False, "mild"),
        (0.149, False, "mild"),
        (0.15, False, "severe"),
        (0.40, True, "severe"),
        (-0.02, False, "no"),
        (None, False, "unknown"),
    ],
)
def test_verdict_thresholds(gap, onset, level) -> None:
    v = D.verdict(gap, onset, RULES)
    assert v["level"] == level
    if gap is not None:
        assert f"{gap:.3f}" in v["text"]


def test_convergence_counts_from_chance_and_a_near_chance_curve_does_not_converge() -> None:
    # [0.52, 0.53, 0.54]: 0.95 x best = 0.513 would be "converged at epoch 1".
    assert D.convergence_threshold(0.54) == pytest.approx(0.538)
    assert D.convergence_index([0.52, 0.53, 0.54]) == 2  # epoch 3, not epoch 1
    # With the default chance_margin (0.05) it is near chance: no convergence at all, so it can
    # never look faster than a curve that learns.
    assert D.convergence_index([0.52, 0.53, 0.54], chance_margin=0.05) is None
    learning = [0.60, 0.75, 0.85, 0.86]  # threshold 0.842: epoch 3
    assert D.convergence_index(learning, chance_margin=0.05) == 2
    assert D.convergence_index([None, None]) is None
    log = {"history": _history([1, 0.9, 0.8], [1, 1, 1], [0.5, 0.55, 0.6], [0.52, 0.53, 0.54]), "best_epoch": 3}
    d = D.epoch_curve_diagnostics(log, RULES)
    assert d["near_chance"] is True and d["convergence"] is None
    # Its verdict says it did not learn before anything about overfitting.
    assert d["verdict"]["near_chance"] is True
    assert d["verdict"]["text"].startswith("Did not learn: the best validation AUROC is 0.540, below 0.550")
    learnt = D.epoch_curve_diagnostics(
        {**log, "history": _history([1, 0.9, 0.8], [1, 1, 1], [0.6, 0.7, 0.8], learning[:3])}, RULES
    )
    assert learnt["verdict"]["near_chance"] is False and learnt["near_chance"] is False
    assert not learnt["verdict"]["text"].startswith("Did not learn")


def test_val_auroc_falling_from_its_peak_while_train_rises_is_never_no_overfitting() -> None:
    # Fine-tune on the demo: val AUROC peaked at epoch 1 (0.708) and fell while train rose; the
    # kept checkpoint is epoch 1, whose train-val gap is negative.
    log = {
        "history": _history(
            [0.7, 0.6, 0.5, 0.4], [0.69, 0.69, 0.69, 0.69], [0.60, 0.72, 0.80, 0.88], [0.708, 0.68, 0.66, 0.64]
        ),
        "best_epoch": 1,
    }
    d = D.epoch_curve_diagnostics(log, RULES)
    assert d["at_best"]["auroc_gap"] < 0 and d["overfit_onset"] is None
    assert d["verdict"]["level"] == "mild" and d["verdict"]["val_decline"] is True
    assert "fell by 0.068 from its peak 0.708" in d["verdict"]["text"]
    # A fall of gap_severe or more is severe.
    steep = {
        **log,
        "history": _history([0.7, 0.6, 0.5, 0.4], [0.69] * 4, [0.60, 0.72, 0.80, 0.88], [0.708, 0.62, 0.58, 0.55]),
    }
    assert D.epoch_curve_diagnostics(steep, RULES)["verdict"]["level"] == "severe"
    # The same fall with a train AUROC that falls too is not the overfitting pattern.
    both = {
        **log,
        "history": _history([0.7, 0.6, 0.5, 0.4], [0.69] * 4, [0.60, 0.58, 0.57, 0.55], [0.708, 0.68, 0.66, 0.64]),
    }
    assert D.epoch_curve_diagnostics(both, RULES)["verdict"]["level"] == "no"
    # A fall within gap_mild does not count.
    small = {"drop": 0.04, "train_auroc_change": 0.2, "peak_val_auroc": 0.7}
    assert D.verdict(0.0, False, RULES, decline=small)["level"] == "no"


def test_linear_validation_curve_gap_at_chosen_c() -> None:
    log = {
        "best_C": 0.01,
        "cv": [
            {"C": 1.0, "train_auroc": 1.0, "cv_auroc": 0.70, "cv_auroc_std": 0.05},
            {"C": 0.01, "train_auroc": 0.90, "cv_auroc": 0.82, "cv_auroc_std": 0.04},
            {"C": 0.0001, "train_auroc": 0.80, "cv_auroc": 0.78, "cv_auroc_std": 0.03},
        ],
    }
    d = D.linear_validation_curve(log, RULES)
    assert [r["C"] for r in d["curve"]] == [0.0001, 0.01, 1.0]  # sorted for plotting
    assert d["at_best"]["gap"] == pytest.approx(0.08)
    assert d["verdict"]["level"] == "mild"
    d2 = D.linear_validation_curve({**log, "best_C": 1.0}, RULES)
    assert d2["verdict"]["level"] == "severe"
    assert d["verdict"]["near_chance"] is False
    # A near-constant linear model (cv AUROC 0.52 at the chosen C) did not learn.
    flat = {"best_C": 2e-6, "cv": [{"C": 2e-6, "train_auroc": 0.53, "cv_auroc": 0.52}]}
    v = D.linear_validation_curve(flat, RULES)["verdict"]
    assert v["level"] == "no" and v["near_chance"] is True
    assert v["text"].startswith("Did not learn: the best cross-validated AUROC (at the chosen C) is 0.520")
    with pytest.raises(ValueError, match="not in the cv table"):
        D.linear_validation_curve({**log, "best_C": 5.0}, RULES)


def test_trifecta_and_build_diagnostics_json_roundtrip() -> None:
    scratch = {
        "history": _history(
            [1.0, 0.9, 0.8, 0.7], [1.0, 0.95, 0.9, 0.88], [0.5, 0.6, 0.65, 0.7], [0.5, 0.55, 0.6, 0.68]
        ),
        "best_epoch": 4,
    }
    linear = {"best_C": 0.1, "cv": [{"C": 0.1, "train_auroc": 0.85, "cv_auroc": 0.83, "cv_auroc_std": 0.02}]}
    metrics = {
        "finetune": {"test": {"auroc": 0.81, "auroc_ci_low": 0.74, "auroc_ci_high": 0.88}},
        "scratch": {"test": {"auroc": 0.66, "auroc_ci_low": 0.57, "auroc_ci_high": 0.72}},
        "linear": {"test": {"auroc": 0.80, "auroc_ci_low": 0.73, "auroc_ci_high": 0.87}},
    }
    separated = [
        {
            "path_a": "finetune",
            "path_b": "scratch",
            "difference": 0.15,
            "ci_low": 0.05,
            "ci_high": 0.25,
            "p_value": 0.003,
            "method": "paired clustered DeLong",
        }
    ]
    doc = D.build_diagnostics(
        {"finetune": OVERFIT, "scratch": scratch, "linear": linear}, metrics, RULES, None, separated
    )
    cmp_ = doc["trifecta"]["finetune_vs_scratch"]
    assert cmp_["start_val_auroc_diff"] == pytest.approx(0.10)
    # finetune: threshold 0.785 -> epoch 4; scratch: best .68, threshold .671 -> epoch 4.
    assert cmp_["convergence_epochs_saved"] == 0
    assert cmp_["test_auroc_diff"] == pytest.approx(0.15)
    assert cmp_["test_ci_overlap"] is False
    assert cmp_["higher_asymptote_claim"] == "yes" and cmp_["higher_asymptote"] is True
    # No interval for start and convergence: differences reported, claims not made.
    assert cmp_["higher_start_claim"] == "not tested" and cmp_["higher_start"] is None
    assert cmp_["faster_convergence_claim"] == "not tested" and cmp_["faster_convergence"] is None
    assert doc["trifecta"]["paths"]["linear"]["start_val_auroc"] is None
    assert doc["trifecta"]["paths"]["linear"]["test"]["auroc"] == pytest.approx(0.80)
    assert set(doc["verdicts"]) == {"finetune", "scratch", "linear"}
    assert doc["verdicts"]["linear"]["level"] == "no"
    assert doc["rules"] == {
        "overfit_k": 2,
        "gap_mild": 0.05,
        "gap_severe": 0.15,
        "noninferiority_margin": 0.05,
        "chance_margin": 0.05,
    }
    assert "verdict" in doc["definitions"] and "scratch_catches_up" in doc["definitions"]
    json.dumps(doc, allow_nan=False)  # plain JSON
    # A paired CI spanning 0 is "not separated", never "higher asymptote: yes", even though the
    # point difference is positive; the comparison is found in either order.
    spanning = [
        {
            "path_a": "scratch",
            "path_b": "finetune",
            "difference": -0.15,
            "ci_low": -0.31,
            "ci_high": 0.01,
            "p_value": 0.07,
            "method": "m",
        }
    ]
    doc = D.build_diagnostics({"finetune": OVERFIT, "scratch": scratch}, metrics, RULES, None, spanning)
    cmp_ = doc["trifecta"]["finetune_vs_scratch"]
    assert cmp_["test_auroc_diff"] > 0
    assert cmp_["higher_asymptote_claim"] == "not separated" and cmp_["higher_asymptote"] is None
    assert cmp_["test_paired"]["ci_low"] == pytest.approx(-0.01)
    below = [{**spanning[0], "ci_low": 0.02, "ci_high": 0.3, "difference": 0.16}]  # scratch higher
    cmp_ = D.build_diagnostics({"finetune": OVERFIT, "scratch": scratch}, metrics, RULES, None, below)["trifecta"][
        "finetune_vs_scratch"
    ]
    assert cmp_["higher_asymptote_claim"] == "no" and cmp_["higher_asymptote"] is False
    none = D.build_diagnostics({"finetune": OVERFIT, "scratch": scratch}, metrics, RULES, None, None)
    assert none["trifecta"]["finetune_vs_scratch"]["higher_asymptote_claim"] == "not tested"


# --------------------------------------------------------------------------- learning curve


def _cohort(n_pos_patients=8, n_neg_patients=24, seed=0):
    """Patients with 1-4 images each; each patient's images share the patient's label."""
    rng = np.random.default_rng(seed)
    rows, patients, labels = [], [], []
    r = 0
    for i in range(n_pos_patients + n_neg_patients):
        lab = 1 if i < n_pos_patients else 0
        for _ in range(rng.integers(1, 5)):
            rows.append(r)
            patients.append(f"p{i:03d}")
            labels.append(lab)
            r += 1
    return np.array(rows), np.array(patients, dtype=object), np.array(labels)


def test_patient_label_is_majority_with_ties_to_positive() -> None:
    pl = D.patient_labels(np.array(["a", "a", "a", "b", "b"]), np.array([0, 0, 1, 0, 1]), positive=1)
    assert pl == {"a": 0, "b": 1}


def test_sampling_is_stratified_nested_seeded_and_patient_level() -> None:
    rows, patients, labels = _cohort()
    plabel = D.patient_labels(patients, labels, positive=1)
    order = D.stratified_patient_order(plabel, [42, 0])
    quarter, half, full = (D.sample_patients(order, f) for f in (0.25, 0.5, 1.0))
    # stratified: round(f * n_class) per class, at least one
    for chosen, f in ((quarter, 0.25), (half, 0.5), (full, 1.0)):
        pos = sum(plabel[p] == 1 for p in chosen)
        neg = sum(plabel[p] == 0 for p in chosen)
        assert (pos, neg) == (max(1, round(f * 8)), max(1, round(f * 24)))
    assert set(quarter) < set(half) < set(full) == set(plabel)  # nested
    # seeded: same seed, same sample; another repeat, another sample
    assert D.sample_patients(D.stratified_patient_order(plabel, [42, 0]), 0.5) == half
    assert set(D.sample_patients(D.stratified_patient_order(plabel, [42, 1]), 0.5)) != set(half)
    # patient-level: every image of a chosen patient, and no image of anyone else
    sub = D.subset_rows(rows, patients, half)
    assert set(patients[np.isin(rows, sub)]) == set(half)
    assert len(sub) == sum(np.isin(patients, half))
    # a tiny class keeps one patient
    assert sum(plabel[p] == 1 for p in D.sample_patients(order, 0.01)) == 1
    with pytest.raises(ValueError):
        D.sample_patients(order, 0.0)


def test_run_learning_curve_orchestration_and_reuse() -> None:
    rows, patients, labels = _cohort()
    y_test = np.array([0, 1] * 20)
    calls = []

    def fit(kind, train_rows, seed, epochs):
        calls.append((kind, len(train_rows), seed, epochs))
        # Patient-level subsets only: whole patients.
        chosen = set(patients[np.isin(rows, train_rows)])
        assert len(train_rows) == sum(p in chosen for p in patients)
        # Better with more data, deterministic: noise shrinks with the training-set size.
        noise = np.random.default_rng(seed).normal(0, 20.0 / len(train_rows), len(y_test))
        return y_test + noise, {"best_epoch": 1}

    test_patients = np.repeat(np.arange(20), 2)
    paired_calls = []

    def auc_ci(y, s, pats):
        assert pats is test_patients or np.array_equal(pats, test_patients)
        a = roc_auc_score(y, s)
        return a, a - 0.05, min(1.0, a + 0.05)

    def paired(y, s1, s2, pats):
        assert np.array_equal(pats, test_patients)  # the same test patients for both paths
        paired_calls.append((s1.copy(), s2.copy()))
        d = roc_auc_score(y, s1) - roc_auc_score(y, s2)
        return d, d - 0.1, d + 0.1, 0.5

    reuse = {"finetune": y_test.astype(float)}  # a perfect main run
    pts, pairs = D.run_learning_curve(
        ["finetune", "scratch"],
        rows,
        patients,
        labels,
        y_test,
        test_patients,
        1,
        [1.0, 0.25, 0.5],
        2,
        7,
        3,
        fit,
        auc_ci,
        paired,
        reuse=reuse,
    )
    assert len(pts) == 2 * 3 * 2
    # One paired comparison per fraction and repeat: scratch (challenger) vs finetune.
    assert len(pairs) == 3 * 2 and {(p["challenger"], p["reference"]) for p in pairs} == {("scratch", "finetune")}
    at_full = next(p for p in pairs if p["fraction"] == 1.0 and p["repeat"] == 0)
    scratch_full = next(p for p in pts if p["path"] == "scratch" and p["fraction"] == 1.0 and p["repeat"] == 0)
    assert at_full["difference"] == pytest.approx(scratch_full["test_auroc"] - 1.0, abs=1e-4)
    assert any(np.array_equal(s2, y_test.astype(float)) for _s1, s2 in paired_calls)  # reused probs paired
    reused = [p for p in pts if p["reused_main_run"]]
    assert [(p["path"], p["fraction"], p["repeat"]) for p in reused] == [("finetune", 1.0, 0)]
    assert reused[0]["test_auroc"] == 1.0
    assert ("finetune", len(rows), 8, 3) in calls  # repeat 1 at 1.0 is retrained with seed + 1
    assert all(c[3] == 3 for c in calls)
    assert [p["fraction"] for p in pts[:4]] == [0.25, 0.25, 0.5, 0.5]  # fractions ascending
    summary = D.summarise_learning_curve(pts)
    assert len(summary) == 6 and all(r["repeats"] == 2 for r in summary)
    s_ft = {r["fraction"]: r for r in summary if r["path"] == "finetune"}
    assert s_ft[1.0]["reused_main_run"] is True
    assert s_ft[0.25]["n_patients"] < s_ft[0.5]["n_patients"] < s_ft[1.0]["n_patients"] == 32


def _summary_and_pairs(rows):
    """rows: (fraction, n_patients, scratch_auc, finetune_auc, diff_lo, diff_hi)."""
    summary, pairs = [], []
    for f, n, a_s, a_f, lo, hi in rows:
        for path, a in (("scratch", a_s), ("finetune", a_f)):
            summary.append(
                {"path": path, "fraction": f, "n_patients": n, "test_auroc": a, "ci_low": a - 0.1, "ci_high": a + 0.1}
            )
        pairs.append(
            {
                "challenger": "scratch",
                "reference": "finetune",
                "fraction": f,
                "repeat": 0,
                "n_patients": n,
                "difference": a_s - a_f,
                "ci_low": lo,
                "ci_high": hi,
                "p_value": 0.5,
            }
        )
    return summary, D.summarise_pairs(pairs)


def test_catch_up_rule_is_non_inferiority_on_the_paired_difference() -> None:
    summary, pairs = _summary_and_pairs(
        [
            (0.25, 10, 0.60, 0.80, -0.30, -0.10),  # clearly worse
            (0.5, 20, 0.78, 0.80, -0.045, 0.005),  # lower bound above -0.05: non-inferior
            (1.0, 40, 0.86, 0.80, 0.01, 0.11),  # CI above 0: better
        ]
    )
    c = D.catch_up(summary, pairs, 0.05)
    assert [p["status"] for p in c["per_size"]] == ["not shown", "caught up", "better"]
    assert [p["caught_up"] for p in c["per_size"]] == [False, True, True]
    assert c["from_patients"] == 20 and c["margin"] == 0.05
    assert "from 20 training patients" in c["text"] and "-0.045" in c["text"]
    # The demo's case: scratch 0.557 vs finetune 0.650 is not "caught up", although 0.557 lies
    # above a finetune lower CI bound of 0.55 (the old rule).
    summary, pairs = _summary_and_pairs([(1.0, 116, 0.557, 0.650, -0.17, -0.016)])
    c = D.catch_up(summary, pairs, 0.05)
    assert c["from_patients"] is None and c["per_size"][0]["status"] == "not shown"
    assert "not shown to catch up" in c["text"] and "116 patients" in c["text"]
    # A catch-up that is lost again at the largest size does not count.
    summary, pairs = _summary_and_pairs([(0.5, 20, 0.79, 0.80, -0.04, 0.02), (1.0, 40, 0.7, 0.8, -0.2, -0.02)])
    assert D.catch_up(summary, pairs, 0.05)["from_patients"] is None
    # A wider margin accepts what a narrow one does not.
    summary, pairs = _summary_and_pairs([(1.0, 40, 0.76, 0.80, -0.09, 0.01)])
    assert D.catch_up(summary, pairs, 0.05)["from_patients"] is None
    assert D.catch_up(summary, pairs, 0.10)["from_patients"] == 40
    assert D.catch_up_status(None, 0.05) == "not tested"


def test_learning_curve_block_lists_catch_up_against_each_pretrained_path() -> None:
    pts = [
        {
            "path": p,
            "fraction": 1.0,
            "repeat": 0,
            "n_patients": 10,
            "n_images": 20,
            "test_auroc": a,
            "ci_low": a - 0.1,
            "ci_high": a + 0.1,
            "reused_main_run": False,
        }
        for p, a in (("linear", 0.8), ("finetune", 0.9), ("scratch", 0.75))
    ]
    pairs = [
        {
            "challenger": "scratch",
            "reference": ref,
            "fraction": 1.0,
            "repeat": r,
            "n_patients": 10,
            "difference": d,
            "ci_low": lo,
            "ci_high": d + 0.05,
            "p_value": 0.5,
        }
        for ref, d, lo in (("linear", -0.05, -0.04), ("finetune", -0.15, -0.2))
        for r in (0, 1)
    ]
    b = D.learning_curve_block(pts, pairs, [1.0], 2, 3, "note", 0.05)
    assert set(b["scratch_catch_up"]) == {"finetune", "linear"}
    assert b["scratch_catch_up"]["linear"]["from_patients"] == 10
    assert b["scratch_catch_up"]["finetune"]["from_patients"] is None
    assert [r["repeats"] for r in b["pair_summary"]] == [2, 2]
    assert "Obuchowski" in b["comparison_method"]


def test_main_run_probs_follow_test_row_order(tmp_path) -> None:
    df = pd.DataFrame(
        {
            "row": [0, 1, 2, 3],
            "file": list("abcd"),
            "split": ["train", "test", "val", "test"],
            "source": "internal",
            "label": ["normal", "abnormal", "normal", "normal"],
            "prob_normal": [0.9, 0.2, 0.7, 0.6],
            "prob_abnormal": [0.1, 0.8, 0.3, 0.4],
        }
    )
    df.to_csv(tmp_path / "p.csv", index=False)
    p = D.main_run_test_probs(tmp_path / "p.csv", np.array([3, 1]), ("normal", "abnormal"), 1)
    assert p.tolist() == [0.4, 0.8]
    with pytest.raises(ValueError, match="lacks test rows"):
        D.main_run_test_probs(tmp_path / "p.csv", np.array([5]), ("normal", "abnormal"), 1)


def _params(**diagnose):
    import yaml

    from pipeline.params import REPO_ROOT, validate_params

    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["linear"].update({"C_grid": [0.01, 1.0], "cv_folds": 3, "use_augmented": False})
    raw["diagnose"].update(diagnose)
    return validate_params(raw)


def _synthetic_dataset(n_patients=48, seed=0):
    from pipeline.dataset import Dataset

    rng = np.random.default_rng(seed)
    pat = np.repeat([f"pt{i:02d}" for i in range(n_patients)], 2)
    lab = np.repeat(rng.permutation([0, 1] * (n_patients // 2)), 2)
    split_of = {f"pt{i:02d}": ("train" if i % 4 < 2 else "val" if i % 4 == 2 else "test") for i in range(n_patients)}
    manifest = pd.DataFrame(
        {
            "row": np.arange(len(pat)),
            "file": [f"f{i}.dcm" for i in range(len(pat))],
            "patient": pat,
            "label": np.array(["normal", "abnormal"])[lab],
            "split": [split_of[p] for p in pat],
            "source": "internal",
        }
    )
    ds = Dataset(manifest=manifest, images=np.zeros((len(pat), 8, 8), np.float16), classes=("normal", "abnormal"))
    features = rng.normal(size=(len(pat), 6)).astype(np.float32)
    features[:, 0] += 1.5 * lab  # a real signal: the linear path must beat chance
    return ds, features


def test_pipeline_learning_curve_linear_with_real_fit_and_delong(tmp_path) -> None:
    params = _params(fractions=[0.5, 1.0], repeats=1)
    ds, features = _synthetic_dataset()
    fit = D.make_fit(ds, params, {"features": features, "aug_features": None, "aug_index": None})
    block = D.pipeline_learning_curve(ds, params, fit, predictions_dir=tmp_path, paths_to_run=["linear"])
    assert block["n_training_patients_total"] == 24
    pts = block["points"]
    assert [(p["fraction"], p["n_patients"]) for p in pts] == [(0.5, 12), (1.0, 24)]
    assert not any(p["reused_main_run"] for p in pts)  # no predictions/linear.csv in tmp_path
    for p in pts:
        assert 0.5 < p["test_auroc"] <= 1.0
        assert p["ci_low"] <= p["test_auroc"] <= p["ci_high"]
        assert "best_C" in p
    assert "retrained" in block["reuse"]


def test_pipeline_learning_curve_reuses_main_run_only_with_same_epochs(tmp_path) -> None:
    ds, _ = _synthetic_dataset()
    test_rows = ds.rows("test")
    probs = np.linspace(0.05, 0.95, len(ds.manifest))
    pd.DataFrame(
        {
            "row": ds.manifest["row"],
            "file": ds.manifest["file"],
            "split": ds.manifest["split"],
            "source": "internal",
            "label": ds.manifest["label"],
            "prob_normal": 1 - probs,
            "prob_abnormal": probs,
        }
    ).to_csv(tmp_path / "finetune.csv", index=False)
    seen = []

    def fit(kind, rows, seed, epochs):
        seen.append((kind, len(rows), epochs))
        return np.full(len(test_rows), 0.5), {}

    same = _params(fractions=[1.0], learning_curve_epochs=None)
    block = D.pipeline_learning_curve(ds, same, fit, predictions_dir=tmp_path, paths_to_run=["finetune"])
    assert seen == [] and block["points"][0]["reused_main_run"] is True
    assert "reuses the main run" in block["reuse"]
    expected = D.clustered_auc_ci((ds.labels()[test_rows] == 1).astype(int), probs[test_rows], ds.patients(test_rows))[
        0
    ]
    assert block["points"][0]["test_auroc"] == pytest.approx(expected, abs=1e-4)
    fewer = _params(fractions=[1.0], learning_curve_epochs=1)
    block = D.pipeline_learning_curve(ds, fewer, fit, predictions_dir=tmp_path, paths_to_run=["finetune"])
    assert seen == [("finetune", len(ds.rows("train")), 1)] and not block["points"][0]["reused_main_run"]


def test_make_fit_retrains_scratch_with_the_real_trainer() -> None:
    """The production glue: pipeline.training.train on a row subset, test-split probabilities back."""
    raw_params = _params()
    import yaml

    from pipeline.params import validate_params

    raw = yaml.safe_load(yaml.safe_dump(raw_params.model_dump(mode="json")))
    raw["train"].update({"batch_size": 8, "num_threads": 1, "augment_on_the_fly": False, "device": "cpu"})
    raw["scratch"]["lr"] = 0.01  # the rate the scratch stage chose (steps/diagnose.with_chosen_scratch_lr)
    params = validate_params(raw)
    ds, _ = _synthetic_dataset(n_patients=16)
    rng = np.random.default_rng(1)
    images = rng.random((len(ds.manifest), 32, 32)).astype(np.float16)
    from pipeline.dataset import Dataset

    ds = Dataset(manifest=ds.manifest, images=images, classes=ds.classes)
    fit = D.make_fit(ds, params)
    rows = ds.rows("train")[:10]
    probs, info = fit("scratch", rows, 3, 1)
    assert probs.shape == (len(ds.rows("test")),)
    assert np.all((probs >= 0) & (probs <= 1))
    assert info == {"best_epoch": 1, "epochs_run": 1}
    with pytest.raises(ValueError, match="linear_inputs"):
        fit("linear", rows, 3, None)


def test_learning_curve_paired_test_is_evaluations_patient_level_comparison() -> None:
    from pipeline.clustered import paired_comparison

    rng = np.random.default_rng(3)
    pat = np.repeat(np.arange(30), 3)
    y = rng.integers(0, 2, len(pat))
    s1, s2 = y + rng.normal(size=len(y)), 0.5 * y + rng.normal(size=len(y))
    got = D.make_paired_test(300, 5)(y, s1, s2, pat)
    ref = paired_comparison(y, s1, s2, pat, 300, 5)
    assert got == pytest.approx((ref["difference"], ref["ci_low"], ref["ci_high"], ref["p_value"]))
    assert got[0] == pytest.approx(roc_auc_score(y, s1) - roc_auc_score(y, s2))
