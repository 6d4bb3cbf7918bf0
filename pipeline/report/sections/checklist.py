"""The CLAIM 2024 / TRIPOD+AI (2024) checklist: each item "reported" (with the section where) or
"not reported" (with why), decided from what this run's inputs contain, never assumed."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.report.blocks import Figure, Table, p, table
from pipeline.report.inputs import ReportInputs
from pipeline.report.lookup import configured_methods, evaluated_methods, operating_point, split_block, split_stats
from pipeline.report.sections import SECTION_TITLES

# A check returns None when the item is reported, else why it is not.
Check = Callable[[ReportInputs, dict[str, Figure]], str | None]


def _problem(inp: ReportInputs, name: str) -> str:
    return inp.problems.get(name, f"{name} not found")


def _summary(inp: ReportInputs, _f: dict[str, Figure]) -> str | None:
    return None if "test" in ((inp.evaluation or {}).get("splits") or []) else "no test-split results"


def _always(_i: ReportInputs, _f: dict[str, Figure]) -> str | None:
    return None  # stated from the validated params, which every run has


def _attribution(inp: ReportInputs, _f: dict[str, Figure]) -> str | None:
    return None if inp.attributions else "no ATTRIBUTION.md in the data folders"


def _external_provenance(inp: ReportInputs, _f: dict[str, Figure]) -> str | None:
    ext = inp.params.data.external
    if not ext:
        return "no external set configured"
    if inp.sources is None:
        return f"no data fingerprint ({_problem(inp, 'data/sources.json')})"
    undescribed = [e.name for e in ext if not e.description]
    recorded = {s.name for s in inp.sources.sets}
    unrecorded = [e.name for e in ext if e.name not in recorded]
    if unrecorded:
        return "no fingerprint for " + ", ".join(unrecorded)
    return ("no description for " + ", ".join(undescribed)) if undescribed else None


def _ingest(inp: ReportInputs, _f: dict[str, Figure]) -> str | None:
    return None if inp.ingest is not None else _problem(inp, "reports/ingest.json")


def _label_definition(inp: ReportInputs, _f: dict[str, Figure]) -> str | None:
    return None if inp.params.data.label_definition else "data.label_definition is not set"


def _flow(inp: ReportInputs, _f: dict[str, Figure]) -> str | None:
    if inp.split is None:
        return _problem(inp, "reports/split.json")
    return None if inp.split.checks.patient_disjoint else "the split is not patient-disjoint"


def _class_mix(inp: ReportInputs, _f: dict[str, Figure]) -> str | None:
    return None if split_stats(inp) else _problem(inp, "reports/split.json")


def _per_patient(inp: ReportInputs, _f: dict[str, Figure]) -> str | None:
    stats = split_stats(inp)
    if not stats:
        return _problem(inp, "reports/split.json")
    lacking = [k for k, v in stats.items() if v.per_patient is None]
    return ("no per-patient demographics for " + ", ".join(lacking)) if lacking else None


def _model_cards(inp: ReportInputs, _f: dict[str, Figure]) -> str | None:
    lacking = [m for m in configured_methods(inp) if m not in inp.train_logs]
    return ("no training log for " + ", ".join(lacking)) if lacking else None


def _introspection(inp: ReportInputs, _f: dict[str, Figure]) -> str | None:
    return None if inp.introspection is not None else _problem(inp, "reports/introspection/introspection.json")


def _transferability(inp: ReportInputs, _f: dict[str, Figure]) -> str | None:
    return None if inp.transferability is not None else _problem(inp, "reports/transferability.json")


def _validation(inp: ReportInputs, _f: dict[str, Figure]) -> str | None:
    if not inp.evaluation:
        return _problem(inp, "reports/evaluation.json")
    ok = [m for m in evaluated_methods(inp) if operating_point(inp, m).get("val")]
    return None if ok else "no method has validation performance at its threshold"


def _external(inp: ReportInputs, _f: dict[str, Figure]) -> str | None:
    if not inp.params.data.external:
        return "no external set configured"
    splits = (inp.evaluation or {}).get("splits") or []
    return None if any(s.startswith("external/") for s in splits) else "no external set was evaluated"


def _curves(_i: ReportInputs, figs: dict[str, Figure]) -> str | None:
    lacking = [k for k in ("roc", "calibration") if k not in figs]
    return ("no " + " and no ".join(lacking) + " figure") if lacking else None


def _confusion(inp: ReportInputs, _f: dict[str, Figure]) -> str | None:
    if not inp.evaluation:
        return _problem(inp, "reports/evaluation.json")
    ok = [m for m in evaluated_methods(inp) if operating_point(inp, m).get("threshold") is not None]
    return None if ok else "no method has a validation-chosen threshold"


def _comparisons(inp: ReportInputs, _f: dict[str, Figure]) -> str | None:
    comps = ((inp.evaluation or {}).get("comparisons") or {}).get("test")
    return None if comps else "no paired comparison on the test split"


def _subgroups(inp: ReportInputs, _f: dict[str, Figure]) -> str | None:
    rows = [m for m in evaluated_methods(inp) if (split_block(inp, m, "test") or {}).get("subgroups")]
    return None if rows else "no subgroup results on the test split"


def _overfitting(inp: ReportInputs, _f: dict[str, Figure]) -> str | None:
    return None if inp.diagnostics else _problem(inp, "reports/diagnostics.json")


def _cams(inp: ReportInputs, _f: dict[str, Figure]) -> str | None:
    if inp.cams:
        return None
    return "no class activation map: " + "; ".join(f"{m}: {w}" for m, w in inp.cam_notes.items())


def _code(inp: ReportInputs, _f: dict[str, Figure]) -> str | None:
    git = ((inp.repro or {}).get("record") or {}).get("git") or {}
    return None if git.get("commit") else "not a git checkout: no commit recorded"


def _software(inp: ReportInputs, _f: dict[str, Figure]) -> str | None:
    return None if (inp.repro or {}).get("packages") else "no software versions recorded"


CHECKLIST: tuple[tuple[str, str, Check], ...] = (
    ("Title, question, results and conclusion in plain words (TRIPOD+AI 1-2; CLAIM 1-2)", "summary", _summary),
    ("Intended use, clinical context, research-only status (TRIPOD+AI 3, 26; CLAIM 3-4)", "intended-use", _always),
    ("Data sources, sites and licences (TRIPOD+AI 5-6; CLAIM 7-8)", "data-sources", _attribution),
    ("External sets' provenance: description and data fingerprint (TRIPOD+AI 5; CLAIM 7)", "data-sources",
     _external_provenance),
    ("Eligibility, exclusions and their reasons (TRIPOD+AI 6, 20a; CLAIM 8, 33)", "ingest", _ingest),
    ("Reference standard: the label definition (TRIPOD+AI 7; CLAIM 15-17)", "patient-flow", _label_definition),
    ("Participant flow, sample size per split, patient-level partition (TRIPOD+AI 10, 20a; CLAIM 21, 33)",
     "patient-flow", _flow),
    ("Class mix per split (TRIPOD+AI 20b; CLAIM 34)", "patient-flow", _class_mix),
    ("Characteristics per patient: counts, sex, age mean, SD and range (TRIPOD+AI 20b; CLAIM 34)", "demographics",
     _per_patient),
    ("Handling of missing data (TRIPOD+AI 9; CLAIM 13)", "demographics", _class_mix),
    ("Model description, initialisation and training details (TRIPOD+AI 12; CLAIM 22-26)", "model-cards",
     _model_cards),
    ("Architecture: layer groups, parameters, what each method trains (CLAIM 22)", "introspection", _introspection),
    ("Choice of the pretrained model: transferability of candidate backbones (CLAIM 24)", "transferability",
     _transferability),
    ("Performance at the pre-specified threshold on the validation split (TRIPOD+AI 23; CLAIM 37)", "validation",
     _validation),
    ("Performance with patient-level confidence intervals on the test split (TRIPOD+AI 23; CLAIM 37)", "results",
     _summary),
    ("External validation (TRIPOD+AI 23; CLAIM 35, 37)", "results", _external),
    ("Discrimination and calibration plots (TRIPOD+AI 12e, 23a)", "curves", _curves),
    ("Operating point chosen before testing; confusion matrices (CLAIM 38)", "confusion", _confusion),
    ("Comparison of methods on the same patients (CLAIM 32)", "comparisons", _comparisons),
    ("Performance across subgroups (TRIPOD+AI 14, 23b; CLAIM 39)", "subgroups", _subgroups),
    ("Robustness and overfitting analysis, sample-size effects (TRIPOD+AI 12c; CLAIM 26)", "overfitting",
     _overfitting),
    ("Interpretability and failure analysis (CLAIM 27, 40)", "gradcam", _cams),
    ("Code availability and its commit (TRIPOD+AI 18; CLAIM 41-42)", "reproducibility", _code),
    ("Software versions and every parameter (TRIPOD+AI 18; CLAIM 41)", "reproducibility", _software),
)  # fmt: skip


def checklist_rows(inp: ReportInputs, figs: dict[str, Figure]) -> list[tuple[str, str, str | None]]:
    """``(item, section id, None | why not reported)`` for every item, in order."""
    return [(item, sid, check(inp, figs)) for item, sid, check in CHECKLIST]


def section_checklist(inp: ReportInputs, figs: dict[str, Figure]) -> list[dict]:
    rows = checklist_rows(inp, figs)
    n_ok = sum(why is None for _, _, why in rows)
    return [
        p(
            "Each reporting item of the CLAIM 2024 update and TRIPOD+AI (2024) checklists, marked reported (with "
            "the section where) or not reported (with why), decided from what this run's inputs contain. Item "
            "numbers are indicative; items about clinical deployment do not apply to research software. "
            f"{n_ok} of {len(rows)} items reported."
        ),
        table(
            Table(
                ["item", "status", "note", "where"],
                [
                    [
                        item,
                        "reported" if why is None else "not reported",
                        why or "",
                        SECTION_TITLES[sid] if why is None else "—",
                    ]
                    for item, sid, why in rows
                ],
                row_classes=["" if why is None else "flagged" for _, _, why in rows],
            ),
            links=[sid if why is None else "" for _, sid, why in rows],
        ),
    ]


__all__ = ["CHECKLIST", "checklist_rows", "section_checklist"]
