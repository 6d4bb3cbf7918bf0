"""Patient-level statistics: Obuchowski's clustered DeLong, design-effect Wilson, PPV/NPV at a
prevalence, patient-weighted AUROC, and a Monte-Carlo check of size and coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from pipeline import clustered as CL
from pipeline import metrics as M


def _clustered_data(rng, n_pat=60, per=5, d=1.0, su=1.0, se=0.7, rho=0.5):
    """Two scores with the same true AUROC; a patient effect shared by a patient's images.

    Labels are per patient, so every positive/negative pair is from two patients and the true
    AUROC is Phi(d / sqrt(2 (su^2 + se^2))) for both scores.
    """
    yp = rng.integers(0, 2, n_pat)
    y = np.repeat(yp, per)
    pat = np.repeat(np.arange(n_pat), per)
    z = rng.normal(size=(2, n_pat))
    u1, u2 = z[0], rho * z[0] + math.sqrt(1 - rho**2) * z[1]
    s1 = d * y + su * np.repeat(u1, per) + se * rng.normal(size=y.size)
    s2 = d * y + su * np.repeat(u2, per) + se * rng.normal(size=y.size)
    true = stats.norm.cdf(d / math.sqrt(2 * (su**2 + se**2)))
    return y, s1, s2, pat, true


def _obuchowski_bruteforce(y, s, clusters):
    """Obuchowski 1997 eqs. 3-5 literally: double loop over all positive/negative pairs."""
    y = np.asarray(y, bool)
    ids = sorted(set(clusters.tolist()))
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    m, n = len(pos), len(neg)

    def psi(a, b):
        return 1.0 if a > b else 0.5 if a == b else 0.0

    v10 = {i: sum(psi(s[p], s[q]) for p in pos if clusters[p] == i for q in neg) / n for i in ids}
    v01 = {i: sum(psi(s[p], s[q]) for q in neg if clusters[q] == i for p in pos) / m for i in ids}
    mi = {i: int(sum(1 for p in pos if clusters[p] == i)) for i in ids}
    ni = {i: int(sum(1 for q in neg if clusters[q] == i)) for i in ids}
    a = sum(v10.values()) / m
    i10 = sum(1 for i in ids if mi[i] > 0)
    i01 = sum(1 for i in ids if ni[i] > 0)
    big_i = len(ids)
    s10 = i10 / ((i10 - 1) * m) * sum((v10[i] - mi[i] * a) ** 2 for i in ids)
    s01 = i01 / ((i01 - 1) * n) * sum((v01[i] - ni[i] * a) ** 2 for i in ids)
    s11 = big_i / (big_i - 1) * sum((v10[i] - mi[i] * a) * (v01[i] - ni[i] * a) for i in ids)
    return a, s10 / m + s01 / n + 2 * s11 / (m * n)


def test_one_image_per_patient_is_exactly_delong():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    s = np.round(rng.normal(size=(3, 80)) + y, 1)  # rounded: ties within and across classes
    aucs, cov = M.fast_delong(y, s)
    aucs_c, cov_c = CL.obuchowski(y, s, np.arange(80))
    np.testing.assert_allclose(aucs_c, aucs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cov_c, cov, rtol=1e-10, atol=1e-15)
    assert CL.clustered_paired_test(y, s[0], s[1], np.arange(80)) == pytest.approx(M.delong_paired_test(y, s[0], s[1]))


def test_obuchowski_matches_the_formula_written_out_and_ignores_patient_names():
    rng = np.random.default_rng(1)
    clusters = rng.integers(0, 12, 50)
    y = rng.integers(0, 2, 50)
    s = np.round(rng.normal(size=50) + y + 0.5 * rng.normal(size=12)[clusters], 1)
    a_ref, var_ref = _obuchowski_bruteforce(y, s, clusters)
    auc, lo, hi, var = CL.clustered_auc_ci(y, s, clusters)
    assert auc == pytest.approx(roc_auc_score(y, s)) and auc == pytest.approx(a_ref)
    assert var == pytest.approx(var_ref, rel=1e-10)
    renamed = np.array([f"patient-{99 - c}" for c in clusters])
    assert CL.clustered_auc_ci(y, s, renamed)[3] == pytest.approx(var, rel=1e-12)


def test_clustered_se_agrees_with_the_true_sd_and_patient_bootstrap_not_delong():
    rng = np.random.default_rng(2)
    aucs, ses, delong_ses = [], [], []
    for _ in range(300):
        y, s1, _s2, pat, _true = _clustered_data(rng)
        auc, _lo, _hi, var = CL.clustered_auc_ci(y, s1, pat)
        aucs.append(auc)
        ses.append(math.sqrt(var))
        delong_ses.append(math.sqrt(M.delong_auc_ci(y, s1)[3]))
    true_sd = float(np.std(aucs))
    assert np.mean(ses) == pytest.approx(true_sd, rel=0.15)
    assert np.mean(delong_ses) < 0.75 * true_sd  # images treated as independent: too narrow
    y, s1, _s2, pat, _ = _clustered_data(np.random.default_rng(3))
    boot = M.bootstrap_auc_ci(y, s1, pat, n_boot=2000, seed=0)
    auc, lo, hi, _ = CL.clustered_auc_ci(y, s1, pat)
    assert (hi - lo) == pytest.approx(boot["ci_high"] - boot["ci_low"], rel=0.25)


def test_monte_carlo_size_and_coverage_under_clustered_null():
    """60 patients x 5 correlated images, two scores with equal true AUROC: the paired
    patient-level test keeps its size and the single-AUROC interval its coverage; the
    image-level DeLong test on the same data does not (so the check can fail). The reported
    intervals are envelopes containing these clustered DeLong intervals, so they cover at least
    as often; their size is checked in the dominant-patient tests below."""
    rng = np.random.default_rng(2024)
    reps = 800  # binomial SE of a 5% rate: 0.8 points; of a 95% coverage: 0.8 points
    reject = reject_image = covered = 0
    for _ in range(reps):
        y, s1, s2, pat, true = _clustered_data(rng)
        reject += CL.clustered_paired_test(y, s1, s2, pat)[3] < 0.05
        reject_image += M.delong_paired_test(y, s1, s2)[3] < 0.05
        _auc, lo, hi, _ = CL.clustered_auc_ci(y, s1, pat)
        covered += lo <= true <= hi
    assert reject / reps <= 0.08
    assert covered / reps >= 0.90
    assert reject_image / reps > 0.15


def test_multiclass_clustered_covariance_close_to_delong_and_wider_when_clustered():
    rng = np.random.default_rng(4)
    n = 300
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), y] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    ref = M.ovr_auc_ci(y, probs)
    one = CL.clustered_ovr_macro(y, probs, np.arange(n))
    assert one["macro"]["auc"] == pytest.approx(ref["macro"]["auc"])
    assert one["macro"]["var"] == pytest.approx(ref["macro"]["var"], rel=0.05)
    # Every patient's image repeated 4 times: 4x the images, the same information.
    rep = np.repeat(np.arange(n), 4)
    quad = CL.clustered_ovr_macro(y[rep], probs[rep], rep)
    assert quad["macro"]["var"] == pytest.approx(one["macro"]["var"], rel=0.05)
    naive = M.ovr_auc_ci(y[rep], probs[rep])["macro"]["var"]
    assert naive < 0.35 * quad["macro"]["var"]
    d, lo, hi, p = CL.clustered_ovr_paired_test(y, probs, probs, np.arange(n))
    assert abs(d) < 1e-12 and p == pytest.approx(1.0)


def test_paired_bootstrap_difference_agrees_with_the_wald_interval():
    y, s1, s2, pat, _ = _clustered_data(np.random.default_rng(5), d=1.5)
    s2 = s2 - 0.8 * y  # the second score is worse
    diff, lo, hi, _p = CL.clustered_paired_test(y, s1, s2, pat)
    boot = CL.paired_bootstrap_difference(y, s1, s2, pat, n_boot=2000, seed=1)
    assert boot["difference"] == pytest.approx(diff)
    assert boot["ci_low"] == pytest.approx(lo, abs=0.03) and boot["ci_high"] == pytest.approx(hi, abs=0.03)


def test_patient_weighted_auc_counts_each_patient_once():
    y = np.array([1, 0, 1, 0, 1])
    s = np.array([0.9, 0.3, 0.2, 0.4, 0.6])
    pat = np.arange(5)
    base = CL.patient_weighted_auc(y, s, pat)
    assert base == pytest.approx(roc_auc_score(y, s))
    # Patient 2 (a positive scored below every negative) gets 20 identical images: the image
    # AUROC collapses, the patient-weighted one does not move.
    rep = np.r_[np.arange(5), np.full(19, 2)]
    assert roc_auc_score(y[rep], s[rep]) < base - 0.2
    assert CL.patient_weighted_auc(y[rep], s[rep], pat[rep]) == pytest.approx(base)
    assert math.isnan(CL.patient_weighted_auc(np.ones(3), np.arange(3.0), np.arange(3)))


def test_clustered_proportion_is_wilson_without_clusters_and_widens_with_them():
    hits = np.array([1, 1, 0, 1, 0, 0, 1, 1, 1, 0], bool)
    one = CL.clustered_proportion(hits, np.arange(10))
    assert (one["value"], one["ci_low"], one["ci_high"]) == pytest.approx(M.wilson_ci(6, 10))
    assert one["design_effect"] == 1.0
    # Each patient's result repeated 5 times: 50 images carry the information of 10.
    rep = np.repeat(np.arange(10), 5)
    five = CL.clustered_proportion(hits[rep], rep)
    assert five["design_effect"] == pytest.approx(5.0)
    assert (five["ci_low"], five["ci_high"]) == pytest.approx(M.wilson_ci(6, 10)[1:])
    assert M.wilson_ci(30, 50)[2] - M.wilson_ci(30, 50)[1] < five["ci_high"] - five["ci_low"]
    allhit = CL.clustered_proportion(np.ones(6, bool), np.repeat([0, 1], 3))
    assert allhit["value"] == 1.0 and allhit["design_effect"] == 1.0 and allhit["ci_high"] == 1.0
    assert math.isnan(CL.clustered_proportion(np.zeros(0, bool), np.zeros(0))["value"])


def test_predictive_values_by_bayes_and_at_a_prevalence():
    # sens 0.9, spec 0.8 at 10% prevalence: PPV = 0.09 / (0.09 + 0.18) = 1/3, NPV = 0.72/0.73.
    ppv, npv = CL.predictive_values(0.9, 0.8, 0.1)
    assert ppv == pytest.approx(1 / 3) and npv == pytest.approx(0.72 / 0.73)
    with pytest.raises(ValueError, match="prevalence"):
        CL.predictive_values(0.9, 0.8, 0.0)
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    s = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1, 0.4, 0.5])
    pat = np.arange(8)
    sample = CL.binary_metrics_at(y, s, 0.5, pat)
    image = M.binary_metrics_at(y, s, 0.5)
    for key in ("sensitivity", "specificity", "ppv", "npv", "accuracy"):
        assert (sample[key]["ci_low"], sample[key]["ci_high"]) == pytest.approx(
            (image[key]["ci_low"], image[key]["ci_high"])
        )
    assert sample["ppv"]["prevalence"] == 0.5 and sample["ppv"]["prevalence_source"] == "sample"
    # Bayes at the sample's prevalence reproduces the sample's PPV/NPV.
    assert CL.predictive_values(0.75, 0.75, 0.5) == pytest.approx((0.75, 0.75))
    low = CL.binary_metrics_at(y, s, 0.5, pat, prevalence=0.1)
    assert low["ppv"]["value"] == pytest.approx(0.075 / (0.075 + 0.225))
    assert low["ppv"]["prevalence"] == 0.1 and low["prevalence_source"] == "evaluate.prevalence"
    assert low["ppv"]["ci_low"] < low["ppv"]["value"] < low["ppv"]["ci_high"]
    assert low["ppv_sample"]["value"] == pytest.approx(0.75)


def test_subgroups_flagged_by_patients_as_well_as_images():
    rng = np.random.default_rng(7)
    # Group "few": 69 images of 5 patients (enough images, too few patients); "many": 120 of 60.
    pat = np.r_[rng.integers(0, 5, 69), 100 + np.repeat(np.arange(60), 2)]
    yp = rng.integers(0, 2, 200)
    yp[[0, 1, 100, 101]] = [0, 1, 0, 1]
    y = yp[pat]
    p1 = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, len(y)), 0, 1)
    probs = np.c_[1 - p1, p1]
    group = np.array(["few"] * 69 + ["many"] * 120, dtype=object)
    rows = CL.subgroup_table(y, probs, {"site": group}, pat, ["normal", "abnormal"], 1, min_size=30, min_patients=10)
    by = {r["group"]: r for r in rows}
    assert by["few"]["n"] == 69 and by["few"]["n_patients"] == 5
    assert by["few"]["flagged"] and any("fewer than 10 patients (5)" in f for f in by["few"]["flags"])
    assert not by["many"]["flagged"] and by["many"]["n_patients"] == 60
    assert by["many"]["ci_low"] < by["many"]["auroc"] < by["many"]["ci_high"]


def test_paired_comparison_is_the_envelope_and_holds_its_level_with_a_dominant_patient():
    """One patient with 66 of 116 images: the Wald interval alone rejects a true null too
    often; the envelope with the paired patient bootstrap does not exceed the nominal level
    by much (and is never narrower than either interval)."""
    rng = np.random.default_rng(11)
    sizes = np.array([66] + [2] * 25)
    pat = np.repeat(np.arange(len(sizes)), sizes)
    reps = 150
    reject = reject_wald = 0
    for r in range(reps):
        y = rng.integers(0, 2, len(pat))
        z = rng.normal(size=(2, len(sizes)))
        u2 = 0.5 * z[0] + math.sqrt(0.75) * z[1]
        s1 = y + z[0][pat] + 0.7 * rng.normal(size=len(pat))
        s2 = y + u2[pat] + 0.7 * rng.normal(size=len(pat))
        c = CL.paired_comparison(y, s1, s2, pat, n_boot=300, seed=r)
        w, b = c["clustered_delong"], c["bootstrap"]
        assert c["ci_low"] == min(w["ci_low"], b["ci_low"]) and c["ci_high"] == max(w["ci_high"], b["ci_high"])
        assert c["p_value"] == max(w["p_value"], b["p_value"])
        reject += not (c["ci_low"] <= 0 <= c["ci_high"])
        reject_wald += not (w["ci_low"] <= 0 <= w["ci_high"])
    assert reject / reps <= 0.09
    assert reject_wald / reps > 0.09  # what the envelope protects against


def test_single_auroc_envelope_covers_with_a_dominant_patient():
    """Labels per patient, one patient with 66 of 116 images: the clustered DeLong interval
    alone under-covers; its envelope with the patient bootstrap (the headline interval of
    metrics.json) keeps coverage near nominal."""
    rng = np.random.default_rng(5)
    sizes = np.array([66] + [2] * 25)
    pat = np.repeat(np.arange(len(sizes)), sizes)
    true = stats.norm.cdf(1 / math.sqrt(2 * 1.49))
    covered = covered_wald = reps = 0
    while reps < 120:
        yp = rng.integers(0, 2, len(sizes))
        y = yp[pat]
        if y.all() or not y.any():
            continue
        reps += 1
        s = y + rng.normal(size=len(sizes))[pat] + 0.7 * rng.normal(size=len(pat))
        _auc, lo, hi, _ = CL.clustered_auc_ci(y, s, pat)
        boot = M.bootstrap_auc_ci(y, s, pat, n_boot=300, seed=reps)
        covered_wald += lo <= true <= hi
        covered += min(lo, boot["ci_low"]) <= true <= max(hi, boot["ci_high"])
    assert covered / reps >= 0.85
    assert covered_wald / reps < 0.80  # what the envelope protects against


def test_wilson_on_a_fractional_effective_sample_size_is_continuous_with_scipy():
    # n_eff is rarely an integer; the closed formula must agree with scipy's Wilson at integers.
    for k, n in ((6, 10), (0, 7), (13, 13), (3, 40)):
        _, lo, hi = CL._wilson_real(k / n, n + 1e-9, 0.05)
        ref = M.wilson_ci(k, n)
        assert (lo, hi) == pytest.approx(ref[1:], abs=1e-7)
    # Between integers it lies between the neighbouring intervals' widths.
    w = [CL._wilson_real(0.5, n, 0.05) for n in (10.0, 10.5, 11.0)]
    widths = [h - lo for _, lo, h in w]
    assert widths[0] > widths[1] > widths[2]
