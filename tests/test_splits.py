"""pipeline.splits: patient-level, stratified, seeded; the leak assertion fires on a leak."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.splits import (
    PatientLeakError,
    SplitError,
    assert_patient_disjoint,
    make_splits,
    patient_majority_labels,
    split_report,
)


def manifest(n_patients: int = 60, n_external: int = 5, seed: int = 0) -> pd.DataFrame:
    """Patients with 1-6 images; label mostly constant per patient; a few external rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = "abnormal" if p % 3 == 0 else "normal"
        for _ in range(int(rng.integers(1, 7))):
            flip = rng.random() < 0.1
            rows.append(
                {
                    "patient": f"{p:016x}",
                    "label": ("normal" if label == "abnormal" else "abnormal") if flip else label,
                    "source": "internal",
                    "sex": "MF"[p % 2],
                    "view": "PA" if p % 4 else "",
                    "age": 30 + p,
                }
            )
    for e in range(n_external):
        rows.append(
            {
                "patient": f"e{e:015x}",
                "label": "normal" if e % 2 else "abnormal",
                "source": "external",
                "sex": "U",
                "view": "AP",
                "age": np.nan,
            }
        )
    df = pd.DataFrame(rows)
    df.insert(0, "row", range(len(df)))
    return df


def test_split_is_patient_disjoint_stratified_and_seeded() -> None:
    m = manifest()
    s = make_splits(m, val_fraction=0.15, test_fraction=0.15, seed=7, classes=["normal", "abnormal"])
    assert list(s.columns) == ["row", "patient", "label", "split"]
    assert s["row"].tolist() == m["row"].tolist()
    assert s.loc[m["source"] == "external", "split"].eq("external").all()
    internal = s[s["split"] != "external"]
    assert internal.groupby("patient")["split"].nunique().max() == 1
    per_split = internal.groupby("split")["patient"].nunique()
    assert per_split["test"] == 9 and per_split["val"] == 9 and per_split["train"] == 42  # of 60 patients
    # stratified by majority label: 1/3 of the patients are "abnormal" in every split
    majority = patient_majority_labels(m[m["source"] == "internal"], ["normal", "abnormal"])
    for name in ("train", "val", "test"):
        pats = internal.loc[internal["split"] == name, "patient"].unique()
        share = (majority.loc[pats] == "abnormal").mean()
        assert abs(share - 1 / 3) < 0.1, (name, share)
    again = make_splits(m, val_fraction=0.15, test_fraction=0.15, seed=7, classes=["normal", "abnormal"])
    assert again.equals(s)
    other = make_splits(m, val_fraction=0.15, test_fraction=0.15, seed=8, classes=["normal", "abnormal"])
    assert not other["split"].equals(s["split"])


def test_leak_assertion_fires() -> None:
    m = manifest(20)
    s = make_splits(m, val_fraction=0.2, test_fraction=0.2, seed=0)
    leaked = s.copy()
    patient = leaked.loc[leaked["split"] == "train", "patient"].iloc[0]
    idx = leaked.index[leaked["patient"] == patient]
    assert len(idx) >= 1
    # move one image of a train patient to test: same patient in two splits
    extra = leaked.loc[idx[:1]].assign(split="test", row=len(leaked))
    leaked = pd.concat([leaked, extra], ignore_index=True)
    with pytest.raises(PatientLeakError, match="1 patient"):
        assert_patient_disjoint(leaked)
    with pytest.raises(PatientLeakError):
        split_report(leaked, pd.concat([m, m.iloc[idx[:1]].assign(row=len(m))], ignore_index=True))
    # external rows sharing a pseudonym with train are not a train/val/test leak
    ok = s.copy()
    ok.loc[ok["split"] == "external", "patient"] = patient
    assert_patient_disjoint(ok)


def test_report_counts() -> None:
    m = manifest()
    s = make_splits(m, val_fraction=0.15, test_fraction=0.15, seed=1)
    r = split_report(s, m, seed=1)
    assert sum(r[x]["images"] for x in ("train", "val", "test", "external/external")) == len(m)
    assert sum(r[x]["patients"] for x in ("train", "val", "test")) == 60
    for name in ("train", "val", "test", "external/external"):
        block = r[name]
        assert (
            sum(block["labels"].values())
            == sum(block["sex"].values())
            == sum(block["view"].values())
            == block["images"]
        )
    assert "unknown" in r["train"]["view"]  # empty view counted, not dropped
    assert r["external/external"]["age_mean"] is None and r["external/external"]["age_unknown"] == 5
    checks = r["checks"]
    assert {k: checks[k] for k in ("patient_disjoint", "external_patients_also_internal")} == {
        "patient_disjoint": True,
        "external_patients_also_internal": 0,
    }
    assert checks["patients_forced_to_train"] == 0  # make_splits' default share 1.0 forces none
    assert set(checks["max_patient_share"]) == {"train", "val", "test"}
    assert r["settings"] == {"seed": 1}


def test_majority_label_ties_go_to_the_first_class() -> None:
    m = pd.DataFrame({"patient": ["a", "a", "b"], "label": ["abnormal", "normal", "abnormal"]})
    assert patient_majority_labels(m, ["normal", "abnormal"]).to_dict() == {"a": "normal", "b": "abnormal"}
    assert patient_majority_labels(m, ["abnormal", "normal"]).to_dict() == {"a": "abnormal", "b": "abnormal"}


def test_too_few_patients_is_a_clear_error() -> None:
    m = manifest(4, n_external=0)
    with pytest.raises(SplitError, match="cannot draw a stratified test split .* from 4 patients"):
        make_splits(m, val_fraction=0.15, test_fraction=0.15, seed=0)
    with pytest.raises(SplitError, match="no internal rows"):
        make_splits(m.assign(source="external"), val_fraction=0.15, test_fraction=0.15, seed=0)


def test_image_shares_follow_the_fractions_despite_skewed_patients() -> None:
    """A few patients with many images must not leave the test split with a tiny image share."""
    rng = np.random.default_rng(3)
    rows = []
    for p in range(80):
        n = 40 if p < 6 else int(rng.integers(1, 4))  # 6 heavy patients hold most images
        rows += [{"patient": f"{p:016x}", "label": "abnormal" if p % 2 else "normal", "source": "internal"}] * n
    m = pd.DataFrame(rows)
    m.insert(0, "row", range(len(m)))
    s = make_splits(m, val_fraction=0.15, test_fraction=0.15, seed=42, classes=["normal", "abnormal"])
    shares = s["split"].value_counts(normalize=True)
    assert abs(shares["test"] - 0.15) < 0.05 and abs(shares["val"] - 0.15) < 0.05
    assert_patient_disjoint(s)


def test_no_patient_dominates_val_or_test_and_none_is_dropped() -> None:
    """One patient with 66 of ~800 images (the demo's case) is kept in train, by the share rule."""
    rng = np.random.default_rng(5)
    rows = []
    for p in range(300):
        n = 66 if p == 0 else int(rng.integers(1, 5))
        rows += [{"patient": f"{p:016x}", "label": "abnormal" if p % 2 else "normal", "source": "internal"}] * n
    m = pd.DataFrame(rows)
    m.insert(0, "row", range(len(m)))
    s = make_splits(
        m, val_fraction=0.15, test_fraction=0.15, seed=0, classes=["normal", "abnormal"], max_patient_share=0.10
    )
    assert len(s) == len(m)  # nothing dropped
    assert s.loc[s["patient"] == f"{0:016x}", "split"].eq("train").all()
    r = split_report(s, m)
    for name in ("val", "test"):
        counts = s.loc[s["split"] == name, "patient"].value_counts()
        assert counts.iloc[0] / counts.sum() <= 0.10
        assert r[name]["max_patient_share"] == pytest.approx(counts.iloc[0] / counts.sum(), abs=1e-4)
    assert r["checks"]["patients_forced_to_train"] == len(s.attrs["forced_to_train"])
    # Without the rule (share 1.0) nothing is forced.
    free = make_splits(m, val_fraction=0.15, test_fraction=0.15, seed=0, classes=["normal", "abnormal"])
    assert free.attrs["forced_to_train"] == []


def test_share_rule_moves_the_largest_patient_after_the_draw() -> None:
    from pipeline.splits import _enforce_share

    counts = pd.Series({"a": 5, "b": 1, "c": 1, "d": 1, "e": 3, "f": 1, "g": 1})
    assignment = {"a": "val", "b": "val", "c": "val", "d": "val", "e": "test", "f": "test", "g": "test"}
    moved = _enforce_share(assignment, counts, max_share=0.6)
    # val: a holds 5/8 > 0.6 -> train (3 patients stay); test: e holds 3/5 = 0.6, not above -> stays.
    assert moved == ["a"] and assignment["a"] == "train" and assignment["e"] == "test"
    # A split at the floor (ceil(1 / share) + 1 patients) keeps its patients: the rule cannot be met.
    tiny = {"x": "val", "y": "val"}
    assert _enforce_share(tiny, pd.Series({"x": 9, "y": 1}), max_share=0.6) == [] and tiny["x"] == "val"
    with pytest.raises(SplitError, match="max_patient_share"):
        make_splits(manifest(), val_fraction=0.15, test_fraction=0.15, seed=0, max_patient_share=0)


def test_patient_demographics_count_each_patient_once() -> None:
    from pipeline.splits import patient_demographics

    part = pd.DataFrame(
        {
            "patient": ["a", "a", "a", "b", "b", "c"],
            "sex": ["M", "M", "F", "U", None, "F"],
            "age": [60.0, 62.0, np.nan, np.nan, np.nan, 30.0],
            "label": ["x", "y", "x", "x", "x", "y"],
        }
    )
    got = patient_demographics(part)
    # a: M (2 of 3 images), age 60 (earliest study); b: no known sex or age; c: F, 30.
    assert got == {
        "patients": 3,
        "patients_with_label": {"x": 2, "y": 2},
        "sex": {"F": 1, "M": 1, "U": 1},
        "age_mean": 45.0,
        "age_sd": round(float(np.std([60.0, 30.0], ddof=1)), 2),
        "age_min": 30.0,
        "age_max": 60.0,
        "age_unknown": 1,
    }
