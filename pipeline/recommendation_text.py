"""The recommendation in plain words: number formatting, the learning-curve gap sentence, the
limits and the summary text of ``reports/recommendation.json`` (pure functions of plain dicts).

Words follow numbers: "higher" only where the paired patient-level CI excludes 0, else "not
separated"; a tie on validation is called "no significant difference" and the text says that the
choice then rests on cost, not accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def num(x: Any) -> float | None:
    """A finite float, else None."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def fmt(x: Any, nd: int = 3, sign: bool = False) -> str:
    """A number with ``nd`` decimals (``+`` sign for differences); ``n/a`` when undefined."""
    v = num(x)
    if v is None:
        return "n/a"
    return f"{v:+.{nd}f}" if sign else f"{v:.{nd}f}"


def diff_text(c: Mapping[str, Any] | None) -> str:
    """``+0.020 (95% CI -0.100 to +0.140)`` of a paired difference."""
    if not c:
        return "n/a"
    lo, hi = fmt(c.get("ci_low"), sign=True), fmt(c.get("ci_high"), sign=True)
    return f"{fmt(c.get('difference'), sign=True)} (95% CI {lo} to {hi})"


def auroc_text(v: Mapping[str, Any] | None) -> str:
    """``0.660 (95% CI 0.520-0.790)`` of an AUROC with its interval."""
    if not v:
        return "n/a"
    return f"{fmt(v.get('value'))} (95% CI {fmt(v.get('ci_low'))}-{fmt(v.get('ci_high'))})"


def cost_text(c: Mapping[str, Any] | None) -> str:
    c = c or {}
    n, t = c.get("trained_parameters"), num(c.get("train_wall_time_s"))
    params = f"{n:,} trained parameters" if n is not None else "trained parameters unknown"
    return params + (f", {t:.0f} s of training" if t is not None else ", training time unknown")


def and_list(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def verdict_words(verdict: str | None, a: str, b: str) -> str:
    """A comparison verdict of (a - b) as words: ``<a> higher``, ``<b> higher``, ``not separated``."""
    if verdict in (f"{a} higher", f"{b} higher", "not separated"):
        return str(verdict)
    return "undefined"


def gap_text(g: Mapping[str, Any]) -> str:
    """One sentence on a transfer gap across training-set sizes (point estimates + CIs)."""
    pts = g["points"]
    a, b = pts[0], pts[-1]
    head = f"Transfer gap ({g['method']} - {g['baseline']}, test AUROC, learning curve)"
    if len(pts) < 2 or g.get("change") is None:
        return f"{head}: {fmt(a['gap'], sign=True)} at {a['n_patients']} training patients; no trend to read."
    move = "unchanged" if g["change"] == 0 else "rising" if g["change"] > 0 else "falling"
    sep = (
        "its 95% CI includes 0 at every size (not separated)"
        if not g["separated_at"]
        else "its 95% CI excludes 0 at " + ", ".join(str(n) for n in g["separated_at"]) + " training patients"
    )
    return (
        f"{head}: {fmt(a['gap'], sign=True)} at {a['n_patients']} training patients, "
        f"{fmt(b['gap'], sign=True)} at {b['n_patients']} ({move} point estimates, the trend itself is "
        f"not tested); {sep}."
    )


def limits(
    seed: Any,
    external: Sequence[str],
    recommended: str | None,
    val: Mapping[str, Any] | None,
    val_vs_runner_up: Mapping[str, Any] | None,
    gap_methods: Sequence[str] | None,
) -> list[str]:
    """What the recommendation cannot say, in plain words."""
    out = [
        "One split: validation and test come from one patient-level split of the development data "
        f"(seed {seed}); another split can reorder methods whose intervals overlap.",
        "One data set: the recommendation is for this data set"
        + (
            f"; the {len(external)} external set(s) ({', '.join(external)}) are evidence, not a second development set."
            if external
            else "; no external set was evaluated, so nothing shows that it carries over to another site."
        ),
    ]
    if recommended is not None:
        c = val_vs_runner_up or {}
        lo, hi = num(c.get("ci_low")), num(c.get("ci_high"))
        width = (
            f"; the val interval of its difference from the runner-up is {hi - lo:.2f} wide"
            if lo is not None and hi is not None
            else ""
        )
        v = val or {}
        out.append(
            f"Small validation set: {v.get('n')} images of {v.get('n_patients')} patients{width}, so "
            "smaller real differences cannot be seen."
        )
        if gap_methods is not None and recommended not in gap_methods:
            out.append(f"The learning curve covers {', '.join(gap_methods)} against scratch only, not {recommended}.")
    out.append("Paired p-values and intervals are not corrected for the number of comparisons.")
    return out


def choice_sentences(doc: Mapping[str, Any]) -> list[str]:
    """Which method, on which validation numbers, and why (val AUROC or cost)."""
    rec, runner, methods, val = doc["recommended"], doc["runner_up"], doc["methods"], doc["selection_split"]
    va = methods[rec]["val_auroc"] or {}
    out = [
        f"Recommended: {rec}, chosen on validation only ({va.get('n')} images, {va.get('n_patients')} "
        f"patients): val AUROC {auroc_text(va)}."
    ]
    cmp = (doc["versus_runner_up"] or {}).get(val)
    if doc["decided_by"] == "only_eligible":
        out.append("It is the only eligible method, so there is nothing to compare it with.")
    elif doc["decided_by"] == "val_auroc":
        out.append(
            "It is separated from every other eligible method on validation; against the runner-up "
            f"{runner} (val AUROC {auroc_text(methods[runner]['val_auroc'])}) the paired patient-level "
            f"difference is {diff_text(cmp)}, an interval that excludes 0."
        )
    else:
        best = doc["best_on_val"]
        other = best if best != rec else runner
        shown = (doc["differences"].get(val) or {}).get(other)
        out.append(
            f"No significant difference on validation between {and_list([best, *doc['tied_with']])}: "
            f"the paired patient-level difference {rec} - {other} is {diff_text(shown)}, an interval "
            "that includes 0, so the data do not separate them. The choice rests on cost, not "
            f"accuracy: {rec} is the cheapest ({cost_text(methods[rec]['cost'])}; {runner}: "
            f"{cost_text(methods[runner]['cost'])})."
        )
    return out


def evidence_sentences(doc: Mapping[str, Any]) -> list[str]:
    """Test/external differences from the runner-up, overfitting verdicts, the transfer gap."""
    rec, runner, methods = doc["recommended"], doc["runner_up"], doc["methods"]
    out = []
    ev = [
        f"{s}: {rec} - {runner} {diff_text(rows[runner])}, {verdict_words(rows[runner].get('verdict'), rec, runner)}"
        for s, rows in doc["differences"].items()
        if s != doc["selection_split"] and runner in rows
    ]
    if ev:
        out.append("Evidence, not used to choose: " + "; ".join(ev) + ".")
    over = [f"{m} {o['level']}" for m in (rec, runner) if m and (o := methods[m]["overfitting"])]
    if over:
        out.append("Overfitting verdicts (diagnostics): " + ", ".join(over) + ".")
    gap = (doc.get("transfer_gap") or {}).get(rec)
    if gap:
        out.append(gap["text"])
    return out


def not_ranked_sentence(doc: Mapping[str, Any]) -> str | None:
    """``Not ranked: scratch, which never left chance on validation (...).`` or None."""
    flagged = {m: e["flags"] for m, e in doc["methods"].items() if not e["eligible"]}
    if not flagged:
        return None
    return "Not ranked: " + "; ".join(f"{m}, which {and_list(f)}" for m, f in flagged.items()) + "."


def summary_text(doc: Mapping[str, Any]) -> str:
    """The recommendation in plain words: the choice and why, the evidence, what is not ranked,
    the limits."""
    out: list[str] = []
    if doc["recommended"] is None:
        out.append("No recommendation: no method is eligible to be ranked on validation.")
    else:
        out += choice_sentences(doc)
        out += evidence_sentences(doc)
    not_ranked = not_ranked_sentence(doc)
    if not_ranked:
        out.append(not_ranked)
    out.append("Limits: " + " ".join(doc["limits"]))
    return " ".join(out)
