"""The answer at the top of the report, in plain words: does the pretrained backbone help here,
and which method is best, for the test split and each external set, with the warnings that
qualify it. Words follow numbers:

- "helps" / "is better" only when the paired, patient-level CI of the AUROC difference excludes
  0 (``comparisons[..].verdict``); otherwise "not separated";
- the best method is named only when it is separated from every other method on that split;
- a method whose training never left chance, whose outputs are near-constant, or whose AUROC CI
  lies below 0.5 is flagged and never called best;
- a split in which one patient holds more than ``MAX_PATIENT_SHARE`` of the images is flagged;
- with ``reports/recommendation.json`` (``recommendation=``), the answer starts with the
  recommended method, chosen on validation only, and each split's answer adds the recommended
  method's paired difference from the runner-up there (evidence, not a choice); which methods are
  flagged then comes from the recommendation's eligibility (``pipeline.recommendation
  .eligibility``), the one place it is decided.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.recommendation_text import choice_sentences, diff_text, evidence_sentences, verdict_words
from pipeline.report.recommendation import as_dict

PRETRAINED = ("linear", "finetune")
BASELINE = "scratch"
MAX_PATIENT_SHARE = 0.10
#: Raw positive-class probabilities whose interquartile range is below this are "near-constant".
NEAR_CONSTANT_IQR = 0.02


def _f(x: Any, nd: int = 2) -> str:
    return "n/a" if x is None else f"{float(x):.{nd}f}"


def _ci(block: Mapping[str, Any] | None) -> str:
    if not block:
        return "n/a"
    return f"{_f(block.get('value'))} (95% CI {_f(block.get('ci_low'))}–{_f(block.get('ci_high'))})"


def _comparison(ev: Mapping[str, Any], split: str, a: str, b: str) -> tuple[float, float, float, str] | None:
    """(a - b, ci_low, ci_high, verdict) from the paired comparisons, either order."""
    for c in (ev.get("comparisons") or {}).get(split) or []:
        if (c.get("path_a"), c.get("path_b")) == (a, b):
            return c["difference"], c["ci_low"], c["ci_high"], str(c.get("verdict") or "")
        if (c.get("path_a"), c.get("path_b")) == (b, a):
            return -c["difference"], -c["ci_high"], -c["ci_low"], str(c.get("verdict") or "")
    return None


def _separated(cmp: tuple[float, float, float, str] | None) -> int:
    """+1 when a is better (CI above 0), -1 when worse, 0 when not separated or unknown."""
    if cmp is None or cmp[1] is None or cmp[2] is None:
        return 0
    return 1 if cmp[1] > 0 else -1 if cmp[2] < 0 else 0


def method_flags(
    train_logs: Mapping[str, Any], diagnostics: Mapping[str, Any] | None, recommendation: Any = None
) -> dict[str, list[str]]:
    """Per method, why it may not be compared: did not learn, near-constant outputs. With a
    recommendation (dict or contract model), its eligibility flags, so the report and the
    recommendation flag the same methods for the same reasons."""
    rec = as_dict(recommendation)
    if rec is not None:
        return {m: list(e["flags"]) for m, e in rec["methods"].items() if not e["eligible"]}
    flags: dict[str, list[str]] = {}
    verdicts = (diagnostics or {}).get("verdicts") or {}
    for method, log in train_logs.items():
        out = []
        doc = log.model_dump() if hasattr(log, "model_dump") else dict(log or {})  # a contract model
        fit = doc.get("fit_check") or {}
        if fit.get("fits") is False:
            out.append(
                "did not fit its training data"
                + (f" (best train AUROC {_f(fit.get('train_auroc_max'))})" if fit.get("train_auroc_max") else "")
            )
        if fit.get("near_constant"):
            out.append("has near-constant outputs")
        text = str((verdicts.get(method) or {}).get("text") or "")
        if text.lower().startswith("did not learn") and not any("did not" in f for f in out):
            out.append("never left chance on validation")
        if out:
            flags[method] = out
    return flags


def split_answer(
    ev: Mapping[str, Any],
    split: str,
    title: str,
    flags: Mapping[str, list[str]],
    recommendation: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The answer for one evaluated split: sentences and warnings."""
    results = ev.get("results") or {}
    blocks: dict[str, Mapping[str, Any]] = {}
    for m in results:
        b = ((results.get(m) or {}).get("splits") or {}).get(split)
        if b:
            blocks[m] = b
    sentences: list[str] = []
    warnings: list[str] = []
    if not blocks:
        return {"split": split, "title": title, "sentences": [f"No results for {title}."], "warnings": []}
    aurocs = "; ".join(f"{m} {_ci(b.get('auroc'))}" for m, b in blocks.items())
    sentences.append(f"AUROC with patient-level 95% CIs: {aurocs}.")
    # Does pretraining help? Each pretrained method against scratch, paired on the same patients.
    if BASELINE in blocks and BASELINE not in flags:
        for m in (m for m in PRETRAINED if m in blocks):
            cmp = _comparison(ev, split, m, BASELINE)
            if cmp is None:
                continue
            diff = f"{_f(cmp[0], 3)} (95% CI {_f(cmp[1], 3)} to {_f(cmp[2], 3)})"
            s = _separated(cmp)
            if m in flags:
                sentences.append(f"{m} vs scratch: {diff}; not interpreted, because {m} " + "; ".join(flags[m]) + ".")
            elif s > 0:
                sentences.append(f"Pretraining helps with {m}: AUROC higher than scratch by {diff}.")
            elif s < 0:
                sentences.append(f"{m} is worse than scratch here: {diff}.")
            else:
                sentences.append(f"{m} vs scratch: not separated, {diff}.")
    elif BASELINE in flags:
        sentences.append(
            "Whether pretraining helps cannot be answered: the scratch baseline "
            + "; ".join(flags[BASELINE])
            + ", so a comparison with it would flatter transfer."
        )
    # Which method is best: one separated from every other method, and not flagged.
    candidates = [m for m in blocks if m not in flags]
    best = [m for m in candidates if all(_separated(_comparison(ev, split, m, o)) > 0 for o in blocks if o != m)]
    if best:
        sentences.append(f"Best method here: {best[0]} (separated from every other method).")
    else:
        sentences.append("No method is separated from all others here: the data do not pick a best one.")
    if recommendation is not None:
        sentences.append(_recommended_here(recommendation, split))
    for m, b in blocks.items():
        hi = (b.get("auroc") or {}).get("ci_high")
        if hi is not None and hi < 0.5:
            warnings.append(f"{m}: AUROC below chance (CI upper bound {_f(hi)}).")
    share = blocks[next(iter(blocks))].get("largest_patient_share")
    if share is not None and share > MAX_PATIENT_SHARE:
        warnings.append(
            f"One patient holds {share:.0%} of the images of this split: the image-level numbers lean "
            "on that patient (the patient-level CIs and the patient-weighted AUROC account for it)."
        )
    for m, why in flags.items():
        warnings.append(f"{m}: " + "; ".join(why) + " — flagged, not ranked.")
    return {"split": split, "title": title, "sentences": sentences, "warnings": warnings}


def _recommended_here(rec: Mapping[str, Any], split: str) -> str:
    r, ru = rec["recommended"], rec["runner_up"]
    if r is None:
        return "No method is recommended (none is eligible on validation)."
    c = ((rec.get("differences") or {}).get(split) or {}).get(ru) if ru else None
    if c is None:
        return f"The recommended method ({r}, chosen on validation) has no paired comparison with a runner-up here."
    return (
        f"The recommended method ({r}, chosen on validation) vs the runner-up {ru} here: "
        f"{diff_text(c)}, {verdict_words(c.get('verdict'), r, ru)} (evidence, not used to choose)."
    )


def recommendation_answer(recommendation: Any) -> dict[str, Any] | None:
    """The recommendation as an answer block (same shape as :func:`split_answer`'s, split
    ``val``): the choice and why, the evidence; warnings: flagged methods, unmade checks."""
    rec = as_dict(recommendation)
    if rec is None:
        return None
    title = "which method to use (chosen on validation only)"
    if rec["recommended"] is None:
        sentences = ["No recommendation: no method is eligible to be ranked on validation."]
    else:
        sentences = choice_sentences(rec) + evidence_sentences(rec)
    warnings = [
        f"{m}: " + "; ".join(e["flags"]) + " — not ranked." for m, e in rec["methods"].items() if not e["eligible"]
    ]
    warnings += [f"Limit: {x}" for x in rec["limits"][:2]]  # one split, one data set
    return {"split": rec["selection_split"], "title": title, "sentences": sentences, "warnings": warnings}


def answer(
    ev: Mapping[str, Any] | None,
    train_logs: Mapping[str, Any],
    diagnostics: Mapping[str, Any] | None,
    titles: Mapping[str, str],
    recommendation: Any = None,
) -> list[dict[str, Any]]:
    """One answer per evaluated split (test first, then each external set); with a
    recommendation (reports/recommendation.json, dict or contract model), its answer first."""
    rec = as_dict(recommendation)
    head = recommendation_answer(rec)
    if not ev:
        return [head] if head else []
    flags = method_flags(train_logs, diagnostics, rec)
    per_split = [split_answer(ev, s, titles.get(s, s), flags, rec) for s in ev.get("splits") or []]
    return ([head] if head else []) + per_split


__all__ = ["answer", "method_flags", "recommendation_answer", "split_answer"]
