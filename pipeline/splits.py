"""Patient-level, label-stratified train/val/test split, with a leak assertion.

Why by patient: images of one patient are strongly correlated (same anatomy, often the same
finding on follow-up films); an image-level split lets a model recognise the patient instead of
the disease and inflates every test metric. So whole patients are assigned to one split, and
:func:`assert_patient_disjoint` checks it every time a split is made or read.

How: each internal patient gets its majority label (ties: the class listed first in
``data.classes``); scikit-learn's ``train_test_split`` draws ``test_fraction`` of the patients
stratified by that label, then ``val_fraction`` (of all patients) from the rest. Fractions are of
patients. Because patients have very different numbers of images (up to 66 in the NIH demo), one
draw can leave the test split with far fewer images than its share; so :data:`CANDIDATE_DRAWS`
such draws are made from seeds derived from ``seed`` and the one whose image shares come closest
to the same fractions is kept (deterministic for a seed). External rows keep ``split = external``;
they are never part of train/val/test.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pipeline.errors import StageError

SPLITS: tuple[str, ...] = ("train", "val", "test")
EXTERNAL = "external"
SPLIT_COLUMNS: tuple[str, ...] = ("row", "patient", "label", "split")
# Patient-level draws compared to balance image counts (see the module docstring).
CANDIDATE_DRAWS = 64


class PatientLeakError(StageError, AssertionError):
    """A patient appears in more than one of train/val/test."""


class SplitError(StageError, ValueError):
    """The split cannot be made as asked (too few patients for the fractions/stratification)."""


def patient_majority_labels(manifest: pd.DataFrame, classes: list[str] | None = None) -> pd.Series:
    """patient -> majority label of their images (ties: the first class in ``classes`` order)."""
    order = list(classes) if classes is not None else sorted(manifest["label"].unique())
    counts = pd.crosstab(manifest["patient"], manifest["label"]).reindex(columns=order, fill_value=0)
    return counts.idxmax(axis=1)  # idxmax takes the first maximum: column order breaks ties


def assert_patient_disjoint(splits: pd.DataFrame, names: tuple[str, ...] = SPLITS) -> None:
    """Raise :class:`PatientLeakError` if any patient is in two of the ``names`` splits."""
    sub = splits[splits["split"].isin(names)]
    n_splits = sub.groupby("patient")["split"].nunique()
    leaked = n_splits[n_splits > 1]
    if len(leaked):
        examples = ", ".join(map(str, leaked.index[:5]))
        raise PatientLeakError(
            f"{len(leaked)} patient(s) are in more than one of {list(names)} (e.g. {examples}); "
            "a patient-level split must keep every patient in one split"
        )


def _draw(patients: np.ndarray, labels: np.ndarray, size: float, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    try:
        rest, drawn = train_test_split(patients, test_size=size, stratify=labels, random_state=seed)
    except ValueError as err:
        counts = pd.Series(labels).value_counts().to_dict()
        raise SplitError(
            f"cannot draw a stratified {what} split of {size:.3g} from {len(patients)} patients "
            f"(patients per majority label: {counts}): {err}. Add patients or change "
            "split.val_fraction / split.test_fraction."
        ) from None
    return rest, drawn


def make_splits(
    manifest: pd.DataFrame,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    classes: list[str] | None = None,
) -> pd.DataFrame:
    """Assign every manifest row to train/val/test (internal) or external.

    ``manifest`` needs ``row``, ``patient``, ``label`` and ``source``. Returns ``row, patient,
    label, split`` in row order; asserts that train/val/test are patient-disjoint.
    """
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise SplitError(f"invalid fractions val={val_fraction}, test={test_fraction}")
    missing = [c for c in ("row", "patient", "label", "source") if c not in manifest.columns]
    if missing:
        raise SplitError(f"manifest lacks column(s) {missing}")
    internal = manifest[manifest["source"] == "internal"]
    if internal.empty:
        raise SplitError("no internal rows to split")
    majority = patient_majority_labels(internal, classes)
    patients = majority.index.to_numpy()
    labels = majority.to_numpy()

    images_per_patient = internal["patient"].value_counts()
    n_images = len(internal)
    draw_seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=CANDIDATE_DRAWS)
    best: tuple[float, dict] | None = None
    for draw_seed in draw_seeds.tolist():
        rest, test = _draw(patients, labels, test_fraction, draw_seed, "test")
        rest_labels = majority.loc[rest].to_numpy()
        # val_fraction is of all patients: rescale to the remainder.
        train, val = _draw(rest, rest_labels, val_fraction / (1.0 - test_fraction), draw_seed, "val")
        share_test = images_per_patient.loc[test].sum() / n_images
        share_val = images_per_patient.loc[val].sum() / n_images
        score = abs(share_test - test_fraction) + abs(share_val - val_fraction)
        if best is None or score < best[0]:
            best = (score, {**{p: "train" for p in train}, **{p: "val" for p in val}, **{p: "test" for p in test}})
    assert best is not None
    assignment = best[1]
    out = manifest[["row", "patient", "label"]].copy()
    is_internal = (manifest["source"] == "internal").to_numpy()
    out["split"] = np.where(is_internal, manifest["patient"].map(assignment).to_numpy(), EXTERNAL)
    if out.loc[is_internal, "split"].isna().any():  # cannot happen: every internal patient drawn
        raise SplitError("internal rows without a split")
    out = out.sort_values("row").reset_index(drop=True)
    assert_patient_disjoint(out)
    return out[list(SPLIT_COLUMNS)]


def _counts(values: pd.Series) -> dict[str, int]:
    filled = values.fillna("").astype(str).replace("", "unknown")
    return {str(k): int(v) for k, v in sorted(filled.value_counts().items())}


def split_report(splits: pd.DataFrame, manifest: pd.DataFrame, **settings: Any) -> dict[str, Any]:
    """Per split: patients, images, and image counts per label, sex and view; plus checks."""
    assert_patient_disjoint(splits)
    merged = splits.merge(manifest.drop(columns=["patient", "label"]), on="row", how="left")
    report: dict[str, Any] = {"settings": settings}
    parts = [(name, merged[merged["split"] == name]) for name in SPLITS]
    external = merged[merged["split"] == EXTERNAL]
    # One block per external set, keyed external/<name> as in evaluation.json.
    for source in sorted(external["source"].astype(str).unique()) if "source" in external else []:
        parts.append((f"{EXTERNAL}/{source}", external[external["source"].astype(str) == source]))
    for name, part in parts:
        ages = pd.to_numeric(part.get("age"), errors="coerce") if "age" in part else pd.Series(dtype=float)
        report[name] = {
            "patients": int(part["patient"].nunique()),
            "images": int(len(part)),
            "labels": _counts(part["label"]),
            "sex": _counts(part["sex"]) if "sex" in part else {},
            "view": _counts(part["view"]) if "view" in part else {},
            "age_mean": round(float(ages.mean()), 2) if ages.notna().any() else None,
            "age_unknown": int(ages.isna().sum()),
        }
    internal_patients = set(merged.loc[merged["split"].isin(SPLITS), "patient"])
    external_patients = set(external["patient"])
    report["checks"] = {
        "patient_disjoint": True,  # assert_patient_disjoint above raised otherwise
        # Same pseudonym in both sets: the same PatientID at two sites. Reported, not fatal:
        # two hospitals may reuse an ID for different people.
        "external_patients_also_internal": len(internal_patients & external_patients),
    }
    return report


__all__ = [
    "EXTERNAL",
    "PatientLeakError",
    "SPLITS",
    "SPLIT_COLUMNS",
    "SplitError",
    "assert_patient_disjoint",
    "make_splits",
    "patient_majority_labels",
    "split_report",
]
