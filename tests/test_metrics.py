"""Known-value tests of pipeline.metrics (DeLong, bootstrap, Wilson, calibration, subgroups)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pipeline import clustered as CL
from pipeline import metrics as M

# Hanley & McNeil (1982), Radiology 143:29-36, Table 1: CT ratings 1-5 of 58 normal and 51
# abnormal cases. Published: A = 0.893 (Wilcoxon), SE = 0.032.
HM_NEG = [33, 6, 6, 11, 2]
HM_POS = [3, 2, 2, 11, 33]


def _hanley_mcneil() -> tuple[np.ndarray, np.ndarray]:
    ratings = np.arange(1, 6)
    y = np.r_[np.zeros(sum(HM_NEG)), np.ones(sum(HM_POS))]
    s = np.r_[np.repeat(ratings, HM_NEG), np.repeat(ratings, HM_POS)].astype(float)
    return y, s


def _brute_delong(y: np.ndarray, scores: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """DeLong et al. (1988) by definition: O(m n) kernel, structural components, covariances."""
    y = y.astype(bool)
    v10s, v01s, aucs = [], [], []
    for s in scores:
        psi = (s[y][:, None] > s[~y][None, :]) + 0.5 * (s[y][:, None] == s[~y][None, :])
        v10s.append(psi.mean(axis=1))
        v01s.append(psi.mean(axis=0))
        aucs.append(psi.mean())
    m, n = int(y.sum()), int((~y).sum())
    k = len(scores)
    cov = np.empty((k, k))
    for a in range(k):
        for b in range(k):
            s10 = np.sum((v10s[a] - aucs[a]) * (v10s[b] - aucs[b])) / (m - 1)
            s01 = np.sum((v01s[a] - aucs[a]) * (v01s[b] - aucs[b])) / (n - 1)
            cov[a, b] = s10 / m + s01 / n
    return np.array(aucs), cov


def test_delong_hand_worked_case():
    # positives 0.8, 0.4; negatives 0.6, 0.2. Kernel: 0.8 beats both (V10 = 1), 0.4 beats one
    # (0.5); negative 0.6 is beaten by one positive (V01 = 0.5), 0.2 by both (1).
    # AUC = 3/4; S10 = var(1, .5) = 0.125; S01 = 0.125; var = 0.125/2 + 0.125/2 = 0.125.
    auc, lo, hi, var = M.delong_auc_ci(np.array([1, 1, 0, 0]), np.array([0.8, 0.4, 0.6, 0.2]))
    assert auc == pytest.approx(0.75)
    assert var == pytest.approx(0.125)
    assert lo == pytest.approx(max(0.0, 0.75 - 1.959964 * math.sqrt(0.125)), abs=1e-6)
    assert hi == 1.0  # clipped


def test_delong_hanley_mcneil_published_example():
    y, s = _hanley_mcneil()
    auc, lo, hi, var = M.delong_auc_ci(y, s)
    assert auc == pytest.approx(0.893, abs=5e-4)  # published
    assert auc == pytest.approx(roc_auc_score(y, s))
    # Hanley-McNeil's exponential-approximation SE is 0.032; DeLong's nonparametric SE is close.
    assert math.sqrt(var) == pytest.approx(0.032, abs=0.002)
    _, cov = _brute_delong(y, [s])
    assert var == pytest.approx(cov[0, 0], rel=1e-10)
    assert lo < auc < hi


def test_delong_matches_sklearn_and_bruteforce_with_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    s1 = np.round(y * 0.8 + rng.normal(size=200), 1)  # rounding creates ties
    s2 = np.round(y * 0.3 + rng.normal(size=200), 1)
    aucs, cov = M.fast_delong(y, np.vstack([s1, s2]))
    assert aucs[0] == pytest.approx(roc_auc_score(y, s1))
    assert aucs[1] == pytest.approx(roc_auc_score(y, s2))
    b_aucs, b_cov = _brute_delong(y, [s1, s2])
    np.testing.assert_allclose(aucs, b_aucs, rtol=1e-12)
    np.testing.assert_allclose(cov, b_cov, rtol=1e-9)


def test_delong_needs_two_of_each_class_for_variance():
    auc, lo, hi, var = M.delong_auc_ci(np.array([1, 0, 0, 0]), np.array([0.9, 0.1, 0.2, 0.3]))
    assert auc == 1.0 and math.isnan(var) and math.isnan(lo)
    auc, *_ = M.delong_auc_ci(np.zeros(5), np.arange(5.0))
    assert math.isnan(auc)


def test_paired_delong_identical_symmetric_and_bruteforce():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 150)
    s1 = y + rng.normal(size=150)
    s2 = 0.5 * y + rng.normal(size=150)
    diff, lo, hi, p = M.delong_paired_test(y, s1, s1)
    assert diff == 0 and p == pytest.approx(1.0)
    d12, lo12, hi12, p12 = M.delong_paired_test(y, s1, s2)
    d21, lo21, hi21, p21 = M.delong_paired_test(y, s2, s1)
    assert d12 == pytest.approx(-d21) and p12 == pytest.approx(p21)
    assert lo12 == pytest.approx(-hi21) and lo12 < d12 < hi12
    b_aucs, b_cov = _brute_delong(y, [s1, s2])
    z = (b_aucs[0] - b_aucs[1]) / math.sqrt(b_cov[0, 0] + b_cov[1, 1] - 2 * b_cov[0, 1])
    assert p12 == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-9)
    assert 0 < p12 < 0.05  # s1 carries twice the signal on 150 cases


@pytest.mark.parametrize(
    "k,n,low,high",
    [  # Newcombe (1998) Stat Med 17:857-872, Table II, method 3 (Wilson score)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_published_values(k, n, low, high):
    p, lo, hi = M.wilson_ci(k, n)
    assert p == pytest.approx(k / n)
    assert lo == pytest.approx(low, abs=1e-4)
    assert hi == pytest.approx(high, abs=1e-4)


def test_wilson_closed_formula_and_empty():
    z = 1.959963984540054
    for k, n in [(3, 7), (50, 51), (12, 400)]:
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        _, lo, hi = M.wilson_ci(k, n)
        assert lo == pytest.approx(centre - half, abs=1e-10)
        assert hi == pytest.approx(centre + half, abs=1e-10)
    assert all(math.isnan(v) for v in M.wilson_ci(0, 0))


def test_weighted_auc_equals_sklearn_on_repeated_cases():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60).astype(bool)
    s = np.round(rng.normal(size=60) + y, 1)
    w = rng.integers(0, 4, 60)
    got = M._WeightedAuc(y, s)(w[None, :].astype(float))[0]
    assert got == pytest.approx(roc_auc_score(np.repeat(y, w), np.repeat(s, w)))


def test_bootstrap_resamples_patients_not_images():
    rng = np.random.default_rng(4)
    n_pat, copies = 120, 4
    y_pat = rng.integers(0, 2, n_pat)
    s_pat = y_pat * 0.8 + rng.normal(size=n_pat)
    # every patient has 4 identical images: 480 images but only 120 independent units
    y, s = np.repeat(y_pat, copies), np.repeat(s_pat, copies)
    patient = np.repeat(np.arange(n_pat), copies)
    by_patient = M.bootstrap_auc_ci(y, s, patient, n_boot=600, seed=0)
    by_image = M.bootstrap_auc_ci(y, s, np.arange(len(y)), n_boot=600, seed=0)
    w_pat = by_patient["ci_high"] - by_patient["ci_low"]
    w_img = by_image["ci_high"] - by_image["ci_low"]
    assert by_patient["n_groups"] == n_pat and by_image["n_groups"] == len(y)
    assert 1.5 < w_pat / w_img < 2.7  # sqrt(4) = 2 in theory
    for r in (by_patient, by_image):
        assert r["ci_low"] < r["auc"] < r["ci_high"]
        assert r["auc"] == pytest.approx(roc_auc_score(y, s))
    # patient-level width agrees with the per-patient data (no duplication) at image level
    single = M.bootstrap_auc_ci(y_pat, s_pat, np.arange(n_pat), n_boot=600, seed=0)
    assert (single["ci_high"] - single["ci_low"]) == pytest.approx(w_pat, rel=0.25)
    again = M.bootstrap_auc_ci(y, s, patient, n_boot=600, seed=0)
    assert again == by_patient  # seeded


def test_bootstrap_counts_single_class_resamples():
    y = np.array([1, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.5])
    r = M.bootstrap_auc_ci(y, s, np.arange(6), n_boot=400, seed=1)
    # P(the only positive is never drawn) = (5/6)^6 ~ 0.33
    assert 0.2 < r["skipped_single_class"] / 400 < 0.45
    assert r["n_boot"] + r["skipped_single_class"] == r["n_boot_requested"] == 400


def test_ece_calibrated_vs_miscalibrated():
    rng = np.random.default_rng(5)
    p = rng.uniform(size=40_000)
    y = rng.uniform(size=p.size) < p
    good = M.calibration(y, p, 10)
    assert good["ece"] < 0.015
    assert good["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert sum(b["count"] for b in good["bins"]) == p.size
    overconfident = np.clip(0.5 + 2.5 * (p - 0.5), 0, 1)  # pushes probabilities to 0/1
    bad = M.calibration(y, overconfident, 10)
    assert bad["ece"] > 0.1
    const = M.calibration(y, np.full(p.size, 0.9), 10)  # predicts 0.9, truth ~0.5
    assert const["ece"] == pytest.approx(abs(0.9 - y.mean()), abs=1e-12)


def test_ece_definition_small_example():
    # bins of width 0.5: [0, .5) holds 0.1, 0.2 (mean .15, 1 of 2 positive) -> |.15 - .5| = .35;
    # [.5, 1] holds 0.9, 1.0 (mean .95, 2 of 2 positive) -> .05. ECE = .5*.35 + .5*.05 = 0.2
    r = M.calibration(np.array([0, 1, 1, 1]), np.array([0.1, 0.2, 0.9, 1.0]), 2)
    assert r["ece"] == pytest.approx(0.2)
    assert [b["count"] for b in r["bins"]] == [2, 2]
    assert r["bins"][0]["mean_predicted"] == pytest.approx(0.15)
    assert r["bins"][1]["fraction_positive"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        M.calibration(np.array([0, 1]), np.array([0.2, 1.3]), 2)


def test_choose_threshold_youden_and_sensitivity():
    y = np.array([0, 0, 0, 0, 1, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9])
    # >= 0.6: sens 4/5, spec 5/5 -> J = 0.8 (best); >= 0.45: sens 1, spec 4/5 -> J = 0.8 too:
    # ties go to the higher threshold.
    assert M.choose_threshold(y, s, "youden") == pytest.approx(0.6)
    assert M.choose_threshold(y, s, "sensitivity", 0.9) == pytest.approx(0.45)
    assert M.choose_threshold(y, s, "sensitivity", 0.8) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="both classes"):
        M.choose_threshold(np.zeros(4), np.arange(4.0), "youden")


def test_youden_tie_within_float_rounding_goes_to_the_highest_threshold():
    # 10 positives, 10 negatives, scores descending. At 0.85: sens 7/10, 1 - spec 1/10 ->
    # J = 0.7 - 0.1; at 0.55: sens 9/10, 1 - spec 3/10 -> J = 0.9 - 0.3. Both are 0.6, but in
    # floating point the second is larger by one ulp; an exact argmax would pick 0.55.
    labels = [0] + [1] * 7 + [0, 0, 1, 1] + [0] * 7 + [1]
    y = np.array(labels)
    s = np.linspace(0.95, 0.0, len(y)).round(3)
    fpr_t, tpr_t = 1 / 10, 7 / 10
    assert (tpr_t - fpr_t) < (0.9 - 0.3)  # the rounding this test is about
    thr = M.choose_threshold(y, s, "youden")
    pred = s >= thr
    assert (pred & (y == 1)).sum() == 7 and (pred & (y == 0)).sum() == 1


def test_binary_metrics_at_threshold():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    s = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1, 0.4, 0.5])
    r = M.binary_metrics_at(y, s, 0.5)
    assert r["confusion"] == {"tn": 3, "fp": 1, "fn": 1, "tp": 3}
    assert r["sensitivity"]["value"] == pytest.approx(0.75)
    assert r["specificity"]["value"] == pytest.approx(0.75)
    assert r["ppv"]["value"] == pytest.approx(0.75) and r["npv"]["value"] == pytest.approx(0.75)
    assert r["f1"] == pytest.approx(0.75) and r["balanced_accuracy"] == pytest.approx(0.75)
    assert (r["sensitivity"]["ci_low"], r["sensitivity"]["ci_high"]) == pytest.approx(M.wilson_ci(3, 4)[1:])
    none_pos = M.binary_metrics_at(y, s, 2.0)
    assert math.isnan(none_pos["ppv"]["value"]) and none_pos["ppv"]["n"] == 0


def test_ovr_macro_matches_sklearn_and_bootstrap():
    rng = np.random.default_rng(6)
    n = 500
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), y] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    r = M.ovr_auc_ci(y, probs)
    assert r["macro"]["auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"))
    for k in range(3):
        auc, lo, hi, var = M.delong_auc_ci(y == k, probs[:, k])
        assert r["per_class"][k]["auc"] == pytest.approx(auc)
        assert r["per_class"][k]["var"] == pytest.approx(var, rel=1e-9)
    boot = M.bootstrap_auc_ci(y, probs, np.arange(n), n_boot=400, seed=0)
    assert boot["auc"] == pytest.approx(r["macro"]["auc"])
    width_delong = r["macro"]["ci_high"] - r["macro"]["ci_low"]
    assert (boot["ci_high"] - boot["ci_low"]) == pytest.approx(width_delong, rel=0.3)
    d, lo, hi, p = M.ovr_paired_test(y, probs, probs)
    assert abs(d) < 1e-12 and p == pytest.approx(1.0)
    missing = M.ovr_auc_ci(y[y != 2], probs[y != 2])
    assert missing["missing_classes"] == [2] and math.isnan(missing["macro"]["auc"])


def test_age_bands():
    labels = M.age_band_labels(np.array([5, 39.9, 40, 59, 60, 120, 130, np.nan]), [0, 40, 60, 120])
    assert labels.tolist() == [
        "[0, 40)",
        "[0, 40)",
        "[40, 60)",
        "[40, 60)",
        "[60, 120]",
        "[60, 120]",
        "unknown",
        "unknown",
    ]


def test_subgroup_flags():
    rng = np.random.default_rng(7)
    n = 120
    y = np.r_[rng.integers(0, 2, 100), np.ones(20, int)]
    p1 = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, n), 0, 1)
    probs = np.c_[1 - p1, p1]
    # 100 images in "A" (both classes), 15 in "B" (only positives), 5 in "C" (only positives)
    sex = np.array(["A"] * 100 + ["B"] * 15 + ["C"] * 5, dtype=object)
    rows = CL.subgroup_table(
        y,
        probs,
        {"sex": sex},
        np.arange(n),
        ["normal", "abnormal"],
        1,
        min_size=30,
        min_patients=1,
    )
    by = {r["group"]: r for r in rows}
    assert set(by) == {"A", "B", "C"}  # nothing dropped
    assert not by["A"]["flagged"] and by["A"]["ci_low"] < by["A"]["auroc"] < by["A"]["ci_high"]
    assert by["A"]["auroc"] == pytest.approx(roc_auc_score(y[:100], p1[:100]))
    assert by["B"]["flagged"] and math.isnan(by["B"]["auroc"])
    assert any("single class (only abnormal)" in f for f in by["B"]["flags"])
    assert any("fewer than 30" in f for f in by["B"]["flags"])
    assert by["C"]["n"] == 5 and by["C"]["n_positive"] == 5
