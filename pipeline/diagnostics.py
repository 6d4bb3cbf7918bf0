"""Overfitting diagnostics for the small-data case: curves, trifecta, validation and learning curves.

Why a separate stage: with a few hundred radiographs every path can memorise its training set, and
a test AUROC alone does not say whether a path overfits, learns faster, or only wins because the
training set is tiny. This module turns the training logs (``reports/train/<path>.json``) and the
metrics (``reports/metrics.json``) into those answers, and retrains each path on fractions of the
training *patients* to draw a learning curve.

Everything here is a pure function of its inputs except :func:`run_learning_curve`, which trains.
Definitions (also written into ``diagnostics.json`` under ``definitions`` so the report can cite
them verbatim) live in :data:`DEFINITIONS`.

``reports/diagnostics.json``::

    {"rules": {overfit_k, gap_mild, gap_severe, noninferiority_margin, chance_margin},
     "definitions": {name: text},
     "paths": {
       "finetune"|"scratch": {"epochs": [..], "curves": {train_loss, val_loss, train_auroc, val_auroc: [..]},
         "epochs_run", "best_epoch", "at_best"|"at_last": {epoch, train_auroc, val_auroc, auroc_gap,
         train_loss, val_loss, loss_gap}, "overfit_onset": null|{epoch, rise_after_epoch},
         "start_val_auroc", "best_val_auroc", "near_chance": bool,
         "val_decline": null|{peak_epoch, peak_val_auroc, last_val_auroc, drop, train_auroc_change},
         "convergence": null|{epochs, epoch, threshold, seconds},
         "wall_time_s", "verdict": <verdict>},
       "linear": {"curve": [{C, train_auroc, cv_auroc, cv_auroc_std, gap}], "best_C", "at_best": {..},
         "verdict": <verdict>}},
     "verdicts": {path: <verdict>},
       # <verdict> = {level: no|mild|severe|unknown, gap, onset, val_decline, near_chance, text}
     "trifecta": {"paths": {path: {start_val_auroc, convergence_epochs, convergence_seconds,
         best_val_auroc, [best_cv_auroc, note], test: {auroc, ci_low, ci_high}}},
       "finetune_vs_scratch": {start_val_auroc_diff, convergence_epochs_saved, best_val_auroc_diff,
         test_auroc_diff, test_ci_overlap, test_paired: null|{difference, ci_low, ci_high, p_value,
         method}, higher_start_claim, faster_convergence_claim, higher_asymptote_claim
         (yes|no|not separated|not tested), higher_start, faster_convergence, higher_asymptote
         (true/false only for a yes/no claim, else null), near_chance: [path]}},
     "learning_curve": {fractions, repeats, epochs, unit, evaluated_on, reuse (text),
       n_training_patients_total, n_test_images,
       "points": [{path, fraction, repeat, seed, n_patients, n_positive_patients, n_images, test_auroc,
                   ci_low, ci_high, seconds, reused_main_run, best_epoch|best_C, ...}],
       "summary": [{path, fraction, n_patients, n_images, repeats, test_auroc, ci_low, ci_high,
                    reused_main_run}],
       "pairs": [{challenger, reference, fraction, repeat, n_patients, difference, ci_low, ci_high,
                  p_value}],                       # difference = scratch - reference, test split
       "pair_summary": [{challenger, reference, fraction, repeats, n_patients, difference, ci_low,
                         ci_high}], "comparison_method",
       "scratch_catch_up": {"finetune"|"linear": {challenger, reference, margin, per_size: [{...,
           difference, ci_low, ci_high, status: better|caught up|not shown|not tested,
           caught_up}], from_patients: int|null, text}}},
     "figures": {curves, trifecta, validation_curve, learning_curve: repo-relative PNG path},
     "wall_time_s"}
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipeline.common import get_logger
from pipeline.evaluation import find_comparison

log = get_logger(__name__)

CONVERGENCE_FRACTION = 0.95
CHANCE_AUROC = 0.5
CI_ALPHA = 0.05  # 95% patient-level intervals, as in reports/metrics.json
EPOCH_PATHS = ("finetune", "scratch")  # paths trained by epochs
PRETRAINED_PATHS = ("finetune", "linear")

DEFINITIONS: dict[str, str] = {
    "best_epoch": "The epoch whose checkpoint the trainer kept (its early-stopping choice), as "
    "logged in reports/train/<path>.json.",
    "auroc_gap": "Train AUROC minus validation AUROC at that epoch (positive = better on the data "
    "the model was fitted to).",
    "loss_gap": "Validation loss minus train loss at that epoch.",
    "overfit_onset": "The first epoch at which the validation loss has risen for overfit_k "
    "consecutive epochs while the train loss fell over the same epochs; null if that never "
    "happens. 'rise_after_epoch' is the epoch just before that run of rises (the local validation "
    "loss minimum).",
    "starting_performance": "Validation AUROC after the first epoch.",
    "convergence": "Epochs needed to first cover 95% of the way from chance to the path's own best "
    "validation AUROC (threshold = 0.5 + 0.95 x (best - 0.5)), counted from 1. A curve whose best "
    "validation AUROC stays below 0.5 + chance_margin is 'near chance': it did not learn, so it "
    "has no convergence epoch (null) rather than an early one, its verdict is marked near_chance and "
    "its text starts with 'Did not learn', and the trifecta lists it under near_chance.",
    "asymptote": "Best validation AUROC over the run, and the test AUROC (patient-level 95% CI) of "
    "the kept model from reports/metrics.json.",
    "trifecta_claims": "'higher asymptote' is 'yes' only when the paired patient-level 95% CI of "
    "the test AUROC difference (finetune - scratch, evaluation.json comparisons) excludes 0 above, "
    "'no' when it excludes 0 below, else 'not separated'. Start and convergence are single "
    "validation-curve values without an interval: their differences are reported, their claims "
    "are 'not tested'.",
    "val_decline": "The fall of the validation AUROC from its peak to the last epoch, with the change "
    "of the train AUROC over the same epochs.",
    "linear_gap": "Linear path: mean train-fold AUROC minus cross-validated AUROC at the C chosen by cross-validation.",
    "verdict": "severe: AUROC gap >= gap_severe, or the validation AUROC fell from its peak by >= "
    "gap_severe while the train AUROC rose; mild: gap_mild <= gap < gap_severe, a validation AUROC "
    "fall from its peak of more than gap_mild while the train AUROC rose, or a smaller gap together "
    "with a detected overfitting onset (training ran past the validation optimum, which early "
    "stopping / checkpoint selection guards against); no: none of these. Gaps are taken at the "
    "best (kept) epoch for finetune/scratch and at the chosen C for linear.",
    "learning_curve": "Each path retrained on a patient-level, label-stratified, seeded sample of "
    "the TRAINING patients (nested: within one repeat a smaller fraction is a subset of a larger "
    "one); finetune/scratch early-stop on the full validation split; evaluated on the full test "
    "split. AUROC with a patient-level (clustered DeLong, Obuchowski 1997) 95% CI; at each size "
    "scratch is compared with each pretrained path on the same test images by the paired "
    "patient-level comparison of evaluation.json (envelope of the clustered DeLong and paired "
    "patient bootstrap intervals). For several repeats the point is the mean AUROC (or difference) and the "
    "interval the mean of the per-repeat interval bounds.",
    "scratch_catches_up": "At a training-set size, scratch catches up with a pretrained path when "
    "the lower 95% bound of the paired patient-level difference (scratch - pretrained) on the test "
    "split is above -noninferiority_margin (non-inferiority); it is better when that bound is above "
    "0. 'from_patients' is the smallest size from which scratch catches up at that size and at "
    "every larger size tried; null if it does not at the largest size.",
}


# --------------------------------------------------------------------------- small helpers


def _num(x: Any) -> float:
    """A logged number or NaN (logs write null for undefined values, e.g. one-class AUROC)."""
    if x is None:
        return math.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _opt(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _round(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


@dataclass(frozen=True)
class Rules:
    """Verdict thresholds, from ``params.diagnose``."""

    overfit_k: int
    gap_mild: float
    gap_severe: float
    noninferiority_margin: float = 0.05
    chance_margin: float = 0.05

    @classmethod
    def from_params(cls, params: Any) -> Rules:
        d = params.diagnose
        return cls(
            overfit_k=d.overfit_k,
            gap_mild=d.gap_mild,
            gap_severe=d.gap_severe,
            noninferiority_margin=d.noninferiority_margin,
            chance_margin=d.chance_margin,
        )

    def as_dict(self) -> dict[str, float]:
        return {
            "overfit_k": self.overfit_k,
            "gap_mild": self.gap_mild,
            "gap_severe": self.gap_severe,
            "noninferiority_margin": self.noninferiority_margin,
            "chance_margin": self.chance_margin,
        }


# --------------------------------------------------------------------------- epoch curves


def overfitting_onset(train_loss: Sequence[float], val_loss: Sequence[float], k: int) -> int | None:
    """Index of the first epoch at which val loss has risen ``k`` times in a row while train loss fell.

    Both conditions are checked epoch-to-epoch over the same ``k`` steps, so a noisy single uptick
    (k=1 aside) or a rise of both losses (a diverging optimiser, not overfitting) does not count.
    Returns ``None`` when it never happens. NaN losses break a run.
    """
    if k < 1:
        raise ValueError(f"overfit_k must be >= 1, got {k}")
    if len(train_loss) != len(val_loss):
        raise ValueError("train_loss and val_loss must have the same length")
    run = 0
    for i in range(1, len(val_loss)):
        v0, v1 = _num(val_loss[i - 1]), _num(val_loss[i])
        t0, t1 = _num(train_loss[i - 1]), _num(train_loss[i])
        if v1 > v0 and t1 < t0:  # comparisons with NaN are False: a gap breaks the run
            run += 1
            if run >= k:
                return i
        else:
            run = 0
    return None


def convergence_threshold(best: float, fraction: float = CONVERGENCE_FRACTION) -> float:
    """The AUROC that covers ``fraction`` of the way from chance (0.5) to ``best``."""
    return CHANCE_AUROC + fraction * (best - CHANCE_AUROC)


def near_chance(best: float, chance_margin: float) -> bool:
    """A curve whose best AUROC stays below 0.5 + ``chance_margin`` did not learn."""
    return not math.isfinite(best) or best < CHANCE_AUROC + chance_margin


def convergence_index(
    val_auroc: Sequence[float], fraction: float = CONVERGENCE_FRACTION, chance_margin: float = 0.0
) -> int | None:
    """Index of the first epoch whose val AUROC reaches :func:`convergence_threshold` of the best.

    Counting from chance, not from 0: [0.52, 0.53, 0.54] needs epoch 3 (threshold 0.538), while
    0.95 x best would call epoch 1 converged. ``None`` for a curve without finite values or a
    :func:`near_chance` one (best < 0.5 + ``chance_margin``): it has nothing to converge to.
    """
    vals = np.array([_num(v) for v in val_auroc], dtype=float)
    if not np.isfinite(vals).any():
        return None
    best = float(np.nanmax(vals))
    if near_chance(best, chance_margin):
        return None
    hits = np.flatnonzero(np.nan_to_num(vals, nan=-np.inf) >= convergence_threshold(best, fraction))
    return int(hits[0]) if hits.size else None


def val_decline(train_auroc: Sequence[float], val_auroc: Sequence[float]) -> dict[str, Any] | None:
    """How far the val AUROC fell from its peak by the last epoch, and what train AUROC did meanwhile.

    ``{"peak_index", "peak_val_auroc", "last_val_auroc", "drop", "train_auroc_change"}``, or None
    without a finite val AUROC. ``drop`` > 0 means validation got worse after its best epoch;
    ``train_auroc_change`` > 0 that the fit to the training data kept improving (the overfitting
    pattern). NaN train values give a NaN change.
    """
    val = np.array([_num(v) for v in val_auroc], dtype=float)
    tr = np.array([_num(v) for v in train_auroc], dtype=float)
    finite = np.flatnonzero(np.isfinite(val))
    if not finite.size:
        return None
    peak = int(finite[np.argmax(val[finite])])
    last = int(finite[-1])
    return {
        "peak_index": peak,
        "peak_val_auroc": float(val[peak]),
        "last_val_auroc": float(val[last]),
        "drop": float(val[peak] - val[last]),
        "train_auroc_change": float(tr[last] - tr[peak]),
    }


def _history_arrays(history: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    keys = ("train_loss", "val_loss", "train_auroc", "val_auroc")
    for i, h in enumerate(history):
        missing = [k for k in ("epoch", *keys) if k not in h]
        if missing:
            raise ValueError(f"history entry {i} lacks {missing}")
    out = {k: [_num(h[k]) for h in history] for k in keys}
    out["epoch"] = [int(h["epoch"]) for h in history]
    out["seconds"] = [_num(h.get("seconds")) for h in history]
    return out


def _gaps(a: dict[str, list[float]], i: int) -> dict[str, float | None]:
    return {
        "epoch": a["epoch"][i],
        "train_auroc": _round(a["train_auroc"][i]),
        "val_auroc": _round(a["val_auroc"][i]),
        "auroc_gap": _round(a["train_auroc"][i] - a["val_auroc"][i]),
        "train_loss": _round(a["train_loss"][i]),
        "val_loss": _round(a["val_loss"][i]),
        "loss_gap": _round(a["val_loss"][i] - a["train_loss"][i]),
    }


def epoch_curve_diagnostics(train_log: Mapping[str, Any], rules: Rules) -> dict[str, Any]:
    """Curves, best epoch, gaps at best/last, overfitting onset, trifecta numbers and verdict.

    ``train_log`` is a parsed ``reports/train/{finetune,scratch}.json``.
    """
    history = train_log.get("history")
    if not history:
        raise ValueError("training log has no history")
    a = _history_arrays(history)
    epochs = a["epoch"]
    best_epoch = train_log.get("best_epoch")
    if best_epoch is None:
        raise ValueError("training log has no best_epoch")
    if int(best_epoch) not in epochs:
        raise ValueError(f"best_epoch {best_epoch} is not one of the logged epochs {epochs}")
    ib = epochs.index(int(best_epoch))
    il = len(epochs) - 1
    onset_i = overfitting_onset(a["train_loss"], a["val_loss"], rules.overfit_k)
    conv_i = convergence_index(a["val_auroc"], chance_margin=rules.chance_margin)
    decline = val_decline(a["train_auroc"], a["val_auroc"])
    val = np.array(a["val_auroc"], dtype=float)
    best_val = float(np.nanmax(val)) if np.isfinite(val).any() else math.nan
    secs = np.array(a["seconds"], dtype=float)
    at_best = _gaps(a, ib)
    onset = None
    if onset_i is not None:
        onset = {
            "epoch": epochs[onset_i],
            "rise_after_epoch": epochs[onset_i - rules.overfit_k],
        }
    return {
        "epochs": epochs,
        "curves": {k: [_round(v, 5) for v in a[k]] for k in ("train_loss", "val_loss", "train_auroc", "val_auroc")},
        "epochs_run": len(epochs),
        "best_epoch": int(best_epoch),
        "at_best": at_best,
        "at_last": _gaps(a, il),
        "overfit_onset": onset,
        "start_val_auroc": _round(a["val_auroc"][0]),
        "best_val_auroc": _round(best_val),
        "near_chance": near_chance(best_val, rules.chance_margin),
        "val_decline": None
        if decline is None
        else {
            "peak_epoch": epochs[decline["peak_index"]],
            "peak_val_auroc": _round(decline["peak_val_auroc"]),
            "last_val_auroc": _round(decline["last_val_auroc"]),
            "drop": _round(decline["drop"]),
            "train_auroc_change": _round(decline["train_auroc_change"]),
        },
        "convergence": None
        if conv_i is None
        else {
            "epochs": conv_i + 1,
            "epoch": epochs[conv_i],
            "threshold": _round(convergence_threshold(best_val)),
            "seconds": _round(float(np.nansum(secs[: conv_i + 1])), 1) if np.isfinite(secs).any() else None,
        },
        "wall_time_s": _round(float(np.nansum(secs)), 1) if np.isfinite(secs).any() else None,
        "verdict": learning_check(
            verdict(
                _opt(at_best["auroc_gap"]),
                onset is not None,
                rules,
                gap_kind="train-val AUROC gap at the best epoch",
                decline=decline,
            ),
            best_val,
            rules,
            "validation AUROC",
        ),
    }


# --------------------------------------------------------------------------- linear path


def linear_validation_curve(linear_log: Mapping[str, Any], rules: Rules) -> dict[str, Any]:
    """The validation curve over C (train vs cross-validated AUROC) and the gap at the chosen C."""
    cv = linear_log.get("cv")
    if not cv:
        raise ValueError("linear log has no cv table")
    if "best_C" not in linear_log:
        raise ValueError("linear log has no best_C")
    best_c = float(linear_log["best_C"])
    rows: list[dict[str, Any]] = []
    for r in cv:
        missing = [k for k in ("C", "train_auroc", "cv_auroc") if k not in r]
        if missing:
            raise ValueError(f"linear cv row lacks {missing}: {r}")
        tr, cvv = _num(r["train_auroc"]), _num(r["cv_auroc"])
        rows.append(
            {
                "C": float(r["C"]),
                "train_auroc": _round(tr),
                "cv_auroc": _round(cvv),
                "cv_auroc_std": _round(_num(r.get("cv_auroc_std"))),
                "gap": _round(tr - cvv),
            }
        )
    rows.sort(key=lambda r: r["C"])
    chosen = [r for r in rows if math.isclose(r["C"], best_c, rel_tol=1e-9)]
    if not chosen:
        raise ValueError(f"best_C {best_c} is not in the cv table {[r['C'] for r in rows]}")
    at = chosen[0]
    return {
        "curve": rows,
        "best_C": best_c,
        "at_best": at,
        "verdict": learning_check(
            verdict(at["gap"], False, rules, gap_kind="train vs cross-validated AUROC gap at the chosen C"),
            _num(at["cv_auroc"]),
            rules,
            "cross-validated AUROC (at the chosen C)",
        ),
    }


# --------------------------------------------------------------------------- verdicts


def verdict(
    gap: float | None,
    onset: bool,
    rules: Rules,
    gap_kind: str = "AUROC gap",
    decline: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``no`` / ``mild`` / ``severe`` overfitting from a train-minus-held-out AUROC gap, the
    onset, and the val AUROC's fall from its peak while train AUROC rose (``decline``, from
    :func:`val_decline`).

    The checkpoint kept is the best validation epoch, so its gap alone can hide a run that went
    on overfitting: a val AUROC that falls by more than ``gap_mild`` from its peak while the
    train AUROC rises is at least mild (severe from ``gap_severe``), whatever the gap. The
    thresholds are :class:`Rules`; the returned ``text`` states the numbers behind the call.
    """
    falling = (
        decline is not None
        and math.isfinite(decline["drop"])
        and decline["drop"] > rules.gap_mild
        and math.isfinite(decline["train_auroc_change"])
        and decline["train_auroc_change"] > 0
    )
    fall_why = ""
    if falling:
        assert decline is not None
        fall_why = (
            f"the validation AUROC fell by {decline['drop']:.3f} from its peak "
            f"{decline['peak_val_auroc']:.3f} while the train AUROC rose by "
            f"{decline['train_auroc_change']:.3f}"
        )
    if gap is None or not math.isfinite(gap):
        if not falling:
            return {
                "level": "unknown",
                "gap": None,
                "onset": onset,
                "val_decline": False,
                "text": f"Cannot judge: the {gap_kind} is undefined (an AUROC was not computable).",
            }
        gap_text = f"{gap_kind} undefined"
    else:
        gap_text = f"{gap_kind} {gap:.3f}"
    levels = ["no"]
    why: list[str] = []
    if gap is not None and math.isfinite(gap):
        if gap >= rules.gap_severe:
            levels.append("severe")
            why.append(f"{gap_text} >= {rules.gap_severe:g} (gap_severe)")
        elif gap >= rules.gap_mild:
            levels.append("mild")
            why.append(f"{gap_text} is between {rules.gap_mild:g} (gap_mild) and {rules.gap_severe:g} (gap_severe)")
    if falling:
        assert decline is not None
        levels.append("severe" if decline["drop"] >= rules.gap_severe else "mild")
        why.append(fall_why)
    if onset:
        levels.append("mild")
        why.append(f"the validation loss rose for {rules.overfit_k} consecutive epochs while the train loss fell")
    level = max(levels, key=["no", "mild", "severe"].index)
    if level == "no":
        why = [
            f"{gap_text} < {rules.gap_mild:g} (gap_mild), no overfitting onset, and no "
            f"validation AUROC fall of more than {rules.gap_mild:g} from its peak while the "
            "train AUROC rose"
        ]
    elif not any(w.startswith(gap_kind) for w in why):
        why.insert(0, gap_text)
    label = {"no": "No overfitting", "mild": "Mild overfitting", "severe": "Severe overfitting"}[level]
    return {
        "level": level,
        "gap": _round(gap) if gap is not None else None,
        "onset": onset,
        "val_decline": falling,
        "text": f"{label}: {'; '.join(why)}.",
    }


def learning_check(v: Mapping[str, Any], best: float, rules: Rules, what: str) -> dict[str, Any]:
    """The verdict ``v`` with ``near_chance`` added; for a :func:`near_chance` curve its text
    starts by saying the path did not learn, so "No overfitting" is never read as a healthy
    model. The level is kept: it still describes the train/held-out gap."""
    nc = near_chance(best, rules.chance_margin)
    out = {**v, "near_chance": nc}
    if nc:
        best_text = f"{best:.3f}" if math.isfinite(best) else "undefined"
        out["text"] = (
            f"Did not learn: the best {what} is {best_text}, below "
            f"{CHANCE_AUROC + rules.chance_margin:.3f} (0.5 + chance_margin). {v['text']}"
        )
    return out


# --------------------------------------------------------------------------- transfer trifecta


def _test_auroc(metrics: Mapping[str, Any], path: str) -> dict[str, float | None] | None:
    m = metrics.get(path, {}).get("test")
    if not m or "auroc" not in m:
        return None
    return {
        "auroc": _round(_num(m.get("auroc"))),
        "ci_low": _round(_num(m.get("auroc_ci_low"))),
        "ci_high": _round(_num(m.get("auroc_ci_high"))),
    }


def ci_claim(ci_low: float | None, ci_high: float | None) -> str:
    """``yes`` when the interval of a difference lies above 0, ``no`` below, else
    ``not separated``; ``not tested`` without an interval."""
    if ci_low is None or ci_high is None or not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return "not tested"
    if ci_low > 0:
        return "yes"
    if ci_high < 0:
        return "no"
    return "not separated"


def _claim_bool(claim: str) -> bool | None:
    return {"yes": True, "no": False}.get(claim)


def transfer_trifecta(
    epoch_paths: Mapping[str, Mapping[str, Any]],
    linear: Mapping[str, Any] | None,
    metrics: Mapping[str, Any],
    comparisons: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Starting performance, convergence and asymptote of each path, and finetune vs scratch.

    The "trifecta" of transfer (higher start, faster convergence, higher asymptote than learning
    from scratch). For linear, start and convergence are not meaningful (a convex fit with no
    epochs); its asymptote is the cross-validated AUROC at the chosen C and its test AUROC.

    Claims follow the intervals (:func:`ci_claim`): ``higher_asymptote`` uses the paired
    patient-level test-split comparison finetune - scratch (``comparisons``: evaluation.json's
    ``comparisons["test"]``); start and convergence have no interval, so they are ``not tested``.
    The booleans are True / False only for ``yes`` / ``no`` claims and None otherwise.
    """
    per: dict[str, Any] = {}
    for name, d in epoch_paths.items():
        conv = d.get("convergence")
        per[name] = {
            "start_val_auroc": d.get("start_val_auroc"),
            "convergence_epochs": None if conv is None else conv["epochs"],
            "convergence_seconds": None if conv is None else conv.get("seconds"),
            "best_val_auroc": d.get("best_val_auroc"),
            "test": _test_auroc(metrics, name),
        }
    if linear is not None:
        per["linear"] = {
            "start_val_auroc": None,
            "convergence_epochs": None,
            "convergence_seconds": None,
            "best_val_auroc": None,
            "best_cv_auroc": linear["at_best"]["cv_auroc"],
            "test": _test_auroc(metrics, "linear"),
            "note": "No epochs: starting performance and convergence do not apply to a convex fit; "
            "its asymptote is the cross-validated AUROC at the chosen C and the test AUROC.",
        }
    comparison: dict[str, Any] = {}
    if "finetune" in per and "scratch" in per:
        f, s = per["finetune"], per["scratch"]

        def diff(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else _round(a - b)

        ft, st = f["test"], s["test"]
        ci_overlap = None
        if ft and st and None not in (ft["ci_low"], ft["ci_high"], st["ci_low"], st["ci_high"]):
            ci_overlap = not (ft["ci_low"] > st["ci_high"] or st["ci_low"] > ft["ci_high"])
        start_d = diff(f["start_val_auroc"], s["start_val_auroc"])
        conv_d = (
            None
            if f["convergence_epochs"] is None or s["convergence_epochs"] is None
            else s["convergence_epochs"] - f["convergence_epochs"]
        )
        asym_d = diff(f["best_val_auroc"], s["best_val_auroc"])
        test_d = diff(ft["auroc"] if ft else None, st["auroc"] if st else None)
        paired = find_comparison(comparisons, "finetune", "scratch")
        asym_claim = ci_claim(*(paired["ci_low"], paired["ci_high"]) if paired else (None, None))
        comparison = {
            "start_val_auroc_diff": start_d,
            "convergence_epochs_saved": conv_d,
            "best_val_auroc_diff": asym_d,
            "test_auroc_diff": test_d,
            "test_ci_overlap": ci_overlap,
            "test_paired": None
            if paired is None
            else {k: (_round(v) if isinstance(v, float) else v) for k, v in paired.items()},
            "higher_start_claim": "not tested",
            "faster_convergence_claim": "not tested",
            "higher_asymptote_claim": asym_claim,
            "higher_start": None,
            "faster_convergence": None,
            "higher_asymptote": _claim_bool(asym_claim),
            "near_chance": [p for p in ("finetune", "scratch") if epoch_paths[p].get("near_chance")],
        }
    return {"paths": per, "finetune_vs_scratch": comparison}


# --------------------------------------------------------------------------- learning curve


def patient_labels(patients: np.ndarray, labels: np.ndarray, positive: int) -> dict[Any, int]:
    """One label per patient: the majority of their images' labels, ties to the positive class.

    Ties go to the positive class so that rare positive patients stay represented in small samples.
    """
    out: dict[Any, int] = {}
    patients = np.asarray(patients)
    labels = np.asarray(labels)
    for p in np.unique(patients):
        vals, counts = np.unique(labels[patients == p], return_counts=True)
        top = vals[counts == counts.max()]
        out[p] = int(positive) if positive in top else int(top.min())
    return out


def stratified_patient_order(patient_label: Mapping[Any, int], seed: int | Sequence[int]) -> dict[int, list[Any]]:
    """A seeded random order of the patients of each class (the basis of nested samples)."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[Any]] = {}
    for p in sorted(patient_label, key=str):  # sorted: independent of dict/input order
        by_class.setdefault(patient_label[p], []).append(p)
    return {c: [ps[i] for i in rng.permutation(len(ps))] for c, ps in sorted(by_class.items())}


def sample_patients(order: Mapping[int, Sequence[Any]], fraction: float) -> list[Any]:
    """The first ``round(fraction * n_c)`` (at least 1) patients of every class ``c``.

    Taking prefixes of one fixed order makes samples nested across fractions, so a learning curve
    measures the effect of more data rather than of a different draw.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    chosen: list[Any] = []
    for _, ps in sorted(order.items()):
        n = min(len(ps), max(1, int(round(fraction * len(ps)))))
        chosen.extend(ps[:n])
    return chosen


def subset_rows(rows: np.ndarray, row_patients: np.ndarray, chosen: Sequence[Any]) -> np.ndarray:
    """All rows (images) of the chosen patients: sampling is patient-level, never image-level."""
    keep = set(chosen)
    mask = np.fromiter((p in keep for p in row_patients), dtype=bool, count=len(row_patients))
    return np.asarray(rows)[mask]


# Injected so tests and the stage share one orchestration: (kind, train_rows, seed, epochs) ->
# (positive-class probabilities of the test rows, info dict).
TrainPredict = Callable[[str, np.ndarray, int, int | None], tuple[np.ndarray, dict[str, Any]]]
# (y 0/1, score, patient of each image) -> (auc, ci_low, ci_high): patient-level interval.
AucCi = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[float, float, float]]
# (y, score_a, score_b, patients) -> (auc_a - auc_b, ci_low, ci_high, p): paired, patient-level.
PairedTest = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[float, float, float, float]]
CHALLENGER = "scratch"


def run_learning_curve(
    paths_to_run: Sequence[str],
    train_rows: np.ndarray,
    row_patients: np.ndarray,
    row_labels: np.ndarray,
    test_labels: np.ndarray,
    test_patients: np.ndarray,
    positive: int,
    fractions: Sequence[float],
    repeats: int,
    seed: int,
    epochs: int | None,
    fit: TrainPredict,
    auc_ci: AucCi,
    paired: PairedTest,
    reuse: Mapping[str, np.ndarray] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Retrain each path on nested, stratified patient samples; one point per path/fraction/repeat.

    ``row_patients`` / ``row_labels`` are aligned with ``train_rows``; ``test_labels`` /
    ``test_patients`` with the test rows every retrained model predicts. ``reuse`` maps a path to
    the main run's test-split positive-class probabilities: used instead of retraining for
    fraction 1.0 of repeat 0 (same patients, same seed) when the caller has checked that the
    epochs match.

    Returns ``(points, pairs)``: ``pairs`` holds, per fraction and repeat, the paired
    patient-level comparison (``paired``) of scratch with each pretrained path on the same test
    images (``difference`` = scratch - pretrained).
    """
    train_rows = np.asarray(train_rows)
    row_patients = np.asarray(row_patients)
    y_test = (np.asarray(test_labels) == positive).astype(int)
    test_patients = np.asarray(test_patients)
    if len(test_patients) != len(y_test):
        raise ValueError(f"test_patients has {len(test_patients)} entries, test labels {len(y_test)}")
    plabel = patient_labels(row_patients, np.asarray(row_labels), positive)
    points: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    for r in range(repeats):
        order = stratified_patient_order(plabel, [seed, r])
        for frac in sorted(fractions):
            chosen = sample_patients(order, frac)
            rows = subset_rows(train_rows, row_patients, chosen)
            n_pos = sum(1 for p in chosen if plabel[p] == positive)
            scores: dict[str, np.ndarray] = {}
            for path in paths_to_run:
                t0 = time.perf_counter()
                run_seed = seed + r
                info: dict[str, Any]
                if reuse and path in reuse and r == 0 and frac == 1.0:
                    probs = np.asarray(reuse[path], dtype=float)
                    info = {"reused_main_run": True}
                else:
                    log.info(
                        "learning curve: %s, %.0f%% of training patients (%d), repeat %d",
                        path,
                        100 * frac,
                        len(chosen),
                        r,
                    )
                    probs, info = fit(path, rows, run_seed, epochs)
                    info = {"reused_main_run": False, **info}
                scores[path] = np.asarray(probs, dtype=float)
                auc, lo, hi = auc_ci(y_test, scores[path], test_patients)
                points.append(
                    {
                        "path": path,
                        "fraction": float(frac),
                        "repeat": r,
                        "seed": run_seed,
                        "n_patients": len(chosen),
                        "n_positive_patients": n_pos,
                        "n_images": int(len(rows)),
                        "test_auroc": _round(auc),
                        "ci_low": _round(lo),
                        "ci_high": _round(hi),
                        "seconds": _round(time.perf_counter() - t0, 1),
                        **info,
                    }
                )
            for ref in PRETRAINED_PATHS:
                if CHALLENGER in scores and ref in scores:
                    d, lo, hi, pv = paired(y_test, scores[CHALLENGER], scores[ref], test_patients)
                    pairs.append(
                        {
                            "challenger": CHALLENGER,
                            "reference": ref,
                            "fraction": float(frac),
                            "repeat": r,
                            "n_patients": len(chosen),
                            "difference": _round(d),
                            "ci_low": _round(lo),
                            "ci_high": _round(hi),
                            "p_value": _round(pv, 6),
                        }
                    )
    return points, pairs


def summarise_learning_curve(points: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per path and fraction: mean over repeats (the definition in :data:`DEFINITIONS`)."""
    groups: dict[tuple[str, float], list[Mapping[str, Any]]] = {}
    for p in points:
        groups.setdefault((p["path"], p["fraction"]), []).append(p)

    def mean(vals: list[Any]) -> float | None:
        v = [x for x in vals if x is not None]
        return _round(float(np.mean(v))) if v else None

    out = []
    for (path, frac), ps in sorted(groups.items()):
        out.append(
            {
                "path": path,
                "fraction": frac,
                "n_patients": int(round(np.mean([p["n_patients"] for p in ps]))),
                "n_images": int(round(np.mean([p["n_images"] for p in ps]))),
                "repeats": len(ps),
                "test_auroc": mean([p["test_auroc"] for p in ps]),
                "ci_low": mean([p["ci_low"] for p in ps]),
                "ci_high": mean([p["ci_high"] for p in ps]),
                "reused_main_run": any(p.get("reused_main_run") for p in ps),
            }
        )
    return out


def summarise_pairs(pairs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (reference, fraction): mean over repeats of the paired difference and of its
    interval bounds (as :func:`summarise_learning_curve` does for the AUROCs)."""
    groups: dict[tuple[str, str, float], list[Mapping[str, Any]]] = {}
    for p in pairs:
        groups.setdefault((p["challenger"], p["reference"], p["fraction"]), []).append(p)

    def mean(vals: list[Any]) -> float | None:
        v = [x for x in vals if x is not None]
        return _round(float(np.mean(v))) if len(v) == len(vals) and v else None

    return [
        {
            "challenger": c,
            "reference": ref,
            "fraction": f,
            "repeats": len(ps),
            "n_patients": int(round(np.mean([p["n_patients"] for p in ps]))),
            "difference": mean([p["difference"] for p in ps]),
            "ci_low": mean([p["ci_low"] for p in ps]),
            "ci_high": mean([p["ci_high"] for p in ps]),
        }
        for (c, ref, f), ps in sorted(groups.items())
    ]


def catch_up_status(ci_low: float | None, margin: float) -> str:
    """``better`` (paired CI of challenger - reference above 0), ``caught up`` (its lower bound
    above -``margin``: non-inferior), ``not shown`` (lower bound at or below -margin), or
    ``not tested`` (no interval)."""
    if ci_low is None or not math.isfinite(ci_low):
        return "not tested"
    if ci_low > 0:
        return "better"
    if ci_low > -margin:
        return "caught up"
    return "not shown"


def catch_up(
    summary: Sequence[Mapping[str, Any]],
    pair_summary: Sequence[Mapping[str, Any]],
    margin: float,
    challenger: str = CHALLENGER,
    reference: str = "finetune",
) -> dict[str, Any]:
    """From which training-set size on the challenger is non-inferior to the reference.

    At each size, :func:`catch_up_status` of the paired patient-level difference (challenger -
    reference; ``pair_summary`` from :func:`summarise_pairs`) with the non-inferiority
    ``margin``; ``from_patients`` is the smallest size from which it holds at every larger size.
    """
    auc = {(r["path"], r["fraction"]): r for r in summary}
    rows = [r for r in pair_summary if r["challenger"] == challenger and r["reference"] == reference]
    per_size = []
    for r in sorted(rows, key=lambda r: r["fraction"]):
        status = catch_up_status(r["ci_low"], margin)
        per_size.append(
            {
                "fraction": r["fraction"],
                "n_patients": r["n_patients"],
                f"{challenger}_auroc": auc.get((challenger, r["fraction"]), {}).get("test_auroc"),
                f"{reference}_auroc": auc.get((reference, r["fraction"]), {}).get("test_auroc"),
                "difference": r["difference"],
                "ci_low": r["ci_low"],
                "ci_high": r["ci_high"],
                "status": status,
                "caught_up": None if status == "not tested" else status in ("better", "caught up"),
            }
        )
    from_n = None
    for i in range(len(per_size)):
        if all(p["caught_up"] for p in per_size[i:]):
            from_n = per_size[i]["n_patients"]
            break

    def ci_text(p: Mapping[str, Any]) -> str:
        return (
            f"paired difference {_fmt(p['difference'])}, 95% CI {_fmt(p['ci_low'])} to "
            f"{_fmt(p['ci_high'])}; margin {margin:g}"
        )

    if not per_size:
        text = f"No sizes with both {challenger} and {reference}."
    elif from_n is None:
        last = per_size[-1]
        text = (
            f"{challenger} is not shown to catch up with {reference} at the largest training set "
            f"tried ({last['n_patients']} patients: {ci_text(last)})."
        )
    elif from_n == per_size[0]["n_patients"]:
        text = (
            f"{challenger} is non-inferior to {reference} (margin {margin:g}) at every size tried, "
            f"from {from_n} patients on: the pretrained start is not shown to matter at these sizes."
        )
    else:
        first = next(p for p in per_size if p["n_patients"] == from_n)
        text = (
            f"{challenger} catches up with {reference} (non-inferior, margin {margin:g}) from "
            f"{from_n} training patients on ({ci_text(first)})."
        )
    return {
        "challenger": challenger,
        "reference": reference,
        "margin": margin,
        "per_size": per_size,
        "from_patients": from_n,
        "text": text,
    }


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


# --------------------------------------------------------------------------- assembly


def build_diagnostics(
    logs: Mapping[str, Mapping[str, Any]],
    metrics: Mapping[str, Any],
    rules: Rules,
    learning_curve: Mapping[str, Any] | None,
    comparisons: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The whole ``reports/diagnostics.json`` document (figures are added by the stage).

    ``comparisons``: evaluation.json's paired comparisons on the test split (for the trifecta's
    asymptote claim)."""
    epoch_paths = {p: epoch_curve_diagnostics(logs[p], rules) for p in EPOCH_PATHS if p in logs}
    linear = linear_validation_curve(logs["linear"], rules) if "linear" in logs else None
    paths_out: dict[str, Any] = dict(epoch_paths)
    if linear is not None:
        paths_out["linear"] = linear
    verdicts = {p: d["verdict"] for p, d in paths_out.items()}
    return {
        "rules": rules.as_dict(),
        "definitions": DEFINITIONS,
        "paths": paths_out,
        "verdicts": verdicts,
        "trifecta": transfer_trifecta(epoch_paths, linear, metrics, comparisons),
        "learning_curve": learning_curve,
    }


def learning_curve_block(
    points: list[dict[str, Any]],
    pairs: list[dict[str, Any]],
    fractions: Sequence[float],
    repeats: int,
    epochs: int | None,
    reuse_note: str,
    margin: float,
) -> dict[str, Any]:
    """Points, paired comparisons, per-size summaries, catch-up analysis and the settings used."""
    summary = summarise_learning_curve(points)
    pair_summary = summarise_pairs(pairs)
    refs = sorted({p["reference"] for p in pairs}, key=PRETRAINED_PATHS.index)
    catch = {ref: catch_up(summary, pair_summary, margin, CHALLENGER, ref) for ref in refs}
    return {
        "fractions": list(fractions),
        "repeats": repeats,
        "epochs": epochs,
        "unit": "training patients",
        "evaluated_on": "test",
        "reuse": reuse_note,
        "points": points,
        "summary": summary,
        "pairs": pairs,
        "pair_summary": pair_summary,
        "comparison_method": "paired, patient-level (test patients): envelope of the clustered "
        "DeLong (Obuchowski 1997) and paired patient bootstrap intervals, as in evaluation.json",
        "scratch_catch_up": catch,
    }


# --------------------------------------------------------------------------- real training glue


def make_fit(dataset: Any, params: Any, linear_inputs: Mapping[str, Any] | None = None) -> TrainPredict:
    """The production ``fit`` for :func:`run_learning_curve`: the pipeline's own trainers.

    finetune/scratch: ``pipeline.training.train`` with early stopping on the full validation split,
    then ``predict_proba`` on the test split. linear: ``pipeline.linear.fit_predict_linear`` on the
    stored frozen features (``linear_inputs`` from :func:`pipeline.linear.load_linear_inputs`; augmented views are
    used when ``linear.use_augmented``, restricted to the sampled patients by fit_predict_linear).
    The retrained models are discarded: only their test AUROCs are kept.
    """
    pos = params.data.positive_index
    val_rows = dataset.rows("val")
    test_rows = dataset.rows("test")

    def fit(kind: str, rows: np.ndarray, seed: int, epochs: int | None) -> tuple[np.ndarray, dict[str, Any]]:
        if kind == "linear":
            from pipeline.linear import fit_predict_linear

            if linear_inputs is None:
                raise ValueError("the linear learning curve needs linear_inputs (frozen features)")
            f = linear_inputs
            probs, _cv, best_c = fit_predict_linear(
                dataset, f["features"], f["aug_features"], f["aug_index"], rows, test_rows, params
            )
            return _positive(probs, pos), {"best_C": float(best_c)}
        from pipeline.training import predict_proba, train

        # No checkpoint (out_dir None: nothing to resume) and no dvclive logs (live_dir None):
        # these retrainings are measurements, not artifacts.
        trainer_kind: Literal["finetune", "scratch"] = "finetune" if kind == "finetune" else "scratch"
        res = train(trainer_kind, dataset, params, rows, val_rows, None, None, epochs=epochs, seed=seed)
        probs = predict_proba(res.model, dataset.images, test_rows, params.train.batch_size)
        return _positive(probs, pos), {"best_epoch": res.best_epoch, "epochs_run": len(res.history)}

    return fit


def _positive(probs: np.ndarray, pos: int) -> np.ndarray:
    """Positive-class column of an (n, classes) probability matrix (or a 1-D score as is)."""
    p = np.asarray(probs, dtype=float)
    return p[:, pos] if p.ndim == 2 else p


def clustered_auc_ci(y: np.ndarray, score: np.ndarray, patients: np.ndarray) -> tuple[float, float, float]:
    """AUROC and its patient-level 95% CI (clustered DeLong, the estimator of metrics.json)."""
    from pipeline.clustered import clustered_auc_ci as _clustered

    auc, lo, hi, _var = _clustered(np.asarray(y), np.asarray(score), np.asarray(patients), CI_ALPHA)
    return float(auc), float(lo), float(hi)


def make_paired_test(n_boot: int, seed: int) -> PairedTest:
    """The paired patient-level comparison of evaluation.json's ``comparisons``
    (:func:`pipeline.clustered.paired_comparison`: envelope of the clustered DeLong and paired
    patient bootstrap intervals), as ``(diff, ci_low, ci_high, p)``."""
    from pipeline.clustered import paired_comparison

    def paired(
        y: np.ndarray, s1: np.ndarray, s2: np.ndarray, patients: np.ndarray
    ) -> tuple[float, float, float, float]:
        c = paired_comparison(
            np.asarray(y), np.asarray(s1), np.asarray(s2), np.asarray(patients), n_boot, seed, CI_ALPHA
        )
        return c["difference"], c["ci_low"], c["ci_high"], c["p_value"]

    return paired


def main_run_test_probs(pred_csv: Path, test_rows: np.ndarray, classes: Sequence[str], pos: int) -> np.ndarray:
    """Positive-class probabilities of the test rows, in ``test_rows`` order, from a predictions CSV."""
    from pipeline.predictions import read_predictions

    df = read_predictions(pred_csv, list(classes)).set_index("row")
    missing = np.setdiff1d(test_rows, df.index.to_numpy())
    if missing.size:
        raise ValueError(f"{pred_csv} lacks test rows {missing[:5].tolist()}; rerun its stage")
    return df.loc[np.asarray(test_rows), f"prob_{classes[pos]}"].to_numpy(dtype=float)


def pipeline_learning_curve(
    dataset: Any,
    params: Any,
    fit: TrainPredict,
    auc_ci: AucCi = clustered_auc_ci,
    predictions_dir: Path | None = None,
    paths_to_run: Sequence[str] = ("linear", "finetune", "scratch"),
) -> dict[str, Any]:
    """The learning-curve block for ``diagnostics.json`` from the pipeline's data and params.

    Fraction 1.0 of repeat 0 reuses the main run's test predictions (``predictions/<path>.csv``)
    instead of retraining when that run is exactly what would be retrained: always for linear
    (deterministic given the features and seed), and for finetune/scratch only when the learning
    curve trains for as many epochs as the main run (``diagnose.learning_curve_epochs`` null or
    equal to ``train.epochs``).
    """
    from pipeline import paths as P

    d = params.diagnose
    pos = params.data.positive_index
    epochs = d.learning_curve_epochs if d.learning_curve_epochs is not None else params.train.epochs
    train_rows = dataset.rows("train")
    test_rows = dataset.rows("test")
    labels = dataset.labels()
    pred_dir = Path(predictions_dir) if predictions_dir is not None else P.repo_path(P.PREDICTIONS)
    reuse: dict[str, np.ndarray] = {}
    reused: list[str] = []
    if 1.0 in [float(f) for f in d.fractions]:
        for path in paths_to_run:
            same_budget = path == "linear" or epochs == params.train.epochs
            csv = pred_dir / f"{path}.csv"
            if same_budget and csv.exists():
                reuse[path] = main_run_test_probs(csv, test_rows, dataset.classes, pos)
                reused.append(path)
    if reused:
        note = (
            f"Fraction 1.0, repeat 0 of {', '.join(reused)} reuses the main run's test predictions "
            f"(predictions/<path>.csv): same patients, same seed"
            + (", same epochs" if any(p != "linear" for p in reused) else "")
            + "; not retrained."
        )
    else:
        note = "Every point was retrained (no main-run predictions reused)."
    points, pairs = run_learning_curve(
        paths_to_run,
        train_rows,
        dataset.patients(train_rows),
        labels[train_rows],
        labels[test_rows],
        dataset.patients(test_rows),
        pos,
        d.fractions,
        d.repeats,
        params.seed,
        epochs,
        fit,
        auc_ci,
        make_paired_test(params.evaluate.bootstrap_samples, params.seed),
        reuse=reuse,
    )
    block = learning_curve_block(points, pairs, d.fractions, d.repeats, epochs, note, d.noninferiority_margin)
    block["n_training_patients_total"] = int(len(np.unique(dataset.patients(train_rows))))
    block["n_test_images"] = int(len(test_rows))
    return block
