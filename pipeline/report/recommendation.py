"""The recommendation in the report: blocks built from ``reports/recommendation.json``.

:func:`recommendation_blocks` returns blocks built with :mod:`pipeline.report.blocks` (the
report's "recommendation" section, right after the summary). Every number is read from the recommendation (which read it
from evaluation.json, diagnostics.json and the train logs); nothing here computes a statistic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.recommendation_text import (
    and_list,
    auroc_text,
    choice_sentences,
    cost_text,
    diff_text,
    evidence_sentences,
    fmt,
    not_ranked_sentence,
    verdict_words,
)
from pipeline.report.blocks import Table, callout, h3, missing, p, table, ul


def as_dict(rec: Any) -> dict[str, Any] | None:
    """The recommendation as a plain dict: a :class:`pipeline.contracts.Recommendation`, a dict,
    or None (absent)."""
    if rec is None:
        return None
    if hasattr(rec, "model_dump"):
        return dict(rec.model_dump(by_alias=True))
    return dict(rec)


def _method_rows(doc: Mapping[str, Any]) -> tuple[list[list[str]], list[str]]:
    rows, classes = [], []
    for m, e in doc["methods"].items():
        role = "recommended" if m == doc["recommended"] else "runner-up" if m == doc["runner_up"] else ""
        over = e.get("overfitting") or {}
        rows.append(
            [
                m + (f" ({role})" if role else ""),
                "yes" if e["eligible"] else "no: " + "; ".join(e["flags"]),
                auroc_text(e.get("val_auroc")),
                str(e["rank"]) if e.get("rank") is not None else "not ranked",
                str(over.get("level") or "not diagnosed"),
                cost_text(e.get("cost")),
            ]
        )
        classes.append("" if e["eligible"] else "flagged")
    return rows, classes


def _difference_rows(doc: Mapping[str, Any]) -> list[list[str]]:
    rec = doc["recommended"]
    rows = []
    for split, per_other in doc["differences"].items():
        for other, c in per_other.items():
            used = "chosen on" if split == doc["selection_split"] else "evidence only"
            rows.append(
                [f"{rec} - {other}", f"{split} ({used})", diff_text(c), verdict_words(c.get("verdict"), rec, other)]
            )
    return rows


def recommendation_blocks(rec: Any) -> list[dict[str, Any]]:
    """The report's recommendation: the choice and why, the evidence, a per-method table, the
    paired differences, the learning-curve transfer gap, the limits and the rule."""
    doc = as_dict(rec)
    if not doc:
        return [missing("reports/recommendation.json is missing: no recommendation (run the recommend stage).")]
    blocks: list[dict[str, Any]] = [h3("Which method to use: the recommendation (chosen on validation only)")]
    if doc["recommended"] is None:
        blocks.append(callout("No recommendation: no method is eligible to be ranked on validation."))
    else:
        blocks.append(callout(" ".join(choice_sentences(doc))))
        blocks += [p(s) for s in evidence_sentences(doc)]
    not_ranked = not_ranked_sentence(doc)
    if not_ranked:
        blocks.append(p(not_ranked))
    rows, classes = _method_rows(doc)
    blocks.append(
        table(
            Table(
                ["method", "eligible", "val AUROC (95% CI, patient-level)", "rank on val", "overfitting", "cost"],
                rows,
                row_classes=classes,
                caption="Ranked on validation only; cost from the train logs' model cards.",
            )
        )
    )
    diffs = _difference_rows(doc)
    if diffs:
        blocks.append(
            table(
                Table(
                    ["difference", "split", "AUROC difference (95% CI, paired, patient-level)", "verdict"],
                    diffs,
                    caption="Only the validation rows entered the choice; test and external rows are evidence.",
                )
            )
        )
    gaps = doc.get("transfer_gap")
    if gaps:
        blocks.append(ul([g["text"] for g in gaps.values()]))
    unchecked = [f"{m}: {u}" for m, e in doc["methods"].items() for u in e.get("unchecked") or []]
    if unchecked:
        blocks.append(p("Eligibility checks not made: " + "; ".join(unchecked) + "."))
    blocks.append(p("Limits:"))
    blocks.append(ul(list(doc["limits"]) + list(doc.get("notes") or [])))
    blocks.append(p(f"Rule: {doc['rule']} Tie-break: {doc['tie_break']}"))
    return blocks


def headline(rec: Any) -> str | None:
    """One line for a summary: ``Recommended: linear (no significant difference on validation
    from finetune; chosen on cost)``; None without a recommendation file."""
    doc = as_dict(rec)
    if not doc:
        return None
    r, ru = doc["recommended"], doc["runner_up"]
    if r is None:
        return "No recommendation: no method is eligible to be ranked on validation."
    tied = [m for m in [doc["best_on_val"], *doc["tied_with"]] if m and m != r]
    why = {
        "val_auroc": f"highest val AUROC, separated from {ru}" if ru else "highest val AUROC",
        "cost": f"no significant difference on validation from {and_list(tied)}; chosen on cost, not accuracy",
        "only_eligible": "the only eligible method",
    }.get(doc["decided_by"], doc["decided_by"])
    va = (doc["methods"].get(r) or {}).get("val_auroc") or {}
    return f"Recommended: {r} ({why}; val AUROC {fmt(va.get('value'))})."


__all__ = ["as_dict", "headline", "recommendation_blocks"]
