"""Which way to transfer this data set rewards: the recommendation, chosen on validation only.

Everything here is a pure function of the documents other stages wrote (evaluation.json,
diagnostics.json, the train logs under ``reports/train/``), passed in as plain dicts.

The rule (also written into ``reports/recommendation.json`` as :data:`RULE` and
:data:`TIE_BREAK`):

1. **Eligible methods** (:func:`eligibility`): a method is not ranked when it never fitted its
   training data, when its outputs are near-constant, when it never left chance on validation
   (val AUROC below 0.5 + ``diagnose.chance_margin``, or diagnostics' ``near_chance``), or when
   its val AUROC is undefined. The recommendation names each one and why.
2. **Rank** the eligible methods by their validation AUROC (evaluation.json
   ``results.<method>.validation``). The best is the highest.
3. **Ties.** Every eligible method whose paired, patient-level 95% CI of (best - method) on
   validation (evaluation.json ``comparisons.val``) includes 0 is not separated from the best.
   If none is, the best is recommended on accuracy. Otherwise the data do not separate them: "no
   significant difference", and the cheapest of the best and the methods tied with it is
   recommended (fewest trained parameters, then shortest training wall time, then higher val
   AUROC, then name), a choice that rests on cost, not accuracy.
4. The **runner-up** is the eligible method with the highest val AUROC other than the
   recommended one.

Test and external numbers are read only after the choice, as evidence (paired differences of the
recommended method against every other one, on ``val``, ``test`` and each ``external/<name>``):
:func:`choose` receives validation numbers and costs only, so they cannot influence it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.evaluation import VAL, find_comparison, separation
from pipeline.recommendation_text import fmt, gap_text, limits, num, summary_text

SCHEMA_VERSION = 1
RULE = (
    "Chosen on the validation split only: the eligible method (not flagged as never fitting its "
    "training data, near-constant, never leaving chance on validation, or without a val AUROC) "
    "with the highest validation AUROC, unless the paired patient-level 95% CI of its difference "
    "from another eligible method includes 0 (see tie_break). Test and external results are "
    "reported as evidence and never used to choose."
)
TIE_BREAK = (
    "When the paired patient-level 95% CI of (best - other) on validation includes 0 for one or "
    "more eligible methods, the data do not separate them (no significant difference): the "
    "cheapest of the best and those methods is recommended, by fewest trained parameters, then "
    "shortest training wall time, then higher validation AUROC, then name. The choice then rests "
    "on cost, not accuracy."
)
FIT_SOURCE = "evaluation.json fit block"
DERIVED_SOURCE = "derived: evaluation.json has no fit block (train logs, val AUROC, diagnostics)"


# --------------------------------------------------------------------------------------------
# Small readers
# --------------------------------------------------------------------------------------------


def val_auroc(evaluation: Mapping[str, Any], method: str) -> dict[str, Any] | None:
    """``{"value", "ci_low", "ci_high", "n", "n_patients"}`` of a method on validation, or None."""
    res = ((evaluation.get("results") or {}).get(method) or {}).get("validation")
    if not res:
        return None
    a = res.get("auroc") or {}
    return {
        "value": num(a.get("value")),
        "ci_low": num(a.get("ci_low")),
        "ci_high": num(a.get("ci_high")),
        "n": res.get("n"),
        "n_patients": res.get("n_patients"),
    }


def _neg(x: float | None) -> float | None:
    return None if x is None else -x


def _verdict(lo: float | None, hi: float | None, a: str, b: str) -> str:
    """``separation`` of evaluation.py on an interval whose bounds may be None."""
    return separation(math.nan if lo is None else lo, math.nan if hi is None else hi, a, b)


def paired(evaluation: Mapping[str, Any], split: str, a: str, b: str) -> dict[str, Any] | None:
    """The paired patient-level comparison (a - b) on ``split`` from evaluation.json's
    ``comparisons``, in either stored order (sign flipped for b - a), or None when absent.
    ``{"difference", "ci_low", "ci_high", "p_value", "n", "n_patients", "verdict"}``, the verdict
    ``"<a> higher"`` / ``"<b> higher"`` / ``"not separated"`` / ``"undefined"``."""
    keys = ("difference", "ci_low", "ci_high", "p_value", "n", "n_patients")
    c = find_comparison((evaluation.get("comparisons") or {}).get(split), a, b, keys)
    if c is None:
        return None
    out = {k: num(c[k]) for k in ("difference", "ci_low", "ci_high", "p_value")}
    return {**out, "n": c["n"], "n_patients": c["n_patients"], "verdict": _verdict(out["ci_low"], out["ci_high"], a, b)}


# --------------------------------------------------------------------------------------------
# Eligibility, cost, evidence
# --------------------------------------------------------------------------------------------


def _train_fit(log: Mapping[str, Any] | None) -> float | None:
    """The best training AUROC a train log records: the max over epochs (networks) or the
    logistic regression's (linear); None without a log or a value."""
    if not log:
        return None
    if "history" in log:
        vals = [v for v in (num(h.get("train_auroc")) for h in log.get("history") or []) if v is not None]
        return max(vals) if vals else None
    return num(log.get("train_auroc"))


def _not_fitted_flag(kept_train_auroc: Any, log: Mapping[str, Any] | None, chance: float) -> str:
    """Why a method whose predictions do not fit its training data is not ranked: it never fitted,
    or (a network whose log shows a fitting epoch) validation kept an earlier, unlearnt epoch."""
    kept = fmt(kept_train_auroc)
    history = [h for h in (log or {}).get("history") or [] if num(h.get("train_auroc")) is not None]
    if history:
        best = max(history, key=lambda h: float(h["train_auroc"]))
        kept_epoch = ((log or {}).get("model_card") or {}).get("best_epoch")
        if float(best["train_auroc"]) >= chance and best.get("epoch") != kept_epoch:
            return (
                f"kept an epoch that does not fit its training data (train AUROC {kept} at epoch {kept_epoch}, "
                f"chosen on validation), although training reached {fmt(best['train_auroc'])} at epoch "
                f"{best.get('epoch')}: it fitted, then validation did not improve"
            )
    return f"never fitted its training data (train AUROC {kept})"


def eligibility(
    evaluation: Mapping[str, Any],
    diagnostics: Mapping[str, Any] | None,
    train_logs: Mapping[str, Mapping[str, Any] | None],
    chance_margin: float,
) -> dict[str, dict[str, Any]]:
    """Per evaluated method: ``{"eligible", "flags", "unchecked", "source"}``.

    ``flags`` say why a method is not ranked; ``unchecked`` lists the checks that could not be
    made and why (never silently passed). The fit checks (fitted its training data, outputs not
    near-constant) come from evaluation.json ``results.<method>.fit`` (``fitted``,
    ``near_constant``, ``train_auroc``) when that block exists; without it (``source`` says so)
    fitting is derived from the train log's best training AUROC (below 0.5 + ``chance_margin``:
    never fitted) and near-constant outputs stay unchecked. Leaving chance on validation is
    checked for every method from its val AUROC and diagnostics' ``near_chance``.
    """
    chance = 0.5 + chance_margin
    verdicts = (diagnostics or {}).get("verdicts") or {}
    diag_paths = (diagnostics or {}).get("paths") or {}
    out: dict[str, dict[str, Any]] = {}
    for m in evaluation.get("paths") or []:
        flags: list[str] = []
        unchecked: list[str] = []
        fit = ((evaluation.get("results") or {}).get(m) or {}).get("fit")
        if fit is not None:
            source = FIT_SOURCE
            if fit.get("fitted") is False:
                flags.append(_not_fitted_flag(fit.get("train_auroc"), train_logs.get(m), chance))
            elif fit.get("fitted") is None:
                unchecked.append("training fit (the fit block has no `fitted` value)")
            if fit.get("near_constant") is True:
                flags.append("has near-constant outputs")
            elif fit.get("near_constant") is None:
                unchecked.append("near-constant outputs (the fit block has no `near_constant` value)")
        else:
            source = DERIVED_SOURCE
            best_train = _train_fit(train_logs.get(m))
            if best_train is None:
                unchecked.append("training fit (no train log with a training AUROC)")
            elif best_train < chance:
                flags.append(f"never fitted its training data (best train AUROC {fmt(best_train)} < {chance:.2f})")
            unchecked.append("near-constant outputs (evaluation.json has no fit block)")
        va = val_auroc(evaluation, m)
        value = va["value"] if va else None
        diag_nc = bool((diag_paths.get(m) or {}).get("near_chance") or (verdicts.get(m) or {}).get("near_chance"))
        if value is None:
            flags.append("has no validation AUROC")
        elif value < chance:
            flags.append(f"never left chance on validation (val AUROC {fmt(value)} < {chance:.2f})")
        elif diag_nc:
            flags.append("never left chance on validation (diagnostics: near_chance)")
        out[m] = {"eligible": not flags, "flags": flags, "unchecked": unchecked, "source": source}
    return out


def cost(log: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"trained_parameters", "train_wall_time_s"}`` from a train log's model card: the
    card's ``n_params_trained`` where it has one (linear), else the parameters of its trainable
    ``layer_groups``; None where the log or the value is absent."""
    card = (log or {}).get("model_card") or {}
    n = card.get("n_params_trained")
    if n is None:
        groups = [g for g in card.get("layer_groups") or [] if g.get("trainable")]
        n = sum(int(g.get("n_params") or 0) for g in groups) if groups else None
    return {"trained_parameters": None if n is None else int(n), "train_wall_time_s": num(card.get("wall_time_s"))}


def overfitting(diagnostics: Mapping[str, Any] | None, method: str) -> dict[str, Any] | None:
    """The overfitting verdict of diagnostics.json for a method (``{"level", "text"}``), or None."""
    v = ((diagnostics or {}).get("verdicts") or {}).get(method)
    return {"level": v.get("level"), "text": v.get("text")} if v else None


def transfer_gap(diagnostics: Mapping[str, Any] | None) -> dict[str, dict[str, Any]] | None:
    """Per pretrained method of the learning curve: its AUROC minus scratch's on the test split,
    paired and patient-level, at each training-set size (diagnostics.json ``learning_curve
    .pair_summary``, stored as scratch - reference, turned around here), and how the point
    estimate changes from the smallest to the largest size. None without a learning curve."""
    lc = (diagnostics or {}).get("learning_curve")
    if not lc or not lc.get("pair_summary"):
        return None
    out: dict[str, dict[str, Any]] = {}
    for row in lc["pair_summary"]:
        ref, chal = str(row.get("reference")), str(row.get("challenger"))
        d, lo, hi = num(row.get("difference")), num(row.get("ci_low")), num(row.get("ci_high"))
        point = {
            "fraction": float(row.get("fraction") or 0.0),
            "n_patients": int(row.get("n_patients") or 0),
            "gap": _neg(d),
            "ci_low": _neg(hi),
            "ci_high": _neg(lo),
            "verdict": _verdict(_neg(hi), _neg(lo), ref, chal),
        }
        out.setdefault(ref, {"method": ref, "baseline": chal, "points": []})["points"].append(point)
    for g in out.values():
        pts = sorted(g["points"], key=lambda q: q["n_patients"])
        g["points"] = pts
        first, last = pts[0]["gap"], pts[-1]["gap"]
        g["change"] = None if first is None or last is None or len(pts) < 2 else last - first
        g["separated_at"] = [q["n_patients"] for q in pts if q["verdict"] not in ("not separated", "undefined")]
        g["text"] = gap_text(g)
    return out


# --------------------------------------------------------------------------------------------
# The choice (validation numbers and costs only)
# --------------------------------------------------------------------------------------------


@dataclass
class Choice:
    recommended: str | None
    runner_up: str | None
    decided_by: str  # "val_auroc" | "cost" | "only_eligible" | "none"
    ranking: list[str] = field(default_factory=list)  # eligible methods by val AUROC, best first
    tied_with: list[str] = field(default_factory=list)  # not separated from the best on val
    best: str | None = None


def choose(
    val_aurocs: Mapping[str, float | None],
    val_pairs: Mapping[tuple[str, str], tuple[float | None, float | None]],
    eligible: Sequence[str],
    costs: Mapping[str, Mapping[str, Any]],
) -> Choice:
    """The rule of the module docstring on validation numbers only.

    ``val_aurocs``: method -> val AUROC; ``val_pairs``: (best candidate, other) -> the paired
    patient-level CI (low, high) of their val AUROC difference, for every ordered pair of
    eligible methods the caller has (missing or undefined counts as not separated);
    ``eligible``: methods allowed to be ranked; ``costs``: method -> :func:`cost`.
    """
    ranked = [m for m in eligible if num(val_aurocs.get(m)) is not None]
    ranked.sort(key=lambda m: (-float(val_aurocs[m] or 0.0), m))
    if not ranked:
        return Choice(None, None, "none")
    best = ranked[0]
    if len(ranked) == 1:
        return Choice(best, None, "only_eligible", ranked, [], best)

    def separated(other: str) -> bool:
        lo, _ = val_pairs.get((best, other), (None, None))
        return lo is not None and lo > 0

    tied = [m for m in ranked[1:] if not separated(m)]
    if not tied:
        return Choice(best, ranked[1], "val_auroc", ranked, [], best)

    def price(m: str) -> tuple[float, float, float, str]:
        c = costs.get(m) or {}
        n, t = c.get("trained_parameters"), num(c.get("train_wall_time_s"))
        return (math.inf if n is None else float(n), math.inf if t is None else t, -float(val_aurocs[m] or 0.0), m)

    rec = min([best, *tied], key=price)
    runner = next(m for m in ranked if m != rec)
    return Choice(rec, runner, "cost", ranked, tied, best)


def val_pair_intervals(evaluation: Mapping[str, Any], methods: Sequence[str]) -> dict[tuple[str, str], tuple[Any, Any]]:
    """(a, b) -> (ci_low, ci_high) of a - b on validation, for every ordered pair of ``methods``."""
    out = {}
    for a in methods:
        for b in methods:
            if a != b:
                c = paired(evaluation, VAL, a, b)
                out[a, b] = (c["ci_low"], c["ci_high"]) if c else (None, None)
    return out


# --------------------------------------------------------------------------------------------
# The document
# --------------------------------------------------------------------------------------------


def recommend(
    evaluation: Mapping[str, Any],
    diagnostics: Mapping[str, Any] | None,
    train_logs: Mapping[str, Mapping[str, Any] | None],
    chance_margin: float,
    configured: Sequence[str] = (),
) -> dict[str, Any]:
    """reports/recommendation.json (schema: :class:`pipeline.contracts.Recommendation`).

    ``evaluation``/``diagnostics``: the documents; ``train_logs``: method -> its train log (None
    where absent); ``configured``: the methods the params ask for (``paths.methods``), so one
    that was not evaluated is noted.
    """
    methods = list(evaluation.get("paths") or [])
    elig = eligibility(evaluation, diagnostics, train_logs, chance_margin)
    costs = {m: cost(train_logs.get(m)) for m in methods}
    eligible = [m for m in methods if elig[m]["eligible"]]
    aurocs = {m: (val_auroc(evaluation, m) or {}).get("value") for m in methods}
    choice = choose(aurocs, val_pair_intervals(evaluation, eligible), eligible, costs)
    rec, runner = choice.recommended, choice.runner_up

    splits = [VAL, *(evaluation.get("splits") or [])]
    differences: dict[str, dict[str, Any]] = {}
    if rec is not None:
        for s in splits:
            row = {o: paired(evaluation, s, rec, o) for o in methods if o != rec}
            differences[s] = {o: c for o, c in row.items() if c is not None}
    versus = {s: differences.get(s, {}).get(runner) if runner else None for s in splits}
    gaps = transfer_gap(diagnostics)
    per_method = {
        m: {
            **elig[m],
            "val_auroc": val_auroc(evaluation, m),
            "rank": choice.ranking.index(m) + 1 if m in choice.ranking else None,
            "overfitting": overfitting(diagnostics, m),
            "cost": costs[m],
        }
        for m in methods
    }
    notes = [
        f"{m} is configured but was not evaluated (no predictions/{m}.csv)" for m in configured if m not in methods
    ]
    for m in methods:
        if not train_logs.get(m):
            notes.append(f"{m}: no train log, so its cost is unknown")
    doc = {
        "schema_version": SCHEMA_VERSION,
        "selection_split": VAL,
        "rule": RULE,
        "tie_break": TIE_BREAK,
        "recommended": rec,
        "runner_up": runner,
        "decided_by": choice.decided_by,
        "best_on_val": choice.best,
        "tied_with": choice.tied_with,
        "ranking": choice.ranking,
        "methods": per_method,
        "versus_runner_up": versus,
        "differences": differences,
        "transfer_gap": gaps,
        "limits": _limits(evaluation, choice, gaps, versus),
        "notes": notes,
        "text": "",
    }
    doc["text"] = summary_text(doc)
    return doc


def _limits(
    evaluation: Mapping[str, Any], choice: Choice, gaps: Mapping[str, Any] | None, versus: Mapping[str, Any]
) -> list[str]:
    external = [s for s in evaluation.get("splits") or [] if s.startswith("external/")]
    val = val_auroc(evaluation, choice.recommended) if choice.recommended else None
    return limits(
        evaluation.get("seed"),
        external,
        choice.recommended,
        val,
        versus.get(VAL),
        sorted(gaps) if gaps is not None else None,
    )
