"""pipeline.evaluation and the evaluate stage on synthetic predictions + manifest."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import clustered as CL
from pipeline import metrics as M
from pipeline.common import write_json
from pipeline.contracts import Evaluation
from pipeline.evaluation import (
    FLAT_KEYS,
    EvaluationError,
    comparison_notes,
    evaluate_predictions,
    separation,
)
from pipeline.params import REPO_ROOT, validate_params

SIGNAL = {"linear": 1.5, "finetune": 2.5, "scratch": 0.3}


def _params(**evaluate):
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["evaluate"].update({"bootstrap_samples": 200, "min_subgroup_size": 30, **evaluate})
    raw["data"]["external"] = [{"name": "external", "dicom_dir": "x", "labels_csv": "y"}]
    return raw


def _make(classes=("normal", "abnormal"), n_patients=240, seed=0, external=True):
    """Manifest + predictions: 1-3 images per patient, patient-level splits."""
    rng = np.random.default_rng(seed)
    per = rng.integers(1, 4, n_patients)
    patient = np.repeat(np.arange(n_patients), per)
    n = len(patient)
    k = len(classes)
    lab_pat = rng.integers(0, k, n_patients)
    label = lab_pat[patient]
    split_pat = rng.choice(
        ["train", "val", "test", "external"] if external else ["train", "val", "test"],
        size=n_patients,
        p=[0.4, 0.2, 0.2, 0.2] if external else [0.5, 0.25, 0.25],
    )
    sex_pat = rng.choice(["M", "F", "U"], size=n_patients, p=[0.48, 0.48, 0.04])
    sex_pat[np.flatnonzero(split_pat == "test")[:4]] = "O"  # a small subgroup to be flagged
    age_pat = np.where(rng.uniform(size=n_patients) < 0.05, np.nan, rng.uniform(18, 95, n_patients))
    manifest = pd.DataFrame(
        {
            "row": np.arange(n),
            "file": [f"img{i:04d}.dcm" for i in range(n)],
            "source": np.where(split_pat[patient] == "external", "external", "internal"),
            "patient": [f"{p:016x}" for p in patient],
            "label": np.array(classes)[label],
            "sex": sex_pat[patient],
            "age": age_pat[patient],
            "view": rng.choice(["PA", "AP", ""], size=n, p=[0.6, 0.35, 0.05]),
            "modality": "DX",
        }
    )
    preds = {}
    for name, sig in SIGNAL.items():
        logits = rng.normal(size=(n, k))
        logits[np.arange(n), label] += sig
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        df = pd.DataFrame(
            {"row": np.arange(n), "file": manifest["file"], "split": split_pat[patient], "label": manifest["label"]}
        )
        for j, c in enumerate(classes):
            df[f"prob_{c}"] = probs[:, j]
        for j, c in enumerate(classes):
            df[f"raw_prob_{c}"] = probs[:, j]  # calibration is the identity here
        preds[name] = df
    return manifest, preds


@pytest.fixture(scope="module")
def binary_result():
    manifest, preds = _make()
    params = validate_params(_params())
    metrics, evaluation = evaluate_predictions(preds, manifest, params)
    return manifest, preds, params, metrics, evaluation


def test_flat_metrics_contract(binary_result):
    manifest, preds, _, metrics, _ = binary_result
    assert list(metrics) == ["linear", "finetune", "scratch"]
    for name, per_split in metrics.items():
        assert list(per_split) == ["test", "external/external"]
        for split, m in per_split.items():
            assert list(m) == list(FLAT_KEYS)
            assert all(isinstance(v, (int, float)) for v in m.values()), (name, split, m)
            sel = preds[name]["split"] == split.split("/")[0]  # "external/external": split external
            assert m["n"] == int(sel.sum())
            assert m["n_positive"] == int((preds[name].loc[sel, "label"] == "abnormal").sum())
            assert m["auroc_ci_low"] < m["auroc"] < m["auroc_ci_high"]
            assert m["auroc_boot_ci_low"] < m["auroc"] < m["auroc_boot_ci_high"]
    assert metrics["finetune"]["test"]["auroc"] > metrics["scratch"]["test"]["auroc"]


def test_threshold_from_val_only(binary_result):
    manifest, preds, params, metrics, evaluation = binary_result
    val = preds["linear"][preds["linear"]["split"] == "val"]
    expected = M.choose_threshold(val["label"] == "abnormal", val["prob_abnormal"], "youden")
    op = evaluation["results"]["linear"]["operating_point"]
    assert op["chosen_on"] == "val" and op["threshold"] == pytest.approx(expected)
    assert metrics["linear"]["test"]["threshold"] == pytest.approx(expected)
    assert op["val"]["n"] == len(val)
    # scrambling the test scores changes the test numbers, never the threshold
    changed = {k: v.copy() for k, v in preds.items()}
    test = changed["linear"]["split"] == "test"
    p = np.random.default_rng(9).uniform(size=int(test.sum()))
    changed["linear"].loc[test, "prob_abnormal"] = p
    changed["linear"].loc[test, "prob_normal"] = 1 - p
    m2, e2 = evaluate_predictions(changed, manifest, params)
    assert m2["linear"]["test"]["threshold"] == metrics["linear"]["test"]["threshold"]
    assert m2["linear"]["test"]["auroc"] != metrics["linear"]["test"]["auroc"]


def test_evaluation_document(binary_result, tmp_path):
    manifest, preds, params, metrics, ev = binary_result
    assert ev["splits"] == ["test", "external/external"] and ev["paths"] == list(SIGNAL)
    blk = ev["results"]["finetune"]["splits"]["test"]
    c = blk["at_threshold"]["confusion"]
    assert c["tn"] + c["fp"] + c["fn"] + c["tp"] == blk["n"]
    assert blk["at_threshold"]["sensitivity"]["k"] == c["tp"]
    assert blk["auroc_bootstrap"]["n_boot"] + blk["auroc_bootstrap"]["skipped_single_class"] == 200
    assert blk["auroc_bootstrap"]["n_groups"] == blk["n_patients"] < blk["n"]
    assert len(blk["calibration"]["bins"]) == params.evaluate.calibration_bins
    roc = blk["curves"]["roc"][0]
    assert roc["class"] == "abnormal" and roc["fpr"][0] == 0 and roc["tpr"][-1] == 1
    attrs = {(r["attribute"], r["group"]) for r in blk["subgroups"]}
    assert {("sex", "M"), ("sex", "F"), ("view", "PA"), ("view", "unknown")} <= attrs
    assert any(a == "age_band" and g == "[60, 120]" for a, g in attrs)
    sex_o = next(r for r in blk["subgroups"] if r["group"] == "O" and r["attribute"] == "sex")
    assert sex_o["flagged"] and any("fewer than 30" in f for f in sex_o["flags"])
    assert 4 <= sex_o["n"] <= 12 and sex_o["n_patients"] == 4
    big = [r for r in blk["subgroups"] if r["n"] >= 30 and r["n_positive"] not in (0, r["n"])]
    assert big and not any(r["flagged"] for r in big)
    assert sum(r["n"] for r in blk["subgroups"] if r["attribute"] == "view") == blk["n"]
    for split in ("test", "external/external"):
        pairs = [(r["path_a"], r["path_b"]) for r in ev["comparisons"][split]]
        assert pairs == [("linear", "finetune"), ("linear", "scratch"), ("finetune", "scratch")]
    cmp = ev["comparisons"]["test"][1]
    assert cmp["difference"] == pytest.approx(cmp["auroc_a"] - cmp["auroc_b"])
    assert cmp["p_value"] < 0.05  # linear (signal 1.5) vs scratch (0.3)
    out = write_json(tmp_path / "e.json", ev)  # serialisable, NaN-free
    assert json.loads(out.read_text())["schema_version"] == 3
    assert cmp["unit"] == "patient" and "Obuchowski" in cmp["method"]
    assert cmp["verdict"] == "linear higher" and cmp["n_patients"] == blk["n_patients"]
    # The reported interval is the envelope of the two patient-level methods.
    w, b = cmp["clustered_delong"], cmp["bootstrap"]
    assert b["ci_low"] > 0 and w["ci_low"] > 0 and b["n_boot"] == 200
    assert cmp["ci_low"] == pytest.approx(min(w["ci_low"], b["ci_low"]))
    assert cmp["ci_high"] == pytest.approx(max(w["ci_high"], b["ci_high"]))
    assert cmp["p_value"] == pytest.approx(max(w["p_value"], b["p_value"]))
    assert ev["unit_of_uncertainty"] == "patient" and "Obuchowski" in ev["definitions"]["auroc_ci"]


def test_intervals_are_patient_level_and_image_level_is_kept_for_reference(binary_result):
    manifest, preds, params, metrics, ev = binary_result
    df = preds["finetune"].merge(manifest[["row", "patient"]], on="row")
    test = df[df["split"] == "test"]
    y, s, pat = (test["label"] == "abnormal").to_numpy(), test["prob_abnormal"].to_numpy(), test["patient"].to_numpy()
    auc, lo, hi, _ = CL.clustered_auc_ci(y, s, pat)
    _, ilo, ihi, _ = M.delong_auc_ci(y, s)
    m = metrics["finetune"]["test"]
    # The patient-level interval: envelope of clustered DeLong and the patient bootstrap.
    assert m["auroc"] == pytest.approx(auc)
    assert m["auroc_ci_low"] == pytest.approx(min(lo, m["auroc_boot_ci_low"]))
    assert m["auroc_ci_high"] == pytest.approx(max(hi, m["auroc_boot_ci_high"]))
    blk0 = ev["results"]["finetune"]["splits"]["test"]["auroc"]["clustered_delong"]
    assert (blk0["ci_low"], blk0["ci_high"]) == pytest.approx((lo, hi))
    assert (m["auroc_image_ci_low"], m["auroc_image_ci_high"]) == pytest.approx((ilo, ihi))
    assert m["auroc_patient_weighted"] == pytest.approx(CL.patient_weighted_auc(y, s, pat))
    assert m["n_patients"] == len(set(pat)) < m["n"]
    blk = ev["results"]["finetune"]["splits"]["test"]
    assert blk["auroc"]["unit"] == "patient" and blk["auroc_image"]["unit"] == "image"
    sens = blk["at_threshold"]["sensitivity"]
    assert sens["n_patients"] == len(set(pat[y])) and sens["design_effect"] >= 1
    assert m["prevalence"] == pytest.approx(y.mean())
    assert blk["at_threshold"]["ppv"]["prevalence_source"] == "sample"


def test_prevalence_setting_recomputes_ppv_npv_by_bayes():
    manifest, preds = _make(seed=5)
    params = validate_params(_params(prevalence=0.1))
    metrics, ev = evaluate_predictions(preds, manifest, params)
    m = metrics["finetune"]["test"]
    sens, spec = m["sensitivity"], m["specificity"]
    assert m["prevalence"] == 0.1
    assert m["ppv"] == pytest.approx(0.1 * sens / (0.1 * sens + 0.9 * (1 - spec)))
    assert m["npv"] == pytest.approx(0.9 * spec / (0.9 * spec + 0.1 * (1 - sens)))
    at = ev["results"]["finetune"]["splits"]["test"]["at_threshold"]
    assert at["ppv"]["prevalence_source"] == "evaluate.prevalence"
    c = at["confusion"]
    assert at["ppv_sample"]["prevalence"] == pytest.approx((c["tp"] + c["fn"]) / at["n"])
    assert at["ppv_sample"]["value"] == pytest.approx(c["tp"] / (c["tp"] + c["fp"]))
    assert at["ppv_sample"]["prevalence_source"] == "sample"
    assert ev["settings"]["prevalence"] == 0.1


def test_sensitivity_operating_point():
    manifest, preds = _make(seed=3)
    params = validate_params(_params(operating_point="sensitivity", target_sensitivity=0.9))
    metrics, ev = evaluate_predictions({"linear": preds["linear"]}, manifest, params)
    val_sens = ev["results"]["linear"]["operating_point"]["val"]["sensitivity"]["value"]
    assert val_sens >= 0.9
    assert list(metrics) == ["linear"] and ev["comparisons"]["test"] == []


def test_multiclass_ovr_macro(multiclass_result):
    classes, manifest, preds, params, metrics, ev = multiclass_result
    m = metrics["finetune"]["test"]
    assert {"auroc_normal", "auroc_pneumonia", "auroc_effusion"} <= set(m)
    assert m["auroc"] == pytest.approx(np.mean([m[f"auroc_{c}"] for c in classes]))
    assert m["sensitivity"] is None and m["n_positive"] is None
    blk = ev["results"]["finetune"]["splits"]["test"]
    assert blk["calibration"]["kind"] == "top_label"
    assert [c["class"] for c in blk["curves"]["roc"]] == list(classes)
    assert ev["results"]["finetune"]["operating_point"] is None
    assert any("positive_class" in n for n in ev["notes"])
    # with a positive class the binary threshold metrics come back (that class vs rest)
    pneumonia = params.model_copy(update={"data": params.data.model_copy(update={"positive_class": "pneumonia"})})
    metrics2, ev2 = evaluate_predictions(preds, manifest, pneumonia)
    assert metrics2["finetune"]["test"]["sensitivity"] is not None
    assert metrics2["finetune"]["test"]["auroc"] == pytest.approx(m["auroc"])


def test_bad_inputs_are_clear_errors():
    manifest, preds = _make(n_patients=60, external=False)
    params = validate_params(_params())
    with pytest.raises(EvaluationError, match="no prediction files"):
        evaluate_predictions({}, manifest, params)
    short = {"linear": preds["linear"].iloc[5:]}
    with pytest.raises(EvaluationError, match="5 manifest rows have no prediction"):
        evaluate_predictions(short, manifest, params)
    wrong = {"linear": preds["linear"].assign(label="normal")}
    with pytest.raises(EvaluationError, match="labels differ from the manifest"):
        evaluate_predictions(wrong, manifest, params)
    # external configured in params but no external rows: evaluated on test only, with a note
    metrics, ev = evaluate_predictions({"linear": preds["linear"]}, manifest, params)
    assert ev["splits"] == ["test"] and any("no rows of it" in n for n in ev["notes"])


def test_a_dominant_patient_and_a_disagreeing_bootstrap_are_noted():
    manifest, preds = _make(seed=6)
    test_rows = preds["linear"].loc[preds["linear"]["split"] == "test", "row"].to_numpy()
    manifest.loc[manifest["row"].isin(test_rows[:40]), "patient"] = "dominant"
    metrics, ev = evaluate_predictions(preds, manifest, validate_params(_params()))
    blk = ev["results"]["linear"]["splits"]["test"]
    assert blk["largest_patient_share"] == pytest.approx(40 / blk["n"])
    assert any(n.startswith("test: one patient holds") for n in ev["notes"])
    assert not any(n.startswith("external/external: one patient") for n in ev["notes"])
    rows = [
        {
            "path_a": "a",
            "path_b": "b",
            "verdict": "not separated",
            "clustered_delong": {"ci_low": 0.01, "ci_high": 0.1},
            "bootstrap": {"ci_low": -0.01, "ci_high": 0.2},
        },
        {
            "path_a": "a",
            "path_b": "c",
            "verdict": "not separated",
            "clustered_delong": {"ci_low": -0.01, "ci_high": 0.1},
            "bootstrap": {"ci_low": -0.01, "ci_high": 0.2},
        },
    ]
    notes = comparison_notes("test", rows)
    assert len(notes) == 1 and "a vs b" in notes[0] and "says 'a higher'" in notes[0]
    assert separation(0.01, 0.2, "a", "b") == "a higher"
    assert separation(-0.3, -0.01, "a", "b") == "b higher"
    assert separation(-0.1, 0.1) == "not separated"
    assert separation(float("nan"), 0.1) == "undefined"


def test_every_pair_is_compared_on_val_and_each_split_and_val_auroc_is_patient_level(tmp_path):
    """The recommendation chooses on validation: every method's val AUROC and every pair on val
    (a variant beside the main three), with the same patient-level methods as on test."""
    manifest, preds = _make(seed=11)
    variant = preds["finetune"].copy()
    variant["prob_abnormal"] = (variant["prob_abnormal"] * 0.5 + 0.25).clip(0, 1)
    variant["prob_normal"] = 1 - variant["prob_abnormal"]
    preds["knn"] = variant
    params = validate_params(_params())
    _, ev = evaluate_predictions(preds, manifest, params)
    names = ["linear", "finetune", "scratch", "knn"]
    assert ev["paths"] == names and list(ev["comparisons"]) == ["val", "test", "external/external"]
    expected = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    for split, rows in ev["comparisons"].items():
        assert [(r["path_a"], r["path_b"]) for r in rows] == expected, split
    df = preds["scratch"].merge(manifest[["row", "patient"]], on="row")
    val = df[df["split"] == "val"]
    y, s, pat = (val["label"] == "abnormal").to_numpy(), val["prob_abnormal"].to_numpy(), val["patient"].to_numpy()
    auc, lo, hi, _ = CL.clustered_auc_ci(y, s, pat)
    block = ev["results"]["scratch"]["validation"]
    assert block["n"] == len(val) and block["n_patients"] == len(set(pat))
    a = block["auroc"]
    assert a["value"] == pytest.approx(auc) and a["unit"] == "patient"
    assert (a["clustered_delong"]["ci_low"], a["clustered_delong"]["ci_high"]) == pytest.approx((lo, hi))
    assert a["ci_low"] <= lo and a["ci_high"] >= hi  # the envelope with the patient bootstrap
    cmp = next(r for r in ev["comparisons"]["val"] if (r["path_a"], r["path_b"]) == ("finetune", "scratch"))
    s_ft = preds["finetune"].set_index("row").loc[val["row"], "prob_abnormal"].to_numpy()
    want = CL.paired_comparison(y, s_ft, s, pat, 200, params.seed)
    assert cmp["difference"] == pytest.approx(want["difference"]) and cmp["ci_low"] == pytest.approx(want["ci_low"])
    assert cmp["verdict"] == separation(cmp["ci_low"], cmp["ci_high"], "finetune", "scratch")
    Evaluation.model_validate(json.loads(write_json(tmp_path / "e.json", ev).read_text()))


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _logit(p):
    return np.log(p) - np.log1p(-p)


def test_binary_auroc_is_the_raw_one_thresholds_and_calibration_use_prob(binary_result):
    manifest, preds, params, metrics, ev = binary_result
    cal = {k: v.copy() for k, v in preds.items()}
    p = _sigmoid(3.0 * _logit(cal["linear"]["raw_prob_abnormal"]) - 0.5)  # an increasing sigmoid
    cal["linear"]["prob_abnormal"], cal["linear"]["prob_normal"] = p, 1 - p
    m2, e2 = evaluate_predictions(cal, manifest, params)
    for split in ("test", "external/external"):
        a, b = metrics["linear"][split], m2["linear"][split]
        assert b["auroc"] == pytest.approx(a["auroc"], abs=1e-12)
        assert (b["auroc_ci_low"], b["auroc_ci_high"]) == pytest.approx((a["auroc_ci_low"], a["auroc_ci_high"]))
        assert b["brier"] != pytest.approx(a["brier"])
    val = cal["linear"][cal["linear"]["split"] == "val"]
    thr = M.choose_threshold(val["label"] == "abnormal", val["prob_abnormal"], "youden")
    assert m2["linear"]["test"]["threshold"] == pytest.approx(thr) != metrics["linear"]["test"]["threshold"]
    # the same images fall on either side of the threshold (an increasing map of the scores)
    assert m2["linear"]["test"]["sensitivity"] == pytest.approx(metrics["linear"]["test"]["sensitivity"])
    cmp_a, cmp_b = ev["comparisons"]["test"][0], e2["comparisons"]["test"][0]
    assert cmp_b["difference"] == pytest.approx(cmp_a["difference"])


@pytest.fixture(scope="module")
def multiclass_result():
    classes = ("normal", "pneumonia", "effusion")
    manifest, preds = _make(classes=classes, seed=1)
    raw = _params()
    raw["data"].update(classes=list(classes), positive_class=None)
    params = validate_params(raw)
    return classes, manifest, preds, params, *evaluate_predictions(preds, manifest, params)


def test_multiclass_discrimination_uses_raw_probabilities(multiclass_result):
    classes, manifest, preds, params, metrics, ev = multiclass_result
    scrambled = {k: v.copy() for k, v in preds.items()}
    d = np.random.default_rng(2).dirichlet([1, 1, 1], len(scrambled["finetune"]))
    scrambled["finetune"][[f"prob_{c}" for c in classes]] = d
    m2, e2 = evaluate_predictions(scrambled, manifest, params)
    for key in ("auroc", "auroc_ci_low", *(f"auroc_{c}" for c in classes)):
        assert m2["finetune"]["test"][key] == pytest.approx(metrics["finetune"]["test"][key])
    assert m2["finetune"]["test"]["ece"] != pytest.approx(metrics["finetune"]["test"]["ece"])
    assert e2["comparisons"]["test"][0]["difference"] == pytest.approx(ev["comparisons"]["test"][0]["difference"])


def test_fit_checks_flag_near_constant_and_unfitted_methods():
    from pipeline.calibration import calibrate_on_val
    from pipeline.contracts import Evaluation

    manifest, preds = _make(seed=4)
    base = preds["finetune"]
    y = (base["label"] == "abnormal").to_numpy()
    ranked = base["raw_prob_abnormal"].to_numpy()
    flat = base.copy()  # ranks like finetune, but every raw probability within 0.5 +- 0.005
    fp = 0.5 + 0.01 * (ranked - 0.5)
    flat["raw_prob_abnormal"], flat["raw_prob_normal"] = fp, 1 - fp
    noise = base.copy()  # never learnt: raw probabilities unrelated to the label
    npb = np.random.default_rng(7).uniform(0.05, 0.95, len(base))
    noise["raw_prob_abnormal"], noise["raw_prob_normal"] = npb, 1 - npb
    for df, p in ((flat, fp), (noise, npb)):
        df["prob_abnormal"], df["prob_normal"] = p, 1 - p
    cal = {}
    for name, df in (("finetune", base), ("flat", flat), ("noise", noise)):
        probs = df[["raw_prob_normal", "raw_prob_abnormal"]].to_numpy()
        _, cal[name] = calibrate_on_val(
            probs, y.astype(int), (df["split"] == "val").to_numpy(), df["row"].to_numpy(), ("normal", "abnormal")
        )
    params = validate_params(_params(near_constant_iqr=0.02, fitted_train_auroc=0.7))
    _, ev = evaluate_predictions({"finetune": base, "flat": flat, "noise": noise}, manifest, params, cal)
    Evaluation.model_validate(ev)
    res = ev["results"]
    good, fl, no = res["finetune"]["fit"], res["flat"]["fit"], res["noise"]["fit"]
    train = base["split"] == "train"
    assert good["n_train"] == int(train.sum()) and good["fitted"] and good["train_auroc"] > 0.8
    assert good["near_constant"] is False and good["near_constant_splits"] == []
    assert fl["fitted"] and fl["train_auroc"] == pytest.approx(good["train_auroc"])
    assert fl["near_constant"] and fl["near_constant_splits"] == ["val", "test"]
    val_fp = fp[(base["split"] == "val").to_numpy()]
    q25, q75 = np.percentile(val_fp, [25, 75])
    sp = fl["raw_spread"]["val"]
    assert sp["class"] == "abnormal" and sp["iqr"] == pytest.approx(q75 - q25) and sp["iqr"] < 0.02
    assert sp["range"] == pytest.approx(val_fp.max() - val_fp.min()) and sp["n"] == len(val_fp)
    assert no["fitted"] is False and no["train_auroc"] < 0.6 and no["near_constant"] is False
    assert any(n.startswith("noise: did not fit its training data") for n in ev["notes"])
    assert any(n.startswith("flat: near-constant outputs") for n in ev["notes"])
    assert not any(n.startswith("finetune: did not fit") or n.startswith("finetune: near") for n in ev["notes"])
    assert ev["settings"]["near_constant_iqr"] == 0.02 and ev["settings"]["fitted_train_auroc"] == 0.7
    vc = res["finetune"]["val_calibration"]
    assert vc["fitted_on"] == "val" and vc["n_val_images"] == int((base["split"] == "val").sum())
    # a stricter fitted threshold flips the verdict of a method that did fit
    _, ev2 = evaluate_predictions({"finetune": base}, manifest, validate_params(_params(fitted_train_auroc=0.999)))
    assert (
        ev2["results"]["finetune"]["fit"]["fitted"] is False and ev2["results"]["finetune"]["val_calibration"] is None
    )


def test_missing_raw_columns_are_a_contract_error():
    manifest, preds = _make(n_patients=60, external=False)
    old = {"linear": preds["linear"].drop(columns=["raw_prob_normal", "raw_prob_abnormal"])}
    with pytest.raises(EvaluationError, match="raw_prob_normal"):
        evaluate_predictions(old, manifest, validate_params(_params()))
