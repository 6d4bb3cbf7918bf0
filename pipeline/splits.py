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

No patient dominates an evaluation split (``split.max_patient_share``, default 0.10): in every
candidate draw, while the largest patient of val or test holds more than that share of its split's
images, that patient moves to train (never dropped); the draw whose image shares then come closest
to the fractions is kept. A split of k patients cannot get below 1/k, so the rule acts only while
the split keeps more than 1/share patients (a tiny data set keeps its split, and the evaluation
warns about the dominant patient instead). ``split.json`` lists the largest patient share per
split and how many patients were kept in train.
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
    max_patient_share: float = 1.0,
) -> pd.DataFrame:
    """Assign every manifest row to train/val/test (internal) or external.

    ``manifest`` needs ``row``, ``patient``, ``label`` and ``source``. Returns ``row, patient,
    label, split`` in row order; asserts that train/val/test are patient-disjoint. Patients kept
    in train by the ``max_patient_share`` rule (module docstring) are listed, in the order they
    were forced, in ``out.attrs["forced_to_train"]``.
    """
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise SplitError(f"invalid fractions val={val_fraction}, test={test_fraction}")
    if not 0 < max_patient_share <= 1:
        raise SplitError(f"invalid max_patient_share {max_patient_share}: must be in (0, 1]")
    missing = [c for c in ("row", "patient", "label", "source") if c not in manifest.columns]
    if missing:
        raise SplitError(f"manifest lacks column(s) {missing}")
    internal = manifest[manifest["source"] == "internal"]
    if internal.empty:
        raise SplitError("no internal rows to split")
    majority = patient_majority_labels(internal, classes)
    images_per_patient = internal["patient"].value_counts()
    n_images = len(internal)
    patients = majority.index.to_numpy()
    labels = majority.to_numpy()
    draw_seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=CANDIDATE_DRAWS)
    best: tuple[float, dict, list[str]] | None = None
    for draw_seed in draw_seeds.tolist():
        rest, test = _draw(patients, labels, test_fraction, draw_seed, "test")
        rest_labels = majority.loc[rest].to_numpy()
        # val_fraction is of all patients: rescale to the remainder.
        train, val = _draw(rest, rest_labels, val_fraction / (1.0 - test_fraction), draw_seed, "val")
        draw = {**{p: "train" for p in train}, **{p: "val" for p in val}, **{p: "test" for p in test}}
        # The share rule is applied to every candidate, so the kept draw is scored as it will be.
        moved = _enforce_share(draw, images_per_patient, max_patient_share)
        share_test = images_per_patient.loc[[p for p, s in draw.items() if s == "test"]].sum() / n_images
        share_val = images_per_patient.loc[[p for p, s in draw.items() if s == "val"]].sum() / n_images
        score = abs(share_test - test_fraction) + abs(share_val - val_fraction)
        if best is None or score < best[0]:
            best = (score, draw, moved)
    assert best is not None
    _, assignment, forced = best
    out = manifest[["row", "patient", "label"]].copy()
    is_internal = (manifest["source"] == "internal").to_numpy()
    out["split"] = np.where(is_internal, manifest["patient"].map(assignment).to_numpy(), EXTERNAL)
    if out.loc[is_internal, "split"].isna().any():  # cannot happen: every internal patient drawn
        raise SplitError("internal rows without a split")
    out = out.sort_values("row").reset_index(drop=True)
    assert_patient_disjoint(out)
    out = out[list(SPLIT_COLUMNS)]
    out.attrs["forced_to_train"] = forced
    return out


def _enforce_share(assignment: dict, images_per_patient: pd.Series, max_share: float) -> list[str]:
    """Rule 2: move the largest val/test patient to train while it holds more than ``max_share``
    of its split's images (in place); return the moved patients in order."""
    moved: list[str] = []
    # A split of k patients cannot get below 1/k: below that many patients the rule cannot be met,
    # and moving patients would only empty the split (the evaluation then warns instead).
    min_patients = int(np.ceil(1.0 / max_share)) + 1
    while True:
        worst: tuple[float, str] | None = None
        for name in ("val", "test"):
            members = [p for p, s in assignment.items() if s == name]
            if len(members) < min_patients:
                continue
            counts = images_per_patient.loc[members]
            share = float(counts.max()) / float(counts.sum())
            if share > max_share and (worst is None or share > worst[0]):
                worst = (share, str(counts.idxmax()))
        if worst is None:
            return moved
        assignment[worst[1]] = "train"
        moved.append(worst[1])


def patient_shares(splits: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per split: the largest share of its images held by one patient, and how many images."""
    out: dict[str, dict[str, Any]] = {}
    for name in SPLITS:
        counts = splits.loc[splits["split"] == name, "patient"].value_counts()
        if counts.empty:
            out[name] = {"max_patient_share": None, "max_patient_images": 0}
            continue
        out[name] = {
            "max_patient_share": round(float(counts.iloc[0]) / float(counts.sum()), 4),
            "max_patient_images": int(counts.iloc[0]),
        }
    return out


def _counts(values: pd.Series) -> dict[str, int]:
    filled = values.fillna("").astype(str).replace("", "unknown")
    return {str(k): int(v) for k, v in sorted(filled.value_counts().items())}


KNOWN_SEXES = ("M", "F", "O")


def _mode(values: pd.Series) -> str:
    """The most frequent value (ties: the alphabetically first)."""
    counts = values.value_counts()
    return str(min(counts.index[counts == counts.max()]))


def patient_demographics(part: pd.DataFrame) -> dict[str, Any]:
    """Demographics with one record per **patient** (images of one patient are not independent
    people): the patient's sex is the most frequent known value (M/F/O) among their images (ties:
    alphabetical; U when none is known), their age the lowest known age (the earliest study;
    unknown when no image has one). ``patients_with_label`` counts the patients with at least one
    image of each label (a patient with both counts for both)."""
    patients = part["patient"].astype(str)
    sex_counts: dict[str, int] = {}
    if "sex" in part:
        sex = part["sex"].astype(object).where(part["sex"].notna(), "U").astype(str).str.upper()
        known = sex[sex.isin(KNOWN_SEXES)]
        per_patient = known.groupby(patients[known.index]).agg(_mode).reindex(patients.unique(), fill_value="U")
        sex_counts = {str(k): int(v) for k, v in sorted(per_patient.value_counts().items())}
    ages = pd.to_numeric(part["age"], errors="coerce") if "age" in part else pd.Series(np.nan, index=part.index)
    age = ages.groupby(patients).min().dropna()
    labels = part.groupby("label")["patient"].nunique()
    return {
        "patients": int(patients.nunique()),
        "patients_with_label": {str(k): int(v) for k, v in sorted(labels.items())},
        "sex": sex_counts,
        "age_mean": round(float(age.mean()), 2) if len(age) else None,
        "age_sd": round(float(age.std(ddof=1)), 2) if len(age) > 1 else None,
        "age_min": round(float(age.min()), 2) if len(age) else None,
        "age_max": round(float(age.max()), 2) if len(age) else None,
        "age_unknown": int(patients.nunique() - len(age)),
    }


def split_report(splits: pd.DataFrame, manifest: pd.DataFrame, **settings: Any) -> dict[str, Any]:
    """Per split: patients, images, the largest patient's share of the images, image counts per
    label, sex and view, and the same demographics per patient (:func:`patient_demographics`);
    plus checks (incl. the patients forced to train, from
    ``splits.attrs["forced_to_train"]`` when :func:`make_splits` made it)."""
    assert_patient_disjoint(splits)
    merged = splits.merge(manifest.drop(columns=["patient", "label"]), on="row", how="left")
    report: dict[str, Any] = {"settings": settings}
    parts = [(name, merged[merged["split"] == name]) for name in SPLITS]
    external = merged[merged["split"] == EXTERNAL]
    # One block per external set, keyed external/<name> as in evaluation.json.
    for source in sorted(external["source"].astype(str).unique()) if "source" in external else []:
        parts.append((f"{EXTERNAL}/{source}", external[external["source"].astype(str) == source]))
    shares = patient_shares(splits)
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
            **shares.get(name, {}),
            "per_patient": patient_demographics(part),
        }
    internal_patients = set(merged.loc[merged["split"].isin(SPLITS), "patient"])
    external_patients = set(external["patient"])
    report["checks"] = {
        "patient_disjoint": True,  # assert_patient_disjoint above raised otherwise
        # Patients kept in train by split.max_patient_share (counted, never dropped).
        "patients_forced_to_train": len(splits.attrs.get("forced_to_train", [])),
        "max_patient_share": {k: v["max_patient_share"] for k, v in shares.items()},
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
    "patient_demographics",
    "patient_majority_labels",
    "patient_shares",
    "split_report",
]
