"""Patient-level (clustered) statistics: several images per patient are not independent.

A chest-radiograph split holds several images of many patients; their scores and labels are
correlated, so image-level DeLong / Wilson intervals are too narrow and paired tests reject a true
null far too often. Here the patient is the unit of uncertainty:

- AUROC, its variance and the covariance of several AUROCs on the same images: Obuchowski's
  clustered DeLong (Obuchowski 1997, "Nonparametric analysis of clustered ROC curve data",
  Biometrics 53:567-578, eqs. 3-5; the paired two-reader form for differences). With one image
  per patient it equals DeLong's estimator exactly.
- Macro one-vs-rest AUROC (more than 2 classes): the same idea on the Hajek projections of the
  one-vs-rest AUROCs (:func:`pipeline.metrics.delong_covariance_general`), summed per patient.
- Proportions (sensitivity, specificity, PPV, NPV, accuracy): ratio estimator with a
  cluster-robust variance, turned into a design effect that shrinks the sample size fed to
  Wilson's interval (Korn & Graubard 1998's effective-sample-size Wilson).
- A paired patient bootstrap of an AUROC difference; verdicts use the envelope of the two
  patient-level intervals (:func:`paired_comparison`), which stays valid when one patient holds a
  large share of the images.

Pure functions: numpy arrays in, numbers and plain dicts out; NaN where undefined.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from pipeline.metrics import (
    UNKNOWN,
    _as_binary,
    _factorize,
    _ovr_tasks,
    _placements,
    _two_sided_p,
    _wald,
    _WeightedAuc,
    _z,
    wilson_ci,
)


def _codes(clusters: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    clusters = np.asarray(clusters)
    if len(clusters) != n:
        raise ValueError(f"clusters has {len(clusters)} entries, labels {n}")
    codes, uniq = _factorize(clusters)
    return codes, len(uniq)


# --------------------------------------------------------------------------------------------
# Binary AUROC: Obuchowski's clustered DeLong
# --------------------------------------------------------------------------------------------


def obuchowski(y: np.ndarray, scores: np.ndarray, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs of ``k`` scores on the same images and their clustered covariance matrix.

    Per image, the DeLong placement value: V10 (a positive: fraction of all negatives scored
    lower, ties 1/2) and V01 (a negative: fraction of all positives scored higher). Per patient
    i with m_i positive and n_i negative images, V10_i and V01_i are the sums over its images.
    With M positive and N negative images in all, I10 / I01 patients with at least one
    positive / negative image and I patients::

        S10 = I10 / ((I10 - 1) M) * sum_i (V10_i - m_i A)(V10_i - m_i A)'
        S01 = I01 / ((I01 - 1) N) * sum_i (V01_i - n_i A)(V01_i - n_i A)'
        S11 = I / (I - 1)        * sum_i (V10_i - m_i A)(V01_i - n_i A)'
        cov = S10 / M + S01 / N + (S11 + S11') / (M N)

    Returns ``(aucs (k,), cov (k, k))``; cov is NaN when I10 < 2 or I01 < 2.
    """
    y = _as_binary(y)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if s.shape[1] != len(y):
        raise ValueError(f"scores have {s.shape[1]} cases, labels {len(y)}")
    codes, n_cl = _codes(clusters, len(y))
    k = s.shape[0]
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        return np.full(k, np.nan), np.full((k, k), np.nan)
    v = np.vstack([_placements(y, row)[1] for row in s])  # (k, N)
    aucs = v[:, y].mean(axis=1)
    pos_w = y.astype(np.float64)
    v10 = np.zeros((k, n_cl))
    v01 = np.zeros((k, n_cl))
    for j in range(k):
        v10[j] = np.bincount(codes, weights=v[j] * pos_w, minlength=n_cl)
        v01[j] = np.bincount(codes, weights=v[j] * (1.0 - pos_w), minlength=n_cl)
    m_i = np.bincount(codes, weights=pos_w, minlength=n_cl)
    n_i = np.bincount(codes, weights=1.0 - pos_w, minlength=n_cl)
    i10, i01 = int((m_i > 0).sum()), int((n_i > 0).sum())
    if i10 < 2 or i01 < 2:
        return aucs, np.full((k, k), np.nan)
    d10 = v10 - m_i[None, :] * aucs[:, None]  # (k, I): zero for patients without positives
    d01 = v01 - n_i[None, :] * aucs[:, None]
    s10 = i10 / ((i10 - 1) * m) * (d10 @ d10.T)
    s01 = i01 / ((i01 - 1) * n) * (d01 @ d01.T)
    s11 = n_cl / (n_cl - 1) * (d10 @ d01.T)
    cov = s10 / m + s01 / n + (s11 + s11.T) / (m * n)
    return aucs, cov


def clustered_auc_ci(
    y: np.ndarray, score: np.ndarray, clusters: np.ndarray, alpha: float = 0.05
) -> tuple[float, float, float, float]:
    """AUROC with its patient-level (Obuchowski) Wald interval: ``(auc, lo, hi, var)``."""
    aucs, cov = obuchowski(y, score, clusters)
    auc, var = float(aucs[0]), float(cov[0, 0])
    lo, hi = _wald(auc, var, _z(alpha))
    return auc, lo, hi, var


def clustered_paired_test(
    y: np.ndarray, s1: np.ndarray, s2: np.ndarray, clusters: np.ndarray, alpha: float = 0.05
) -> tuple[float, float, float, float]:
    """Paired patient-level comparison of two scores on the same images (Obuchowski's
    two-reader form): ``(auc1 - auc2, ci_low, ci_high, p)``, var = var1 + var2 - 2 cov12."""
    aucs, cov = obuchowski(y, np.vstack([s1, s2]), clusters)
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    lo, hi = _wald(diff, var, _z(alpha), clip=False)
    return diff, lo, hi, _two_sided_p(diff, var)


# --------------------------------------------------------------------------------------------
# More than two classes: clustered Hajek projections of the one-vs-rest AUROCs
# --------------------------------------------------------------------------------------------


def clustered_covariance_general(
    tasks: Sequence[tuple[np.ndarray, np.ndarray]], clusters: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs and their patient-level covariance for binary tasks with different labels.

    Each AUROC is asymptotically a sum of per-image terms phi (the Hajek projection, as in
    :func:`pipeline.metrics.delong_covariance_general`); images of one patient are dependent, so
    the terms are summed per patient and the covariance is I / (I - 1) * sum_i Phi_i Phi_i'
    (the sums have mean zero). NaN for a task with fewer than 2 patients holding a case or a
    non-case.
    """
    codes, n_cl = _codes(clusters, len(tasks[0][0]))
    phis, aucs, ok = [], [], []
    for y, s in tasks:
        y = _as_binary(y)
        auc, v = _placements(y, np.asarray(s, dtype=np.float64))
        m, n = int(y.sum()), int((~y).sum())
        denom = np.where(y, max(m, 1), max(n, 1))
        phi = np.nan_to_num((v - auc) / denom)
        phis.append(np.bincount(codes, weights=phi, minlength=n_cl))
        aucs.append(auc)
        pos_cl = len(np.unique(codes[y]))
        neg_cl = len(np.unique(codes[~y]))
        ok.append(pos_cl >= 2 and neg_cl >= 2)
    big = np.vstack(phis)  # (T, I)
    cov = n_cl / max(n_cl - 1, 1) * (big @ big.T)
    bad = ~np.asarray(ok)
    cov[bad, :] = np.nan
    cov[:, bad] = np.nan
    return np.asarray(aucs), cov


def clustered_ovr_macro(
    y_int: np.ndarray, probs: np.ndarray, clusters: np.ndarray, alpha: float = 0.05
) -> dict[str, Any]:
    """Per-class one-vs-rest AUROCs and their macro average, patient-level intervals.

    ``{"per_class": [{"auc", "ci_low", "ci_high", "var"}], "macro": {"auc", "ci_low", "ci_high",
    "var"}}``; the macro is NaN unless every class has cases and non-cases.
    """
    z = _z(alpha)
    y_int = np.asarray(y_int)
    k = probs.shape[1]
    aucs, cov = clustered_covariance_general(_ovr_tasks(y_int, probs), clusters)
    per = []
    for j in range(k):
        lo, hi = _wald(aucs[j], cov[j, j], z)
        per.append({"auc": float(aucs[j]), "ci_low": lo, "ci_high": hi, "var": float(cov[j, j])})
    if any(not 0 < (y_int == j).sum() < len(y_int) for j in range(k)):
        nan = float("nan")
        return {"per_class": per, "macro": {"auc": nan, "ci_low": nan, "ci_high": nan, "var": nan}}
    w = np.full(k, 1.0 / k)
    auc, var = float(w @ aucs), float(w @ cov @ w)
    lo, hi = _wald(auc, var, z)
    return {"per_class": per, "macro": {"auc": auc, "ci_low": lo, "ci_high": hi, "var": var}}


def clustered_ovr_paired_test(
    y_int: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    clusters: np.ndarray,
    alpha: float = 0.05,
) -> tuple[float, float, float, float]:
    """Paired patient-level comparison of two models' macro one-vs-rest AUROCs."""
    k = probs_a.shape[1]
    tasks = _ovr_tasks(y_int, probs_a) + _ovr_tasks(y_int, probs_b)
    aucs, cov = clustered_covariance_general(tasks, clusters)
    w = np.concatenate([np.full(k, 1.0 / k), np.full(k, -1.0 / k)])
    diff, var = float(w @ aucs), float(w @ cov @ w)
    lo, hi = _wald(diff, var, _z(alpha), clip=False)
    return diff, lo, hi, _two_sided_p(diff, var)


def headline_auc(
    y_int: np.ndarray,
    probs: np.ndarray,
    positive_index: int,
    clusters: np.ndarray,
    alpha: float = 0.05,
) -> dict[str, float]:
    """The headline AUROC with its patient-level interval: binary (positive class) for 2
    classes, macro one-vs-rest otherwise. ``{"auc", "ci_low", "ci_high", "var"}``."""
    y_int = np.asarray(y_int)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[1] == 2:
        auc, lo, hi, var = clustered_auc_ci(y_int == positive_index, probs[:, positive_index], clusters, alpha)
        return {"auc": auc, "ci_low": lo, "ci_high": hi, "var": var}
    return clustered_ovr_macro(y_int, probs, clusters, alpha)["macro"]


def headline_paired_test(
    y_int: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    positive_index: int,
    clusters: np.ndarray,
    alpha: float = 0.05,
) -> tuple[float, float, float, float]:
    """Paired patient-level difference of two headline AUROCs: ``(diff, lo, hi, p)``."""
    if probs_a.shape[1] == 2:
        return clustered_paired_test(
            np.asarray(y_int) == positive_index,
            probs_a[:, positive_index],
            probs_b[:, positive_index],
            clusters,
            alpha,
        )
    return clustered_ovr_paired_test(y_int, probs_a, probs_b, clusters, alpha)


# --------------------------------------------------------------------------------------------
# Patient-weighted AUROC and the paired patient bootstrap
# --------------------------------------------------------------------------------------------


def patient_weights(clusters: np.ndarray) -> np.ndarray:
    """1 / (images of the patient) for every image: each patient weighs 1 in total."""
    codes, n_cl = _codes(clusters, len(clusters))
    return 1.0 / np.bincount(codes, minlength=n_cl)[codes]


def patient_weighted_auc(y: np.ndarray, score: np.ndarray, clusters: np.ndarray) -> float:
    """AUROC with each patient's images weighted 1/n (scikit-learn ``sample_weight``): a
    patient with many images counts as much as one with a single image. NaN with one class."""
    y = _as_binary(y)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, score, sample_weight=patient_weights(clusters)))


def patient_weighted_headline(y_int: np.ndarray, probs: np.ndarray, positive_index: int, clusters: np.ndarray) -> float:
    """Patient-weighted headline AUROC (binary, or macro one-vs-rest for more classes)."""
    y_int = np.asarray(y_int)
    if probs.shape[1] == 2:
        return patient_weighted_auc(y_int == positive_index, probs[:, positive_index], clusters)
    return float(np.mean([patient_weighted_auc(y_int == k, probs[:, k], clusters) for k in range(probs.shape[1])]))


def paired_bootstrap_difference(
    y: np.ndarray,
    s1: np.ndarray,
    s2: np.ndarray,
    clusters: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Percentile interval of AUROC(s1) - AUROC(s2) over resamples of PATIENTS; both scores see
    the same resampled patients (paired). Resamples with one class are skipped and counted.
    ``{"difference", "ci_low", "ci_high", "p_value", "n_boot", "skipped_single_class",
    "seed"}``."""
    y = _as_binary(y)
    codes, n_cl = _codes(clusters, len(y))
    ev1, ev2 = _WeightedAuc(y, np.asarray(s1, float)), _WeightedAuc(y, np.asarray(s2, float))
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_cl, np.full(n_cl, 1.0 / n_cl), size=n_boot)
    w = counts[:, codes].astype(np.float64)
    d = ev1(w) - ev2(w)
    good = d[np.isfinite(d)]
    ones = np.ones((1, len(y)))
    point = float((ev1(ones) - ev2(ones))[0])
    lo, hi = (
        np.percentile(good, [100 * alpha / 2, 100 * (1 - alpha / 2)]) if len(good) else (float("nan"), float("nan"))
    )
    # Two-sided bootstrap p-value: twice the smaller share of resamples on either side of 0.
    p = min(1.0, 2 * min(float((good <= 0).mean()), float((good >= 0).mean()))) if len(good) else float("nan")
    return {
        "difference": point,
        "ci_low": float(lo),
        "ci_high": float(hi),
        "p_value": p,
        "n_boot": int(len(good)),
        "skipped_single_class": int(n_boot - len(good)),
        "seed": int(seed),
    }


def paired_comparison(
    y: np.ndarray,
    s1: np.ndarray,
    s2: np.ndarray,
    clusters: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """The paired patient-level comparison a verdict may rest on: AUROC(s1) - AUROC(s2).

    Two patient-level intervals: the clustered DeLong (Obuchowski) Wald interval, valid when the
    patients are many and of similar size, and the paired patient bootstrap, which keeps its
    level when one patient holds a large share of the images (there the Wald interval is too
    narrow: ~13% rejections at nominal 5% with one patient holding 57% of 116 images). The
    reported interval is their envelope (lowest lower bound, highest upper bound), which covers
    whenever either does; the p-value is the larger of the two methods' (the bootstrap's is
    twice the smaller tail fraction of resampled differences beyond 0).

    ``{"difference", "ci_low", "ci_high", "p_value", "clustered_delong": {ci_low, ci_high,
    p_value}, "bootstrap": {ci_low, ci_high, p_value, n_boot, skipped_single_class, seed}}``.
    """
    diff, lo, hi, p = clustered_paired_test(y, s1, s2, clusters, alpha)
    boot = paired_bootstrap_difference(y, s1, s2, clusters, n_boot, seed, alpha)
    lows = [v for v in (lo, boot["ci_low"]) if np.isfinite(v)]
    highs = [v for v in (hi, boot["ci_high"]) if np.isfinite(v)]
    ps = [v for v in (p, boot["p_value"]) if np.isfinite(v)]
    nan = float("nan")
    both = len(lows) == 2 and len(highs) == 2
    return {
        "difference": diff,
        "ci_low": min(lows) if both else nan,
        "ci_high": max(highs) if both else nan,
        "p_value": max(ps) if len(ps) == 2 else nan,
        "clustered_delong": {"ci_low": lo, "ci_high": hi, "p_value": p},
        "bootstrap": {
            **{k: boot[k] for k in ("ci_low", "ci_high", "p_value", "n_boot", "skipped_single_class", "seed")},
            "unit": "patient",
        },
    }


# --------------------------------------------------------------------------------------------
# Proportions: design-effect-adjusted Wilson
# --------------------------------------------------------------------------------------------


def clustered_proportion(hits: np.ndarray, clusters: np.ndarray, alpha: float = 0.05) -> dict[str, Any]:
    """A proportion over images (e.g. sensitivity over the positive images) with a
    patient-level Wilson interval.

    p = k / n. Its cluster-robust (ratio-estimator) variance is
    sum_i (k_i - p n_i)^2 / n^2 over patients i; the design effect is that over p(1-p)/n,
    floored at 1 (clustering never makes an interval narrower than independent images would),
    and Wilson's interval is computed with the effective sample size n / deff (Korn & Graubard
    1998). With one image per patient deff = 1: the plain Wilson interval. When p is 0 or 1 the
    variance is 0 and deff is taken as 1.

    ``{"value", "ci_low", "ci_high", "k", "n", "n_patients", "design_effect", "n_effective"}``.
    """
    hits = np.asarray(hits, dtype=bool)
    codes, n_cl = _codes(clusters, len(hits))
    n, k = len(hits), int(hits.sum())
    out: dict[str, Any] = {"k": k, "n": n, "n_patients": n_cl}
    if n == 0:
        nan = float("nan")
        return {"value": nan, "ci_low": nan, "ci_high": nan, **out, "design_effect": nan, "n_effective": 0.0}
    p = k / n
    k_i = np.bincount(codes, weights=hits.astype(np.float64), minlength=n_cl)
    n_i = np.bincount(codes, minlength=n_cl).astype(np.float64)
    var_cluster = float(((k_i - p * n_i) ** 2).sum()) / n**2
    var_binom = p * (1 - p) / n
    deff = max(1.0, var_cluster / var_binom) if var_binom > 0 else 1.0
    n_eff = n / deff
    _, lo, hi = _wilson_real(p, n_eff, alpha)
    return {"value": p, "ci_low": lo, "ci_high": hi, **out, "design_effect": deff, "n_effective": n_eff}


def _wilson_real(p: float, n: float, alpha: float) -> tuple[float, float, float]:
    """Wilson score interval for a proportion p on a (possibly fractional) sample size n.

    Same formula as :func:`pipeline.metrics.wilson_ci` (which scipy computes for integer n)."""
    if n == int(n):
        k = int(round(p * n))
        if abs(k - p * n) < 1e-9:
            return wilson_ci(k, int(n), alpha)
    z = _z(alpha)
    den = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / den
    return p, float(max(0.0, centre - half)), float(min(1.0, centre + half))


def predictive_values(sens: float, spec: float, prevalence: float) -> tuple[float, float]:
    """PPV and NPV at a prevalence, by Bayes' theorem from sensitivity and specificity."""
    if not 0 < prevalence < 1:
        raise ValueError(f"prevalence must be in (0, 1), got {prevalence}")
    tp, fp = sens * prevalence, (1 - spec) * (1 - prevalence)
    tn, fn = spec * (1 - prevalence), (1 - sens) * prevalence
    ppv = tp / (tp + fp) if tp + fp > 0 else float("nan")
    npv = tn / (tn + fn) if tn + fn > 0 else float("nan")
    return float(ppv), float(npv)


def predictive_values_at(sens: dict[str, Any], spec: dict[str, Any], prevalence: float) -> dict[str, dict[str, Any]]:
    """PPV / NPV blocks at an assumed prevalence from sensitivity / specificity blocks.

    PPV and NPV increase with both sensitivity and specificity, so the interval runs from the
    value at both lower bounds to the value at both upper bounds. With independent sensitivity
    and specificity intervals each end then holds with at least 0.975^2 = 95% one-sided
    confidence, so the interval covers with at least 90% (conservative at each end, not an
    exact 95% interval). The intervals of ``sens``/``spec`` are the patient-level ones.
    """

    def block(i: int) -> dict[str, Any]:
        v = predictive_values(sens["value"], spec["value"], prevalence)[i]
        lo = predictive_values(sens["ci_low"], spec["ci_low"], prevalence)[i]
        hi = predictive_values(sens["ci_high"], spec["ci_high"], prevalence)[i]
        return {
            "value": v,
            "ci_low": lo,
            "ci_high": hi,
            "prevalence": float(prevalence),
            "method": "Bayes from sensitivity and specificity",
        }

    if not all(np.isfinite([sens["value"], spec["value"]])):
        nan = float("nan")
        empty = {
            "value": nan,
            "ci_low": nan,
            "ci_high": nan,
            "prevalence": float(prevalence),
            "method": "Bayes from sensitivity and specificity",
        }
        return {"ppv": empty, "npv": dict(empty)}
    return {"ppv": block(0), "npv": block(1)}


def binary_metrics_at(
    y: np.ndarray,
    s: np.ndarray,
    threshold: float,
    clusters: np.ndarray,
    alpha: float = 0.05,
    prevalence: float | None = None,
) -> dict[str, Any]:
    """Confusion matrix and threshold metrics at a fixed threshold, patient-level intervals.

    Sensitivity, specificity, accuracy and the sample's PPV / NPV are proportions over images
    with :func:`clustered_proportion` intervals. Every PPV / NPV block names the prevalence it
    assumes: the sample's (``prevalence`` None: positive images / images) or the given one, for
    which PPV / NPV are recomputed by Bayes from sensitivity and specificity
    (:func:`predictive_values_at`); the sample's values then stay as ``ppv_sample`` /
    ``npv_sample``.
    """
    y = _as_binary(y)
    clusters = np.asarray(clusters)
    pred = np.asarray(s, dtype=np.float64) >= threshold
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    fn, tn = int((~pred & y).sum()), int((~pred & ~y).sum())

    def prop(hit: np.ndarray, sel: np.ndarray) -> dict[str, Any]:
        return clustered_proportion(hit[sel], clusters[sel], alpha)

    sens, spec = prop(pred, y), prop(~pred, ~y)
    sample_prev = float(y.mean()) if len(y) else float("nan")
    ppv = {**prop(y, pred), "prevalence": sample_prev, "prevalence_source": "sample"}
    npv = {**prop(~y, ~pred), "prevalence": sample_prev, "prevalence_source": "sample"}
    out: dict[str, Any] = {
        "threshold": float(threshold),
        "n": int(len(y)),
        "n_patients": int(len(np.unique(clusters.astype(str)))),
        "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
        "sensitivity": sens,
        "specificity": spec,
        "ppv": ppv,
        "npv": npv,
        "accuracy": prop(pred == y, np.ones(len(y), dtype=bool)),
        "balanced_accuracy": float((sens["value"] + spec["value"]) / 2),
        "f1": float(2 * tp / (2 * tp + fp + fn)) if 2 * tp + fp + fn else float("nan"),
        "prevalence": sample_prev,
        "prevalence_source": "sample",
    }
    if prevalence is not None:
        at = predictive_values_at(sens, spec, prevalence)
        out["ppv_sample"], out["npv_sample"] = ppv, npv
        out["ppv"] = {**at["ppv"], "prevalence_source": "evaluate.prevalence"}
        out["npv"] = {**at["npv"], "prevalence_source": "evaluate.prevalence"}
        out["prevalence"], out["prevalence_source"] = float(prevalence), "evaluate.prevalence"
    return out


# --------------------------------------------------------------------------------------------
# Subgroups
# --------------------------------------------------------------------------------------------


def subgroup_table(
    y_int: np.ndarray,
    probs: np.ndarray,
    attributes: Mapping[str, np.ndarray],
    patients: np.ndarray,
    classes: Sequence[str],
    positive_index: int | None,
    min_size: int,
    min_patients: int,
    alpha: float = 0.05,
) -> list[dict[str, Any]]:
    """Headline AUROC with its patient-level CI in every subgroup of every attribute (sex, age
    band, view).

    Small or single-class subgroups are FLAGGED with the reason, never dropped: a reader must see
    that a group exists and why it has no trustworthy number. Small means fewer than
    ``min_size`` images OR fewer than ``min_patients`` patients (69 images of 5 patients are 5
    observations, not 69). AUROC is NaN when a class is missing; the CI is NaN when fewer than
    2 patients hold a case or a non-case.
    """
    y_int = np.asarray(y_int)
    probs = np.asarray(probs, dtype=np.float64)
    patients = np.asarray(patients)
    k = probs.shape[1]
    pos = positive_index if positive_index is not None else k - 1
    rows = []
    for attr, values in attributes.items():
        values = np.asarray(values, dtype=object)
        groups = sorted({str(v) for v in values}, key=lambda g: (g == UNKNOWN, g))
        for g in groups:
            sel = values.astype(str) == g
            yg, pg = y_int[sel], probs[sel]
            n = int(sel.sum())
            flags = []
            n_pat = int(len(np.unique(patients[sel].astype(str))))
            if n < min_size:
                flags.append(f"fewer than {min_size} images (n={n})")
            if n_pat < min_patients:
                flags.append(f"fewer than {min_patients} patients ({n_pat})")
            present = set(np.unique(yg).tolist())
            n_pos: int | None
            if k == 2:
                n_pos = int((yg == pos).sum())
                if n_pos == 0 or n_pos == n:
                    only = classes[pos] if n_pos == n else classes[1 - pos]
                    flags.append(f"single class (only {only})")
            else:
                n_pos = int((yg == positive_index).sum()) if positive_index is not None else None
                missing = [classes[j] for j in range(k) if j not in present]
                if missing:
                    flags.append(f"classes missing: {', '.join(missing)}")
            res = headline_auc(yg, pg, pos, patients[sel], alpha)
            if np.isfinite(res["auc"]) and not np.isfinite(res["var"]):
                flags.append("fewer than 2 patients with a class: no patient-level interval")
            rows.append(
                {
                    "attribute": attr,
                    "group": g,
                    "n": n,
                    "n_patients": n_pat,
                    "n_positive": n_pos,
                    "auroc": res["auc"],
                    "ci_low": res["ci_low"],
                    "ci_high": res["ci_high"],
                    "auroc_patient_weighted": patient_weighted_headline(yg, pg, pos, patients[sel])
                    if np.isfinite(res["auc"])
                    else float("nan"),
                    "flagged": bool(flags),
                    "flags": flags,
                }
            )
    return rows
