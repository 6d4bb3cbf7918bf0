"""From prediction files + manifest to ``reports/metrics.json`` and ``reports/evaluation.json``.

The operating point of each path is fixed on its validation predictions and then applied,
unchanged, to test and external: choosing it on test would make every threshold metric
optimistic. Splits evaluated: ``test``, and ``external/<name>`` for every set of ``data.external``
that has rows in the predictions. Every pair of methods is compared (paired, patient-level) on
``val`` too, with each method's validation AUROC: the recommendation stage chooses on those.
Schema of evaluation.json: DESIGN.md, "Internal formats → evaluation.json".
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import clustered as CL
from pipeline import metrics as M
from pipeline import paths
from pipeline.common import write_csv
from pipeline.errors import StageError
from pipeline.fit_checks import SPREAD_SPLITS, fit_check, fit_notes
from pipeline.params import Params

SCHEMA_VERSION = 3  # 3: prob_ calibrated on val, raw_prob_; fit checks; val_calibration
ALPHA = 0.05
EXTERNAL_PREFIX = "external/"  # evaluated split keys: "test", "external/<set name>"
VAL = "val"  # the split choices are made on; comparisons hold it beside the evaluated splits
VALID_SPLITS = ("train", "val", "test", "external")
MANIFEST_COLUMNS = ("row", "source", "patient", "label", "sex", "age", "view")
SEXES = ("M", "F", "O", "U")

# Flat keys of reports/metrics.json, in order (README documents them).
FLAT_KEYS = (
    "auroc",
    "auroc_ci_low",
    "auroc_ci_high",
    "auroc_image_ci_low",
    "auroc_image_ci_high",
    "auroc_boot_ci_low",
    "auroc_boot_ci_high",
    "auroc_patient_weighted",
    "average_precision",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "prevalence",
    "balanced_accuracy",
    "brier",
    "ece",
    "threshold",
    "n",
    "n_patients",
    "n_positive",
)
DOMINANT_PATIENT_SHARE = 0.10  # a patient holding more of a split's images is noted
AUROC_METHOD = "patient-level: envelope of the clustered DeLong (Obuchowski 1997) and patient bootstrap intervals"
COMPARISON_METHOD = (
    "paired, patient-level: envelope of the clustered DeLong (Obuchowski 1997) and paired patient bootstrap intervals"
)
COMPARISON_METHOD_MULTICLASS = "paired clustered DeLong (Obuchowski 1997), patients as clusters"

DEFINITIONS = {
    "auroc": "Area under the ROC curve of P(positive class); for more than 2 classes the macro "
    "average of one-vs-rest AUROCs, computed on the raw probabilities (raw_prob_: the per-class "
    "calibration can reorder a class); for 2 classes the calibrated and raw AUROC are equal.",
    "probability_calibration": "Every method's prob_ columns are its raw probabilities (raw_prob_) "
    "passed through a sigmoid fitted on the validation split only (Platt scaling on the log-odds, "
    "scikit-learn CalibratedClassifierCV on the frozen model; one-vs-rest and renormalised for more "
    "than 2 classes); results.<method>.val_calibration holds the fit. Threshold metrics, Brier "
    "score and ECE use the calibrated probabilities. Not calibrated (prob_ = raw_prob_) when val "
    "lacks a class or the fitted sigmoid decreases (the model ranks val inversely).",
    "fit": "Fit checks from the raw probabilities: train_auroc is the headline AUROC on the train "
    "images (predicted in eval mode, un-augmented), fitted = train_auroc >= "
    "evaluate.fitted_train_auroc; raw_spread gives quartiles, IQR and range of the raw "
    "positive-class probability on val and test (without a positive class: the class with the "
    "widest IQR), near_constant = that IQR is below evaluate.near_constant_iqr on val or test.",
    "unit_of_uncertainty": "The patient. Images of one patient are correlated, so every interval "
    "and test treats the patient, not the image, as the independent unit: AUROC intervals and "
    "paired comparisons by the clustered DeLong method (Obuchowski 1997, Biometrics 53:567-578), "
    "proportions by design-effect-adjusted Wilson intervals, and a patient bootstrap as a "
    "cross-check. Image-level DeLong intervals are kept for reference only (auroc_image).",
    "auroc_ci": "Patient-level 95% interval: the envelope (lowest lower, highest upper bound) of "
    "two patient-level intervals, the clustered DeLong Wald interval (AUROC ± 1.96·SE, SE from "
    "Obuchowski's variance: per-image placement values summed per patient; equal to DeLong's with "
    "one image per patient; for the macro AUROC the one-vs-rest Hajek projections summed per "
    "patient; clipped to [0, 1]) and the patient bootstrap percentile interval (auroc_boot_ci). "
    "The Wald interval alone is too narrow when one patient holds much of a split; the envelope "
    "covers whenever either does.",
    "auroc_image_ci": "Image-level DeLong 95% interval (Sun & Xu 2014 fast algorithm), treating "
    "images as independent: too narrow when patients have several images; for reference only.",
    "auroc_patient_weighted": "AUROC with each image weighted 1 / (images of its patient), so each "
    "patient counts once in total (scikit-learn roc_auc_score sample_weight); macro one-vs-rest "
    "for more than 2 classes. A point estimate; its interval is auroc_ci's.",
    "auroc_boot_ci": "Percentile 95% interval over bootstrap resamples of PATIENTS (all images of "
    "a drawn patient kept); resamples with a single class are skipped and counted.",
    "operating_point": "Threshold fixed on the validation split only (Youden's J = sensitivity + "
    "specificity - 1 maximised, or the highest threshold whose validation sensitivity reaches the "
    "target), on the calibrated probability; a case is positive when P(positive) >= threshold.",
    "wilson": "Sensitivity, specificity, PPV, NPV and accuracy carry patient-level Wilson 95% "
    "intervals: the proportion over images with a cluster-robust (ratio-estimator) variance "
    "sum_i (k_i - p n_i)^2 / n^2 over patients, whose ratio to p(1-p)/n (the design effect, "
    "floored at 1) divides the sample size given to Wilson's formula (Korn & Graubard 1998). "
    "With one image per patient it is the plain Wilson interval.",
    "predictive_values": "PPV and NPV depend on the prevalence: each block names the one it "
    "assumes. By default the split's own (positive images / images); with evaluate.prevalence set "
    "they are recomputed by Bayes from sensitivity and specificity, the interval running from the "
    "values at both lower to both upper bounds (at least 90% coverage; the sample's values stay "
    "as ppv_sample / npv_sample).",
    "brier": "Mean squared difference between the calibrated P(positive) and the 0/1 outcome "
    "(multi-class without a positive class: sum over classes).",
    "ece": "Expected calibration error of the calibrated probabilities: over equal-width "
    "probability bins, the image-weighted mean of |mean predicted probability - observed fraction "
    "positive|; multi-class without a positive class uses the top-label confidence and correctness.",
    "paired_comparison": "AUROC difference of two paths on the same images, patient-level and "
    "paired, by two methods: the clustered DeLong Wald interval (variance var_a + var_b - 2 cov_ab "
    "from Obuchowski's covariance) and the paired patient bootstrap percentile interval (the same "
    "resampled patients for both paths). The reported interval is their envelope and the p-value "
    "the larger of the two, so a difference counts only when both methods find it: the Wald "
    "interval alone is too narrow when one patient holds much of a split. Verdict 'a higher' / "
    "'b higher' only when that interval excludes 0, else 'not separated'. More than 2 classes "
    "without a positive class: clustered DeLong only.",
    "validation": "Each method's headline AUROC on the validation split (results.<method>.validation) "
    "and every paired comparison on it (comparisons.val), with the same patient-level intervals: "
    "choices (the recommended method) are made on validation only; test and external numbers are "
    "evidence, never used to choose.",
    "largest_patient_share": "The fraction of a split's images belonging to its patient with the "
    "most images; above 10% it is noted, since the image-level AUROC then leans on that patient.",
    "subgroup_flag": "A subgroup is flagged (never dropped) when it has fewer than "
    "min_subgroup_size images, fewer than min_subgroup_patients patients, or lacks a class; "
    "AUROC is null when a class is missing.",
}


class EvaluationError(StageError, ValueError):
    """Prediction files or manifest do not meet the contract; the message says which and how."""


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def check_manifest(manifest: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """The manifest columns evaluation needs, indexed by ``row``; unknown labels are an error."""
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise EvaluationError(f"manifest is missing columns {missing} (see DESIGN.md, Manifest)")
    m = manifest[list(MANIFEST_COLUMNS)].copy()
    if m["row"].duplicated().any():
        raise EvaluationError("manifest has duplicated rows")
    unknown = sorted(set(m["label"].astype(str)) - set(classes))
    if unknown:
        raise EvaluationError(f"manifest labels {unknown} are not in data.classes {classes}")
    m["label"] = m["label"].astype(str)
    m["patient"] = m["patient"].astype(str)
    sex = m["sex"].astype(object).where(m["sex"].notna(), "U").astype(str).str.upper()
    m["sex"] = sex.where(sex.isin(SEXES), "U")
    m["age"] = pd.to_numeric(m["age"], errors="coerce")
    view = m["view"].astype(object).where(m["view"].notna(), "").astype(str).str.strip()
    m["view"] = view.where(view != "", M.UNKNOWN)
    return m.set_index("row", drop=False)


def check_predictions(name: str, df: pd.DataFrame, manifest: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """One path's predictions joined to the manifest; every contract breach is an error."""
    prob_cols = [f"prob_{c}" for c in classes] + [f"raw_prob_{c}" for c in classes]
    missing = [c for c in ("row", "split", "label", *prob_cols) if c not in df.columns]
    if missing:
        raise EvaluationError(f"predictions/{name}.csv: missing columns {missing}")
    if df["row"].duplicated().any():
        raise EvaluationError(f"predictions/{name}.csv: duplicated rows")
    bad_split = sorted(set(df["split"].astype(str)) - set(VALID_SPLITS))
    if bad_split:
        raise EvaluationError(f"predictions/{name}.csv: unknown splits {bad_split}")
    rows = set(df["row"].tolist())
    unknown_rows = sorted(rows - set(manifest.index))
    if unknown_rows:
        raise EvaluationError(
            f"predictions/{name}.csv: {len(unknown_rows)} rows not in the manifest "
            f"(e.g. {unknown_rows[:5]}); rerun the path after ingest"
        )
    lacking = sorted(set(manifest.index) - rows)
    if lacking:
        raise EvaluationError(
            f"predictions/{name}.csv: {len(lacking)} manifest rows have no prediction "
            f"(e.g. {lacking[:5]}); the contract is one row per image of every split"
        )
    probs = df[prob_cols].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1:
        raise EvaluationError(f"predictions/{name}.csv: probabilities (prob_, raw_prob_) must be finite, in [0, 1]")
    joined = df[["row", "split", "label", *prob_cols]].merge(
        manifest.drop(columns="label").reset_index(drop=True).assign(_mlabel=manifest["label"].values),
        on="row",
        how="left",
    )
    mismatch = joined["label"].astype(str) != joined["_mlabel"].astype(str)
    if mismatch.any():
        raise EvaluationError(
            f"predictions/{name}.csv: {int(mismatch.sum())} labels differ from the manifest "
            f"(e.g. row {int(joined.loc[mismatch, 'row'].iloc[0])}); stale predictions?"
        )
    joined["split"] = joined["split"].astype(str)
    joined["label"] = joined["label"].astype(str)
    return joined.drop(columns="_mlabel").sort_values("row").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------


def split_rows(df: pd.DataFrame, key: str) -> pd.DataFrame:
    """The rows of an evaluated split: ``test``, or ``external/<name>`` (split ``external`` and
    manifest ``source`` = the set's name)."""
    if key.startswith(EXTERNAL_PREFIX):
        name = key[len(EXTERNAL_PREFIX) :]
        return df[(df["split"] == "external") & (df["source"].astype(str) == name)]
    return df[df["split"] == key]


class _Task:
    """Class bookkeeping shared by every block: headline vs binary task."""

    def __init__(self, params: Params) -> None:
        self.classes = list(params.data.classes)
        self.k = len(self.classes)
        self.positive_class = params.data.positive_class
        self.pos = self.classes.index(self.positive_class) if self.positive_class else None
        self.binary = self.pos is not None  # positive_class vs rest exists
        self.prob_cols = [f"prob_{c}" for c in self.classes]  # calibrated on val
        self.raw_cols = [f"raw_prob_{c}" for c in self.classes]  # the model's own
        # Discrimination (AUROC, curves, comparisons): the calibrated columns for 2 classes (an
        # increasing function of the raw one: the same AUROC, thresholds on the calibrated scale),
        # the raw ones for more (one-vs-rest sigmoids + renormalisation can reorder a class).
        self.disc_cols = self.prob_cols if self.k == 2 else self.raw_cols
        self.lookup = {c: i for i, c in enumerate(self.classes)}

    def arrays(self, df: pd.DataFrame, cols: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Class indices and the probability columns ``cols`` (default: calibrated ``prob_``)."""
        y = df["label"].map(self.lookup).to_numpy(dtype=np.int64)
        return y, df[cols or self.prob_cols].to_numpy(dtype=np.float64)

    @property
    def head_index(self) -> int:
        return self.pos if self.pos is not None else 1

    def headline(self, y: np.ndarray, probs: np.ndarray, patients: np.ndarray) -> dict[str, float]:
        """Headline AUROC with its patient-level interval."""
        return CL.headline_auc(y, probs, self.head_index, patients, ALPHA)

    def headline_image(self, y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
        """Headline AUROC with the image-level DeLong interval (reference only)."""
        return M.headline_auc_ci(y, probs, self.head_index, ALPHA)


def _operating_point(task: _Task, val: pd.DataFrame, params: Params) -> dict[str, Any] | None:
    ev = params.evaluate
    if not task.binary:
        return None
    block: dict[str, Any] = {
        "method": ev.operating_point,
        "target_sensitivity": ev.target_sensitivity if ev.operating_point == "sensitivity" else None,
        "chosen_on": "val",
        "threshold": None,
        "note": None,
        "val": None,
    }
    y, probs = task.arrays(val)
    yb, s = y == task.pos, probs[:, task.pos]
    if len(val) == 0 or yb.all() or not yb.any():
        block["note"] = (
            f"validation split has {len(val)} images and "
            f"{'no' if not yb.any() else 'only'} {task.positive_class} cases: no operating point, "
            "threshold metrics are null"
        )
        return block
    thr = M.choose_threshold(yb, s, ev.operating_point, ev.target_sensitivity)
    block["threshold"] = thr
    block["val"] = CL.binary_metrics_at(yb, s, thr, val["patient"].to_numpy(), ALPHA, ev.prevalence)
    return block


def _patient_auroc(
    task: _Task, y: np.ndarray, probs: np.ndarray, patients: np.ndarray, params: Params
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The headline AUROC block with its patient-level interval (envelope of the clustered
    DeLong and the patient bootstrap), and the bootstrap result it used."""
    head = task.headline(y, probs, patients)
    boot_score = probs[:, task.pos] if task.k == 2 else probs
    boot_y = (y == task.pos) if task.k == 2 else y
    boot = M.bootstrap_auc_ci(boot_y, boot_score, patients, params.evaluate.bootstrap_samples, params.seed, ALPHA)
    block = {
        "value": head["auc"],
        **_envelope(head, boot),
        "se": _se(head["var"]),
        "method": AUROC_METHOD,
        "unit": "patient",
        "clustered_delong": {"ci_low": head["ci_low"], "ci_high": head["ci_high"]},
    }
    return block, boot


def _validation_block(task: _Task, val: pd.DataFrame, params: Params) -> dict[str, Any] | None:
    """The headline AUROC on the validation split with its patient-level interval: what choices
    made on validation (the recommendation) rest on. None without validation rows."""
    if len(val) == 0:
        return None
    y, disc = task.arrays(val, task.disc_cols)  # discrimination: raw for >2 classes
    patients = val["patient"].to_numpy()
    auroc, _ = _patient_auroc(task, y, disc, patients, params)
    return {"n": int(len(val)), "n_patients": int(len(np.unique(patients))), "auroc": auroc}


def _split_block(task: _Task, df: pd.DataFrame, threshold: float | None, params: Params) -> dict[str, Any]:
    ev = params.evaluate
    y, probs = task.arrays(df)  # calibrated: operating point and calibration metrics
    _, disc = task.arrays(df, task.disc_cols)  # discrimination: AUROC, curves, subgroups
    patients = df["patient"].to_numpy()
    auroc, boot = _patient_auroc(task, y, disc, patients, params)
    image = task.headline_image(y, disc)
    out: dict[str, Any] = {
        "n": int(len(df)),
        "n_patients": int(len(np.unique(patients))),
        "largest_patient_share": _largest_share(patients),
        "class_counts": {c: int((y == i).sum()) for i, c in enumerate(task.classes)},
        "n_positive": int((y == task.pos).sum()) if task.binary else None,
        "auroc": auroc,
        "auroc_image": {
            "value": image["auc"],
            "ci_low": image["ci_low"],
            "ci_high": image["ci_high"],
            "se": _se(image["var"]),
            "method": "DeLong (images independent)",
            "unit": "image",
        },
        "auroc_patient_weighted": CL.patient_weighted_headline(y, disc, task.head_index, patients)
        if np.isfinite(auroc["value"])
        else float("nan"),
        "auroc_bootstrap": {
            "value": boot["auc"],
            "ci_low": boot["ci_low"],
            "ci_high": boot["ci_high"],
            "unit": "patient",
            "n_groups": boot["n_groups"],
            "n_boot_requested": boot["n_boot_requested"],
            "n_boot": boot["n_boot"],
            "skipped_single_class": boot["skipped_single_class"],
            "seed": boot["seed"],
        },
        "per_class": None,
        "at_threshold": None,
    }
    if task.k > 2:
        ovr = CL.clustered_ovr_macro(y, disc, patients, ALPHA)
        out["per_class"] = {
            c: {
                "n_positive": int((y == i).sum()),
                "auroc": r["auc"],
                "ci_low": r["ci_low"],
                "ci_high": r["ci_high"],
                "se": _se(r["var"]),
                "unit": "patient",
                "average_precision": M.average_precision(y == i, disc[:, i]),
            }
            for i, (c, r) in enumerate(zip(task.classes, ovr["per_class"], strict=True))
        }
        aps = [v["average_precision"] for v in out["per_class"].values()]
        out["average_precision"] = float(np.mean(aps))  # NaN if a class is absent
    if task.binary:
        yb, s, sd = y == task.pos, probs[:, task.pos], disc[:, task.pos]
        if task.k == 2:
            out["average_precision"] = M.average_precision(yb, sd)
        if threshold is not None:
            out["at_threshold"] = CL.binary_metrics_at(yb, s, threshold, patients, ALPHA, ev.prevalence)
        out["calibration"] = M.calibration(yb, s, ev.calibration_bins)
        roc = [{"class": task.positive_class, **M.roc_points(yb, sd)}]
        pr = [{"class": task.positive_class, **M.pr_points(yb, sd)}]
    else:
        out["calibration"] = M.top_label_calibration(y, probs, ev.calibration_bins)
        roc = [{"class": c, **M.roc_points(y == i, disc[:, i])} for i, c in enumerate(task.classes)]
        pr = [{"class": c, **M.pr_points(y == i, disc[:, i])} for i, c in enumerate(task.classes)]
    out["curves"] = {"roc": roc, "pr": pr}
    attributes = {
        "sex": df["sex"].to_numpy(dtype=object),
        "age_band": M.age_band_labels(df["age"].to_numpy(dtype=np.float64), ev.age_bands),
        "view": df["view"].to_numpy(dtype=object),
    }
    out["subgroups"] = CL.subgroup_table(
        y,
        disc,
        attributes,
        patients,
        task.classes,
        task.pos,
        ev.min_subgroup_size,
        ev.min_subgroup_patients,
        ALPHA,
    )
    return out


COMPARISON_KEYS = ("difference", "ci_low", "ci_high", "p_value", "method")


def find_comparison(
    comparisons: Sequence[Mapping[str, Any]] | None, a: str, b: str, keys: Sequence[str] = COMPARISON_KEYS
) -> dict[str, Any] | None:
    """The paired comparison of ``a`` - ``b`` from evaluation.json's list (either order; a
    ``b - a`` entry is turned around), as ``{key: value}`` for ``keys``."""
    for c in comparisons or []:
        pair = (c.get("path_a"), c.get("path_b"))
        if pair == (b, a):
            c = {
                **c,
                "difference": _neg(c.get("difference")),
                "ci_low": _neg(c.get("ci_high")),
                "ci_high": _neg(c.get("ci_low")),
            }
        elif pair != (a, b):
            continue
        return {k: c.get(k) for k in keys}
    return None


def _neg(x: float | None) -> float | None:
    return None if x is None else -x


def separation(ci_low: float, ci_high: float, a: str = "a", b: str = "b") -> str:
    """``"<a> higher"`` / ``"<b> higher"`` when the interval of (a - b) excludes 0, else
    ``"not separated"`` (``"undefined"`` without an interval)."""
    if not (np.isfinite(ci_low) and np.isfinite(ci_high)):
        return "undefined"
    if ci_low > 0:
        return f"{a} higher"
    if ci_high < 0:
        return f"{b} higher"
    return "not separated"


def _comparisons(task: _Task, joined: Mapping[str, pd.DataFrame], split: str, params: Params) -> list[dict]:
    rows = []
    for a, b in itertools.combinations(list(joined), 2):
        da = split_rows(joined[a], split)
        db = split_rows(joined[b], split)
        both = da.merge(db[["row", *task.disc_cols]], on="row", suffixes=("", "_b"))
        if len(both) == 0:
            continue
        y, pa = task.arrays(both, task.disc_cols)
        pb = both[[f"{c}_b" for c in task.disc_cols]].to_numpy(dtype=np.float64)
        patients = both["patient"].to_numpy()
        if task.k == 2:
            i = task.head_index
            cmp = CL.paired_comparison(
                y == i, pa[:, i], pb[:, i], patients, params.evaluate.bootstrap_samples, params.seed, ALPHA
            )
            diff, lo, hi, p = cmp["difference"], cmp["ci_low"], cmp["ci_high"], cmp["p_value"]
            method = COMPARISON_METHOD
        else:  # macro one-vs-rest: clustered DeLong only
            diff, lo, hi, p = CL.headline_paired_test(y, pa, pb, task.head_index, patients, ALPHA)
            cmp = {"clustered_delong": {"ci_low": lo, "ci_high": hi, "p_value": p}, "bootstrap": None}
            method = COMPARISON_METHOD_MULTICLASS
        rows.append(
            {
                "path_a": a,
                "path_b": b,
                "n": int(len(both)),
                "n_patients": int(len(np.unique(patients.astype(str)))),
                "auroc_a": task.headline_image(y, pa)["auc"],
                "auroc_b": task.headline_image(y, pb)["auc"],
                "difference": diff,
                "ci_low": lo,
                "ci_high": hi,
                "p_value": p,
                "method": method,
                "unit": "patient",
                "verdict": separation(lo, hi, a, b),
                "clustered_delong": cmp["clustered_delong"],
                "bootstrap": cmp["bootstrap"],
            }
        )
    return rows


def _fit(task: _Task, df: pd.DataFrame, ev: Any) -> dict[str, Any]:
    """The fit checks of one method from its raw probabilities (pipeline.fit_checks)."""
    y_train, raw_train = task.arrays(df[df["split"] == "train"], task.raw_cols)
    raw = {s: task.arrays(df[df["split"] == s], task.raw_cols)[1] for s in SPREAD_SPLITS}
    return fit_check(y_train, raw_train, raw, task.classes, task.pos, ev.near_constant_iqr, ev.fitted_train_auroc)


def _largest_share(patients: np.ndarray) -> float:
    """The fraction of the images that belongs to the patient with the most images."""
    if len(patients) == 0:
        return float("nan")
    _, counts = np.unique(np.asarray(patients).astype(str), return_counts=True)
    return float(counts.max() / len(patients))


def comparison_notes(split: str, rows: list[dict]) -> list[str]:
    """Notes for comparisons whose two patient-level methods disagree about separation (the
    envelope then says 'not separated'; with one dominant patient the Wald interval is too
    narrow)."""
    notes = []
    for r in rows:
        b, w = r.get("bootstrap"), r.get("clustered_delong")
        if not b or not w:
            continue
        boot = separation(b["ci_low"], b["ci_high"], r["path_a"], r["path_b"])
        wald = separation(w["ci_low"], w["ci_high"], r["path_a"], r["path_b"])
        if boot != wald:
            notes.append(
                f"{split}: {r['path_a']} vs {r['path_b']}: the clustered DeLong interval says "
                f"'{wald}' ({w['ci_low']:.3f} to {w['ci_high']:.3f}), the paired patient bootstrap "
                f"'{boot}' ({b['ci_low']:.3f} to {b['ci_high']:.3f}); reported: '{r['verdict']}'"
            )
    return notes


def _envelope(wald: Mapping[str, float], boot: Mapping[str, Any]) -> dict[str, float]:
    """The lowest lower and highest upper bound of two intervals (NaN unless both exist)."""
    lows, highs = (wald["ci_low"], boot["ci_low"]), (wald["ci_high"], boot["ci_high"])
    if not all(np.isfinite(v) for v in (*lows, *highs)):
        return {"ci_low": float("nan"), "ci_high": float("nan")}
    return {"ci_low": float(min(lows)), "ci_high": float(max(highs))}


def _se(var: float) -> float:
    return float(np.sqrt(var)) if np.isfinite(var) else float("nan")


def _flat(task: _Task, block: dict[str, Any]) -> dict[str, Any]:
    at = block.get("at_threshold")

    def thr(key: str) -> float | None:
        if at is None:
            return None
        v = at[key]["value"] if isinstance(at[key], dict) else at[key]
        return _nan_to_none(v)

    flat = {
        "auroc": block["auroc"]["value"],
        "auroc_ci_low": block["auroc"]["ci_low"],
        "auroc_ci_high": block["auroc"]["ci_high"],
        "auroc_image_ci_low": block["auroc_image"]["ci_low"],
        "auroc_image_ci_high": block["auroc_image"]["ci_high"],
        "auroc_boot_ci_low": block["auroc_bootstrap"]["ci_low"],
        "auroc_boot_ci_high": block["auroc_bootstrap"]["ci_high"],
        "auroc_patient_weighted": block["auroc_patient_weighted"],
        "average_precision": block.get("average_precision"),
        "sensitivity": thr("sensitivity"),
        "specificity": thr("specificity"),
        "ppv": thr("ppv"),
        "npv": thr("npv"),
        "prevalence": at["prevalence"] if at is not None else None,
        "balanced_accuracy": thr("balanced_accuracy"),
        "brier": block["calibration"]["brier"],
        "ece": block["calibration"]["ece"],
        "threshold": at["threshold"] if at is not None else None,
        "n": block["n"],
        "n_patients": block["n_patients"],
        "n_positive": block["n_positive"],
    }
    if block["per_class"]:
        for c, r in block["per_class"].items():
            flat[f"auroc_{c}"] = r["auroc"]
    return {k: _nan_to_none(v) for k, v in flat.items()}


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def evaluate_predictions(
    predictions: Mapping[str, pd.DataFrame],
    manifest: pd.DataFrame,
    params: Params,
    calibration: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """All statistics of every available method: ``(metrics, evaluation)``.

    ``predictions`` maps method name → its prediction DataFrame; ``manifest`` is
    data/processed/manifest.csv; ``calibration`` maps method name → its
    ``predictions/<method>.calibration.json`` record, copied into ``results.<method>.val_calibration``
    (the evaluate stage always passes them; null where not given). ``metrics`` is the flat dict
    for reports/metrics.json, ``evaluation`` the full document (schema in DESIGN.md).
    """
    if not predictions:
        raise EvaluationError("no prediction files to evaluate (expected predictions/<path>.csv)")
    task = _Task(params)
    ev = params.evaluate
    man = check_manifest(manifest, task.classes)
    order = [p for p in paths.PATHS if p in predictions] + sorted(p for p in predictions if p not in paths.PATHS)
    joined = {name: check_predictions(name, predictions[name], man, task.classes) for name in order}
    first = order[0]
    for name in order[1:]:
        differ = joined[name]["split"].to_numpy() != joined[first]["split"].to_numpy()
        if differ.any():  # both sorted by row over the same manifest rows
            raise EvaluationError(
                f"predictions/{name}.csv and predictions/{first}.csv put {int(differ.sum())} rows "
                "in different splits; rerun the paths after the split stage"
            )

    notes: list[str] = []
    test_counts = {name: int((df["split"] == "test").sum()) for name, df in joined.items()}
    empty = [n for n, c in test_counts.items() if c == 0]
    if empty:
        raise EvaluationError(f"no test rows in predictions of {empty}")
    splits = ["test"]
    for ext in params.data.external:
        counts = {name: len(split_rows(df, ext.split_key)) for name, df in joined.items()}
        if all(c > 0 for c in counts.values()):
            splits.append(ext.split_key)
        else:
            notes.append(f"external set {ext.name!r} is configured but the predictions have no rows of it")
    configured = {e.name for e in params.data.external}
    first_df = joined[first]
    stray = sorted(set(first_df.loc[first_df["split"] == "external", "source"].astype(str)) - configured)
    if stray:
        notes.append(f"external rows of sets not configured in data.external ({stray}): not evaluated")
    if not task.binary:
        notes.append(
            "more than 2 classes and no data.positive_class: operating-point metrics skipped; "
            "calibration uses top-label confidence"
        )

    results: dict[str, Any] = {}
    flat: dict[str, Any] = {}
    for name, df in joined.items():
        op = _operating_point(task, df[df["split"] == "val"], params)
        thr = op["threshold"] if op else None
        per_split = {s: _split_block(task, split_rows(df, s), thr, params) for s in splits}
        for s, blk in per_split.items():
            if name == first and blk["largest_patient_share"] > DOMINANT_PATIENT_SHARE:
                notes.append(
                    f"{s}: one patient holds {100 * blk['largest_patient_share']:.0f}% of the "
                    f"{blk['n']} images ({blk['n_patients']} patients); the image-level AUROC "
                    "leans on that patient (see auroc_patient_weighted)"
                )
            if not np.isfinite(blk["auroc"]["value"]):
                present = ", ".join(f"{c}: {k}" for c, k in blk["class_counts"].items())
                notes.append(f"{name}/{s}: AUROC undefined, a class is missing ({present})")
        if op is not None and op["note"]:
            notes.append(f"{name}: {op['note']}")
        fit = _fit(task, df, ev)
        notes.extend(fit_notes(name, fit, ev.near_constant_iqr, ev.fitted_train_auroc))
        cal = (calibration or {}).get(name)
        if cal is not None and not cal["calibrated"]:
            notes.append(f"{name}: {cal['note']}")
        results[name] = {
            "operating_point": op,
            "validation": _validation_block(task, df[df["split"] == "val"], params),
            "fit": fit,
            "val_calibration": dict(cal) if cal is not None else None,
            "splits": per_split,
        }
        flat[name] = {s: _flat(task, b) for s, b in per_split.items()}

    # Every pair of methods, on validation (where choices are made: the recommendation) and on
    # each evaluated split (evidence).
    comparisons = {s: _comparisons(task, joined, s, params) for s in (VAL, *splits)}
    for s, rows in comparisons.items():
        notes.extend(comparison_notes(s, rows))
    evaluation = {
        "schema_version": SCHEMA_VERSION,
        "classes": task.classes,
        "positive_class": task.positive_class,
        "task": "binary" if task.k == 2 else "multiclass",
        "alpha": ALPHA,
        "seed": params.seed,
        "settings": {
            "operating_point": ev.operating_point,
            "target_sensitivity": ev.target_sensitivity,
            "calibration_bins": ev.calibration_bins,
            "bootstrap_samples": ev.bootstrap_samples,
            "min_subgroup_size": ev.min_subgroup_size,
            "min_subgroup_patients": ev.min_subgroup_patients,
            "prevalence": ev.prevalence,
            "age_bands": list(ev.age_bands),
            "near_constant_iqr": ev.near_constant_iqr,
            "fitted_train_auroc": ev.fitted_train_auroc,
        },
        "definitions": DEFINITIONS,
        "splits": splits,
        "paths": list(joined),
        "notes": notes,
        "results": results,
        "unit_of_uncertainty": "patient",
        "comparisons": comparisons,
    }
    return flat, evaluation


def write_plot_data(evaluation: Mapping[str, Any], plots_dir: str | Path) -> list[Path]:
    """DVC plot CSVs: roc/, pr/, calibration/ ``<path>_<split>[_<class>].csv`` (DESIGN.md).

    Stale CSVs in those three folders are removed first, so a path whose predictions disappeared
    leaves no old curve behind.
    """
    plots_dir = Path(plots_dir)
    for sub in ("roc", "pr", "calibration"):
        (plots_dir / sub).mkdir(parents=True, exist_ok=True)
        for old in (plots_dir / sub).glob("*.csv"):
            old.unlink()
    written = []
    for name, res in evaluation["results"].items():
        for split, block in res["splits"].items():
            base = f"{name}_{split.replace('/', '-')}"  # external/<name> -> external-<name>
            single = len(block["curves"]["roc"]) == 1
            for kind, cols in (("roc", ("fpr", "tpr", "threshold")), ("pr", ("recall", "precision"))):
                for curve in block["curves"][kind]:
                    stem = base if single else f"{base}_{curve['class']}"
                    p = plots_dir / kind / f"{stem}.csv"
                    write_csv(pd.DataFrame({c: curve[c] for c in cols}), p)
                    written.append(p)
            bins = [b for b in block["calibration"]["bins"] if b["count"] > 0]
            p = plots_dir / "calibration" / f"{base}.csv"
            frame = pd.DataFrame(
                {
                    "mean_predicted": [b["mean_predicted"] for b in bins],
                    "fraction_positive": [b["fraction_positive"] for b in bins],
                    "count": [b["count"] for b in bins],
                }
            )
            write_csv(frame, p)
            written.append(p)
    return written
