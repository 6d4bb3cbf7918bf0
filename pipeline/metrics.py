"""Clinical statistics at the image level: AUROC with DeLong and patient-bootstrap intervals,
paired DeLong tests, Wilson intervals at an operating point chosen on validation, calibration,
age bands. The patient-level (clustered) intervals and tests built on these, and the subgroup
table, are in :mod:`pipeline.clustered`.

Pure functions: numpy arrays in, numbers and plain dicts out (JSON-ready, NaN where a quantity is
undefined; :func:`pipeline.common.write_json` turns NaN into ``null``). Point estimates come from
scikit-learn and scipy where they exist; the DeLong variance and the weighted (bootstrap) AUROC
are written here because neither library offers them.

Conventions: ``y`` is 0/1 (1 = positive class) for binary functions, or integer class indices
for the one-vs-rest ones; a case is predicted positive when ``score >= threshold``; ``alpha`` is
the two-sided error level (0.05 → 95% intervals).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from scipy import stats
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

UNKNOWN = "unknown"
YOUDEN_TIE_TOL = 1e-9  # Youden J values closer than this are ties


# --------------------------------------------------------------------------------------------
# DeLong (Sun & Xu 2014, "Fast implementation of DeLong's algorithm for comparing the areas
# under correlated receiver operating characteristic curves", IEEE SPL 21(11):1389-1393)
# --------------------------------------------------------------------------------------------


def _as_binary(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    uniq = np.unique(y)
    if not np.all(np.isin(uniq, (0, 1))):
        raise ValueError(f"binary labels must be 0/1 (or bool), got values {uniq[:10].tolist()}")
    return y.astype(bool)


def _z(alpha: float) -> float:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return float(stats.norm.ppf(1 - alpha / 2))


def fast_delong(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs of ``k`` scores on the same cases and their DeLong covariance matrix.

    Sun & Xu's midrank formulation: O(k N log N) instead of DeLong's O(k m n) comparisons.
    ``scores`` is ``(k, N)`` or ``(N,)``. Returns ``(aucs (k,), cov (k, k))``; the covariance is
    NaN when there are fewer than 2 positives or 2 negatives (the structural-component variances
    need two of each).
    """
    y = _as_binary(y)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if s.shape[1] != len(y):
        raise ValueError(f"scores have {s.shape[1]} cases, labels {len(y)}")
    m, n = int(y.sum()), int((~y).sum())
    k = s.shape[0]
    if m == 0 or n == 0:
        return np.full(k, np.nan), np.full((k, k), np.nan)
    x_pos, x_neg = s[:, y], s[:, ~y]
    tx = stats.rankdata(x_pos, axis=1)  # midranks among positives
    ty = stats.rankdata(x_neg, axis=1)  # midranks among negatives
    tz = stats.rankdata(np.concatenate([x_pos, x_neg], axis=1), axis=1)  # among all
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    if m < 2 or n < 2:
        return aucs, np.full((k, k), np.nan)
    v10 = (tz[:, :m] - tx) / n  # per positive: fraction of negatives scored lower (ties 1/2)
    v01 = 1.0 - (tz[:, m:] - ty) / m  # per negative: fraction of positives scored higher
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def _wald(value: float, var: float, z: float, clip: bool = True) -> tuple[float, float]:
    if not np.isfinite(var) or not np.isfinite(value):
        return float("nan"), float("nan")
    half = z * np.sqrt(max(var, 0.0))
    lo, hi = value - half, value + half
    if clip:  # an AUROC lives in [0, 1] (pROC clips the same way)
        lo, hi = max(lo, 0.0), min(hi, 1.0)
    return float(lo), float(hi)


def delong_auc_ci(y: np.ndarray, score: np.ndarray, alpha: float = 0.05) -> tuple[float, float, float, float]:
    """AUROC with its DeLong Wald interval: ``(auc, ci_low, ci_high, variance)``.

    The interval is ``auc ± z·sqrt(var)`` clipped to [0, 1]; NaN when a class has < 2 cases.
    """
    aucs, cov = fast_delong(y, score)
    auc, var = float(aucs[0]), float(cov[0, 0])
    lo, hi = _wald(auc, var, _z(alpha))
    return auc, lo, hi, var


def _two_sided_p(diff: float, var: float) -> float:
    if not (np.isfinite(var) and np.isfinite(diff)):
        return float("nan")
    # Identical rankings give var = 0 up to rounding (~1e-20): no evidence of a difference
    # unless the AUROCs differ. Real comparisons have var >> 1e-15 (SE > 3e-8).
    if var <= 1e-15:
        return 1.0 if abs(diff) < 1e-9 else 0.0
    return float(2.0 * stats.norm.sf(abs(diff) / np.sqrt(var)))


def delong_paired_test(
    y: np.ndarray, s1: np.ndarray, s2: np.ndarray, alpha: float = 0.05
) -> tuple[float, float, float, float]:
    """Paired DeLong comparison of two scores on the same cases.

    Returns ``(auc1 - auc2, ci_low, ci_high, p_value)``: the difference's Wald interval and the
    two-sided p-value of z = diff / sqrt(var1 + var2 - 2 cov12).
    """
    aucs, cov = fast_delong(y, np.vstack([s1, s2]))
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    lo, hi = _wald(diff, var, _z(alpha), clip=False)
    return diff, lo, hi, _two_sided_p(diff, var)


def _placements(y: np.ndarray, score: np.ndarray) -> tuple[float, np.ndarray]:
    """AUROC and each case's DeLong placement value (V10 for positives, V01 for negatives)."""
    m, n = int(y.sum()), int((~y).sum())
    v = np.empty(len(y))
    if m == 0 or n == 0:
        return float("nan"), np.full(len(y), np.nan)
    tx = stats.rankdata(score[y])
    ty = stats.rankdata(score[~y])
    tz = stats.rankdata(score)
    v[y] = (tz[y] - tx) / n
    v[~y] = 1.0 - (tz[~y] - ty) / m
    auc = float(v[y].mean())
    return auc, v


def delong_covariance_general(
    tasks: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs and their covariance for binary tasks on the same cases with DIFFERENT labels.

    One-vs-rest AUROCs of a multi-class problem share cases but not their positive/negative
    partition, which Sun & Xu's formula assumes. Each AUROC is (asymptotically) a sum of
    independent per-case terms phi_i = (V_i - auc) / m for positives and / n for negatives
    (the Hajek projection behind DeLong's estimator). Cases are grouped by their membership in
    both tasks' partitions and the covariance is sum over groups of ``n_g * cov_g(phi_t, phi_u)``;
    for two tasks with the same labels this is exactly DeLong's covariance (``fast_delong``), so
    for one task it is DeLong's variance. Groups of a single case contribute nothing.

    ``tasks``: ``[(y_bool (N,), score (N,)), ...]``. Returns ``(aucs (T,), cov (T, T))``.
    """
    ys, phis, aucs, ok = [], [], [], []
    for y, s in tasks:
        y = _as_binary(y)
        s = np.asarray(s, dtype=np.float64)
        auc, v = _placements(y, s)
        m, n = int(y.sum()), int((~y).sum())
        denom = np.where(y, max(m, 1), max(n, 1))
        ys.append(y)
        phis.append((v - auc) / denom)
        aucs.append(auc)
        ok.append(m >= 2 and n >= 2)
    t = len(tasks)
    cov = np.full((t, t), np.nan)
    for a in range(t):
        for b in range(a, t):
            if not (ok[a] and ok[b]):
                continue
            total = 0.0
            for ga in (True, False):
                for gb in (True, False):
                    sel = (ys[a] == ga) & (ys[b] == gb)
                    ng = int(sel.sum())
                    if ng >= 2:
                        total += ng * float(np.cov(phis[a][sel], phis[b][sel])[0, 1])
            cov[a, b] = cov[b, a] = total
    return np.asarray(aucs), cov


def _ovr_tasks(y_int: np.ndarray, probs: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    y_int = np.asarray(y_int)
    probs = np.asarray(probs, dtype=np.float64)
    return [(y_int == k, probs[:, k]) for k in range(probs.shape[1])]


def ovr_auc_ci(y_int: np.ndarray, probs: np.ndarray, alpha: float = 0.05) -> dict[str, Any]:
    """One-vs-rest AUROC per class (DeLong CI each) and their macro average.

    The macro average's variance is ``w' C w`` with C from :func:`delong_covariance_general`
    (w = 1/K). The macro is NaN unless every class has cases and non-cases (a macro average over
    a subset of classes would not be comparable between splits).

    Returns ``{"per_class": [{"auc", "ci_low", "ci_high", "var", "n_positive"}], "macro":
    {"auc", "ci_low", "ci_high", "var"}, "missing_classes": [k, ...]}``.
    """
    z = _z(alpha)
    y_int = np.asarray(y_int)
    k = probs.shape[1]
    aucs, cov = delong_covariance_general(_ovr_tasks(y_int, probs))
    per = []
    for j in range(k):
        lo, hi = _wald(aucs[j], cov[j, j], z)
        per.append(
            {
                "auc": float(aucs[j]),
                "ci_low": lo,
                "ci_high": hi,
                "var": float(cov[j, j]),
                "n_positive": int((y_int == j).sum()),
            }
        )
    missing = [j for j in range(k) if not 0 < (y_int == j).sum() < len(y_int)]
    if missing:
        macro = {"auc": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "var": float("nan")}
    else:
        w = np.full(k, 1.0 / k)
        auc = float(w @ aucs)
        var = float(w @ cov @ w)
        lo, hi = _wald(auc, var, z)
        macro = {"auc": auc, "ci_low": lo, "ci_high": hi, "var": var}
    return {"per_class": per, "macro": macro, "missing_classes": missing}


def ovr_paired_test(
    y_int: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray, alpha: float = 0.05
) -> tuple[float, float, float, float]:
    """Paired comparison of two models' macro one-vs-rest AUROCs on the same cases.

    ``(macro_a - macro_b, ci_low, ci_high, p)``; covariance from :func:`delong_covariance_general`.
    """
    k = probs_a.shape[1]
    aucs, cov = delong_covariance_general(_ovr_tasks(y_int, probs_a) + _ovr_tasks(y_int, probs_b))
    w = np.concatenate([np.full(k, 1.0 / k), np.full(k, -1.0 / k)])
    diff = float(w @ aucs)
    var = float(w @ cov @ w)
    lo, hi = _wald(diff, var, _z(alpha), clip=False)
    return diff, lo, hi, _two_sided_p(diff, var)


# --------------------------------------------------------------------------------------------
# Patient-level bootstrap
# --------------------------------------------------------------------------------------------


class _WeightedAuc:
    """AUROC of one fixed score under many case-weight vectors (bootstrap counts).

    Resampling changes only how often each case counts, so the cases are sorted once and each
    resample costs a few vectorised sums: AUROC = sum over tied-score groups of
    w_pos(g) * (w_neg(below g) + w_neg(g) / 2) / (W_pos * W_neg), the Mann-Whitney statistic
    with weights (equal to sklearn's AUROC for unit weights).
    """

    def __init__(self, y: np.ndarray, score: np.ndarray) -> None:
        order = np.argsort(score, kind="stable")
        s = np.asarray(score, dtype=np.float64)[order]
        self.order = order
        self.y = np.asarray(y, dtype=np.float64)[order]
        self.starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])

    def __call__(self, w: np.ndarray) -> np.ndarray:
        """``w``: (B, N) weights in the original case order → (B,) AUROCs (NaN: one class)."""
        ws = w[:, self.order]
        wp = np.add.reduceat(ws * self.y, self.starts, axis=1)
        wn = np.add.reduceat(ws * (1.0 - self.y), self.starts, axis=1)
        below = np.cumsum(wn, axis=1) - wn
        tot_p, tot_n = wp.sum(axis=1), wn.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = (wp * (below + 0.5 * wn)).sum(axis=1) / (tot_p * tot_n)
        auc[(tot_p <= 0) | (tot_n <= 0)] = np.nan
        return auc


def bootstrap_auc_ci(
    y: np.ndarray,
    score: np.ndarray,
    groups: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Percentile bootstrap interval of the AUROC, resampling GROUPS (patients), not images.

    Images of one patient are correlated; resampling images would pretend they are independent
    and give too narrow an interval. Each resample draws as many patients as there are, with
    replacement, and keeps all their images. Resamples with a single class are skipped and
    counted. ``score`` 1-D with 0/1 ``y``: binary AUROC; ``score`` (N, K) with integer ``y``:
    macro one-vs-rest AUROC (a resample missing any class is skipped).

    Returns ``{"auc", "ci_low", "ci_high", "n_boot_requested", "n_boot", "skipped_single_class",
    "n_groups", "seed", "unit": "patient"}``.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    score = np.asarray(score, dtype=np.float64)
    groups = np.asarray(groups)
    if len(groups) != len(y):
        raise ValueError(f"groups has {len(groups)} entries, labels {len(y)}")
    if score.ndim == 1:
        yb = _as_binary(y)
        evaluators = [_WeightedAuc(yb, score)]
        point = float(roc_auc_score(yb, score)) if 0 < yb.sum() < len(yb) else float("nan")
    else:
        y_int = np.asarray(y)
        evaluators = [_WeightedAuc(y_int == k, score[:, k]) for k in range(score.shape[1])]
        point = ovr_auc_ci(y_int, score, alpha)["macro"]["auc"]
    codes, _ = _factorize(groups)
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    rng = np.random.default_rng(seed)
    # Cases per chunk bounded so a (chunk, N) weight matrix stays ~<= 40 MB.
    chunk = max(1, min(n_boot, 5_000_000 // max(len(codes), 1)))
    values = []
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=b)
        w = counts[:, codes].astype(np.float64)
        per_task = np.vstack([ev(w) for ev in evaluators])
        values.append(per_task.mean(axis=0))  # NaN if any class is missing from the resample
        done += b
    vals = np.concatenate(values)
    good = vals[np.isfinite(vals)]
    skipped = int(n_boot - len(good))
    if len(good):
        lo, hi = np.percentile(good, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    else:
        lo = hi = float("nan")
    return {
        "auc": point,
        "ci_low": float(lo),
        "ci_high": float(hi),
        "n_boot_requested": int(n_boot),
        "n_boot": int(len(good)),
        "skipped_single_class": skipped,
        "n_groups": n_groups,
        "seed": int(seed),
        "unit": "patient",
    }


def _factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, codes = np.unique(np.asarray(values).astype(str), return_inverse=True)
    return codes, uniq


# --------------------------------------------------------------------------------------------
# Operating point and threshold metrics
# --------------------------------------------------------------------------------------------


def wilson_ci(k: int, n: int, alpha: float = 0.05) -> tuple[float, float, float]:
    """Proportion k/n with its Wilson score interval (no continuity correction).

    Wilson keeps its coverage near the nominal level for small n and proportions near 0 or 1,
    where the Wald interval fails (Newcombe 1998). Computed by scipy. ``(nan, nan, nan)`` if n = 0.
    """
    k, n = int(k), int(n)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=1 - alpha, method="wilson")
    return k / n, float(ci.low), float(ci.high)


def choose_threshold(
    y_val: np.ndarray,
    s_val: np.ndarray,
    method: Literal["youden", "sensitivity"] = "youden",
    target_sensitivity: float = 0.9,
) -> float:
    """The operating threshold, from VALIDATION cases only (test/external never see it).

    ``youden``: the score maximising sensitivity + specificity - 1 (the highest such score on
    ties, J values within ``YOUDEN_TIE_TOL`` counting as tied). ``sensitivity``: the highest
    score whose sensitivity reaches ``target_sensitivity``
    (i.e. the first threshold met while lowering it), which gives the best specificity at that
    sensitivity. Candidates are the validation scores; positive means ``score >= threshold``.
    """
    y = _as_binary(y_val)
    s = np.asarray(s_val, dtype=np.float64)
    if y.sum() == 0 or (~y).sum() == 0:
        raise ValueError("the validation split needs both classes to choose an operating point")
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]  # drop the +inf "nobody positive" point
    if method == "youden":
        j = tpr - fpr
        # Ties (up to float rounding: J values are differences of fractions) go to the highest
        # threshold; roc_curve lists thresholds in decreasing order, so that is the first one.
        return float(thr[int(np.flatnonzero(j >= j.max() - YOUDEN_TIE_TOL)[0])])
    if method == "sensitivity":
        if not 0 < target_sensitivity <= 1:
            raise ValueError(f"target_sensitivity must be in (0, 1], got {target_sensitivity}")
        reach = np.flatnonzero(tpr >= target_sensitivity - 1e-12)
        return float(thr[reach[0]])  # tpr reaches 1 at the lowest score, so reach is non-empty
    raise ValueError(f"unknown operating point method {method!r} (youden | sensitivity)")


def _prop_block(k: int, n: int, alpha: float) -> dict[str, Any]:
    v, lo, hi = wilson_ci(k, n, alpha)
    return {"value": v, "ci_low": lo, "ci_high": hi, "k": int(k), "n": int(n)}


def binary_metrics_at(y: np.ndarray, s: np.ndarray, threshold: float, alpha: float = 0.05) -> dict[str, Any]:
    """Confusion matrix and threshold metrics with Wilson 95% intervals at a fixed threshold."""
    y = _as_binary(y)
    pred = np.asarray(s, dtype=np.float64) >= threshold
    tp = int((pred & y).sum())
    fp = int((pred & ~y).sum())
    fn = int((~pred & y).sum())
    tn = int((~pred & ~y).sum())
    sens = _prop_block(tp, tp + fn, alpha)
    spec = _prop_block(tn, tn + fp, alpha)
    bal = (sens["value"] + spec["value"]) / 2  # NaN propagates when a class is absent
    f1_den = 2 * tp + fp + fn
    return {
        "threshold": float(threshold),
        "n": int(len(y)),
        "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
        "sensitivity": sens,
        "specificity": spec,
        "ppv": _prop_block(tp, tp + fp, alpha),
        "npv": _prop_block(tn, tn + fn, alpha),
        "accuracy": _prop_block(tp + tn, len(y), alpha),
        "balanced_accuracy": float(bal),
        "f1": float(2 * tp / f1_den) if f1_den else float("nan"),
    }


# --------------------------------------------------------------------------------------------
# Calibration and curves
# --------------------------------------------------------------------------------------------


def _check_probs(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if not np.all(np.isfinite(p)) or p.min(initial=0.0) < 0 or p.max(initial=0.0) > 1:
        raise ValueError("probabilities must be finite and within [0, 1]")
    return p


def _reliability(conf: np.ndarray, hit: np.ndarray, n_bins: int) -> tuple[float, list[dict]]:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bin i holds [edge_i, edge_{i+1}); the last bin also holds 1.0.
    idx = np.clip(np.digitize(conf, edges[1:-1], right=False), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=conf, minlength=n_bins)
    sum_y = np.bincount(idx, weights=hit.astype(np.float64), minlength=n_bins)
    bins, ece = [], 0.0
    n = max(len(conf), 1)
    for i in range(n_bins):
        c = int(count[i])
        mp = sum_p[i] / c if c else float("nan")
        fy = sum_y[i] / c if c else float("nan")
        if c:
            ece += c / n * abs(mp - fy)
        bins.append(
            {
                "bin": i,
                "lower": float(edges[i]),
                "upper": float(edges[i + 1]),
                "count": c,
                "mean_predicted": float(mp),
                "fraction_positive": float(fy),
            }
        )
    return (float(ece) if len(conf) else float("nan")), bins


def calibration(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> dict[str, Any]:
    """Brier score, expected calibration error and reliability-curve bins of P(positive).

    ECE = sum over ``n_bins`` equal-width bins of [0, 1] of (n_b / N) * |mean predicted
    probability in b - observed fraction of positives in b| (empty bins contribute 0).
    Brier = mean (p - y)^2 (scikit-learn).
    """
    y = _as_binary(y)
    p = _check_probs(p)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    ece, bins = _reliability(p, y, n_bins)
    brier = float(brier_score_loss(y, p)) if len(y) else float("nan")
    return {"kind": "binary", "brier": brier, "ece": ece, "n_bins": int(n_bins), "bins": bins}


def top_label_calibration(y_int: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> dict[str, Any]:
    """Multi-class calibration: ECE of the top-label confidence (Guo et al. 2017) and the
    multi-class Brier score, mean over cases of sum_k (p_k - [y = k])^2."""
    probs = _check_probs(probs)
    y_int = np.asarray(y_int)
    conf = probs.max(axis=1)
    hit = probs.argmax(axis=1) == y_int
    ece, bins = _reliability(conf, hit, n_bins)
    onehot = np.eye(probs.shape[1])[y_int]
    brier = float(((probs - onehot) ** 2).sum(axis=1).mean()) if len(y_int) else float("nan")
    return {"kind": "top_label", "brier": brier, "ece": ece, "n_bins": int(n_bins), "bins": bins}


def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision (scikit-learn); NaN without positives."""
    y = _as_binary(y)
    return float(average_precision_score(y, s)) if y.any() else float("nan")


def roc_points(y: np.ndarray, s: np.ndarray) -> dict[str, list[float]]:
    """ROC curve vertices (scikit-learn); the first threshold is +inf (nobody positive)."""
    y = _as_binary(y)
    if y.all() or not y.any():
        return {"fpr": [], "tpr": [], "threshold": []}
    fpr, tpr, thr = roc_curve(y, s)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "threshold": thr.tolist()}


def pr_points(y: np.ndarray, s: np.ndarray) -> dict[str, list[float]]:
    """Precision-recall curve (scikit-learn), recall ascending."""
    y = _as_binary(y)
    if not y.any():
        return {"recall": [], "precision": []}
    precision, recall, _ = precision_recall_curve(y, s)
    return {"recall": recall[::-1].tolist(), "precision": precision[::-1].tolist()}


# --------------------------------------------------------------------------------------------
# Subgroups
# --------------------------------------------------------------------------------------------


def _fmt_edge(x: float) -> str:
    return f"{x:g}"


def age_band_labels(age: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Band label of each age: ``"[lo, hi)"``, the last band closed ``"[lo, hi]"``; missing or
    outside the edges → ``"unknown"``."""
    age = np.asarray(age, dtype=np.float64)
    edges = list(edges)
    out = np.full(len(age), UNKNOWN, dtype=object)
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        last = i == len(edges) - 2
        sel = (age >= lo) & ((age <= hi) if last else (age < hi))
        out[sel] = f"[{_fmt_edge(lo)}, {_fmt_edge(hi)}{']' if last else ')'}"
    return out


def headline_auc_ci(y_int: np.ndarray, probs: np.ndarray, positive_index: int, alpha: float = 0.05) -> dict[str, float]:
    """The headline AUROC: binary (positive class) for 2 classes, macro one-vs-rest otherwise.

    ``{"auc", "ci_low", "ci_high", "var"}``.
    """
    y_int = np.asarray(y_int)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[1] == 2:
        auc, lo, hi, var = delong_auc_ci(y_int == positive_index, probs[:, positive_index], alpha)
        return {"auc": auc, "ci_low": lo, "ci_high": hi, "var": var}
    return ovr_auc_ci(y_int, probs, alpha)["macro"]
