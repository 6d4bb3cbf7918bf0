"""The report's answer follows the paired patient-level numbers: words only when a CI says so."""

from __future__ import annotations

from pipeline.report.answer import answer, method_flags


def _ev(
    diffs: dict[tuple[str, str], tuple[float, float, float]],
    share: float = 0.05,
    aurocs: dict[str, tuple[float, float, float]] | None = None,
) -> dict:
    aurocs = aurocs or {"linear": (0.8, 0.7, 0.9), "finetune": (0.85, 0.75, 0.95), "scratch": (0.6, 0.5, 0.7)}
    results = {
        m: {"splits": {"test": {"auroc": {"value": v, "ci_low": lo, "ci_high": hi}, "largest_patient_share": share}}}
        for m, (v, lo, hi) in aurocs.items()
    }
    comps = [
        {
            "path_a": a,
            "path_b": b,
            "difference": d,
            "ci_low": lo,
            "ci_high": hi,
            "verdict": "higher" if lo > 0 else "lower" if hi < 0 else "not separated",
        }
        for (a, b), (d, lo, hi) in diffs.items()
    ]
    return {"splits": ["test"], "results": results, "comparisons": {"test": comps}}


SEPARATED = {
    ("linear", "finetune"): (-0.05, -0.10, -0.01),
    ("linear", "scratch"): (0.2, 0.1, 0.3),
    ("finetune", "scratch"): (0.25, 0.15, 0.35),
}


def test_helps_and_best_only_when_separated() -> None:
    a = answer(_ev(SEPARATED), {}, None, {"test": "test split"})[0]
    text = " ".join(a["sentences"])
    assert "Pretraining helps with linear" in text and "Pretraining helps with finetune" in text
    assert "Best method here: finetune" in text and a["warnings"] == []


def test_not_separated_says_so_and_names_no_best() -> None:
    diffs = {k: (d, -0.05, 0.3) for k, (d, _, _) in SEPARATED.items()}
    text = " ".join(answer(_ev(diffs), {}, None, {"test": "test split"})[0]["sentences"])
    assert "helps" not in text and "linear vs scratch: not separated" in text
    assert "do not pick a best one" in text


def test_a_baseline_that_did_not_learn_is_not_compared() -> None:
    logs = {"scratch": {"fit_check": {"fits": False, "train_auroc_max": 0.55}}}
    a = answer(_ev(SEPARATED), logs, None, {"test": "test split"})[0]
    text = " ".join(a["sentences"])
    assert "cannot be answered" in text and "Pretraining helps with" not in text
    assert any("scratch: did not fit" in w for w in a["warnings"])


def test_dominant_patient_below_chance_and_near_constant_are_warned() -> None:
    aurocs = {"linear": (0.3, 0.2, 0.45), "finetune": (0.85, 0.75, 0.95), "scratch": (0.6, 0.5, 0.7)}
    logs = {"linear": {"fit_check": {"fits": True, "near_constant": True}}}
    a = answer(_ev(SEPARATED, share=0.58, aurocs=aurocs), logs, None, {"test": "test split"})[0]
    w = " ".join(a["warnings"])
    assert "One patient holds 58%" in w and "below chance" in w and "near-constant" in w
    assert "Best method here: finetune" in " ".join(a["sentences"])  # linear flagged, not ranked


def test_never_learned_from_the_diagnostics_verdict() -> None:
    flags = method_flags({"scratch": {}}, {"verdicts": {"scratch": {"text": "Did not learn: best val AUROC 0.53"}}})
    assert flags == {"scratch": ["never left chance on validation"]}
