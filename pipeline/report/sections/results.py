"""Sections of results from evaluation.json: validation at the chosen threshold, headline tables,
curves, confusion matrices, paired comparisons and subgroups. Every method evaluated is listed,
the main three first."""

from __future__ import annotations

from typing import Any

from pipeline.report.blocks import Figure, Table, fblock, fci, fdiff, figure, fnum, fp, fprop, h3, missing, p, table
from pipeline.report.inputs import ReportInputs
from pipeline.report.lookup import (
    configured_splits,
    evaluated_methods,
    operating_point,
    split_block,
    split_title,
    splits_present,
)

AT_THRESHOLD_COLUMNS = ["sensitivity", "specificity", "PPV", "NPV"]


def _at_threshold_cells(at: dict[str, Any]) -> list[str]:
    return [fprop(at.get(k)) for k in ("sensitivity", "specificity", "ppv", "npv")]


def _prevalence_text(at: dict[str, Any]) -> str:
    prev = at.get("prevalence")
    if prev is None:
        return "n/a"
    return f"{fnum(prev)} ({at.get('prevalence_source') or 'sample'})"


def section_validation(inp: ReportInputs) -> list[dict]:
    """The operating point on the split where it was chosen (evaluation.json operating_point.val)."""
    ev = inp.evaluation
    if not ev:
        return [missing(f"Evaluation unavailable: {inp.problems.get('reports/evaluation.json', 'missing')}.")]
    st = ev.get("settings") or {}
    rows, notes = [], []
    for m in evaluated_methods(inp):
        op = operating_point(inp, m)
        val = op.get("val")
        if not val:
            rows.append([m, str(op.get("method", "n/a")), fnum(op.get("threshold")), "n/a", "n/a"] + ["n/a"] * 4)
            if op.get("note"):
                notes.append(p(f"{m}: {op['note']}"))
            continue
        rows.append(
            [
                m,
                str(op.get("method")),
                fnum(op.get("threshold")),
                f"{fnum(val.get('n'))} ({fnum(val.get('n_patients'))} pts)",
                _prevalence_text(val),
            ]
            + _at_threshold_cells(val)
        )
    target = (
        f" (target sensitivity {fnum(st.get('target_sensitivity'), 2)})"
        if st.get("operating_point") == "sensitivity"
        else ""
    )
    return [
        p(
            f"Each method's threshold was chosen on the validation split ({st.get('operating_point')}{target}) "
            "before the test and external sets were scored. Its performance there, with patient-level Wilson 95% "
            "intervals and counts k/n; PPV and NPV assume the prevalence shown."
        ),
        table(
            Table(["method", "rule", "threshold", "n (val)", "prevalence"] + AT_THRESHOLD_COLUMNS, rows),
        ),
        *notes,
    ]


def section_results(inp: ReportInputs) -> list[dict]:
    if not inp.evaluation:
        return [missing(f"Evaluation unavailable: {inp.problems.get('reports/evaluation.json', 'missing')}.")]
    ev = inp.evaluation
    blocks: list[dict] = [
        p(
            "AUROC with its patient-level 95% interval (the wider of the clustered DeLong, Obuchowski 1997, and the "
            "patient bootstrap), the image-level DeLong interval for reference (it treats images as independent and "
            "is too narrow when patients have several images), and the patient-weighted AUROC; AP = average "
            "precision; sensitivity, specificity, PPV and NPV at the operating point chosen on the validation split "
            "(method: " + str((ev.get("settings") or {}).get("operating_point")) + "), with Wilson 95% intervals "
            "and counts k/n, PPV/NPV at the prevalence shown; Brier score and expected calibration error (ECE) of "
            "the positive-class probability."
        )
    ]
    for note in ev.get("notes") or []:
        blocks.append(p(f"Note: {note}"))
    if not inp.params.data.external:
        blocks.append(missing("No external results: no external set is configured (data.external is empty)."))
    for split in configured_splits(inp):
        blocks.append(h3(split_title(inp, split)))
        if split not in splits_present(inp):
            blocks.append(missing(f"No results for {split}: it has no evaluated rows."))
            continue
        rows = []
        for m in evaluated_methods(inp):
            b = split_block(inp, m, split)
            if not b:
                continue
            at = b.get("at_threshold") or {}
            cal = b.get("calibration") or {}
            rows.append(
                [
                    m,
                    f"{fnum(b.get('n'))} ({fnum(b.get('n_positive'))} pos, {fnum(b.get('n_patients'))} pts)",
                    fblock(b.get("auroc")),
                    fblock(b.get("auroc_image")),
                    fnum(b.get("auroc_patient_weighted")),
                    fnum(b.get("average_precision")),
                    *_at_threshold_cells(at),
                    _prevalence_text(at),
                    fnum(cal.get("brier")),
                    fnum(cal.get("ece")),
                    fnum(operating_point(inp, m).get("threshold")),
                ]
            )
        blocks.append(
            table(
                Table(
                    [
                        "method",
                        "n",
                        "AUROC (patient-level CI)",
                        "AUROC (image-level CI)",
                        "AUROC patient-weighted",
                        "AP",
                        *AT_THRESHOLD_COLUMNS,
                        "prevalence (PPV/NPV)",
                        "Brier",
                        "ECE",
                        "threshold",
                    ],
                    rows,
                )
            )
        )
    return blocks


def section_curves(inp: ReportInputs, figs: dict[str, Figure]) -> list[dict]:
    if not inp.evaluation:
        return [missing("Evaluation unavailable: no curves.")]
    blocks: list[dict] = []
    for key in ("roc", "pr", "calibration"):
        f = figs.get(key)
        if f:
            blocks.append(figure(f))
        else:
            blocks.append(missing(f"The {key} figure could not be drawn (no curve data in evaluation.json)."))
    if not any(s.startswith("external/") for s in splits_present(inp)):
        blocks.append(missing("No external set evaluated, so only test curves are shown."))
    return blocks


def section_confusion(inp: ReportInputs, figs: dict[str, Figure]) -> list[dict]:
    if not inp.evaluation:
        return [missing("Evaluation unavailable: no confusion matrices.")]
    blocks: list[dict] = []
    rows = []
    for m in evaluated_methods(inp):
        op = operating_point(inp, m)
        method = op.get("method")
        if method == "sensitivity":
            method = f"sensitivity ≥ {fnum(op.get('target_sensitivity'), 2)} on val"
        for split in splits_present(inp):
            conf = ((split_block(inp, m, split) or {}).get("at_threshold") or {}).get("confusion")
            cells = [fnum(conf.get(k)) for k in ("tp", "fp", "fn", "tn")] if conf else ["n/a"] * 4
            rows.append([m, split, str(method), fnum(op.get("threshold")), *cells])
            if not conf and op.get("note"):
                blocks.append(p(f"{m}: {op['note']}"))
    blocks.append(
        p(
            "The threshold of each method was fixed on the validation split before the test and external "
            "sets were scored (pre-registered); a case is called positive when its probability is at or "
            "above the threshold."
        )
    )
    blocks.append(table(Table(["method", "split", "operating point", "threshold", "TP", "FP", "FN", "TN"], rows)))
    if figs.get("confusion"):
        blocks.append(figure(figs["confusion"]))
    return blocks


def section_comparisons(inp: ReportInputs) -> list[dict]:
    ev = inp.evaluation
    if not ev:
        return [missing("Evaluation unavailable: no paired comparisons.")]
    order = {m: i for i, m in enumerate(evaluated_methods(inp))}
    blocks: list[dict] = [
        p(
            "Each pair of methods on the same images (paired, patient-level test of the AUROC difference, "
            "A minus B). A 95% interval that includes 0 means the data do not separate the two; "
            "p-values are not corrected for the number of comparisons."
        )
    ]
    for split in configured_splits(inp):
        comps = (ev.get("comparisons") or {}).get(split)
        if not comps:
            blocks.append(missing(f"No paired comparisons for {split}."))
            continue
        comps = sorted(comps, key=lambda c: (order.get(c.get("path_a"), 99), order.get(c.get("path_b"), 99)))
        rows = [
            [
                str(c.get("path_a")),
                str(c.get("path_b")),
                fnum(c.get("n")),
                fnum(c.get("auroc_a")),
                fnum(c.get("auroc_b")),
                fdiff(c.get("difference"), c.get("ci_low"), c.get("ci_high")),
                fp(c.get("p_value")),
                str(c.get("verdict") or "n/a"),
            ]
            for c in comps
        ]
        blocks.append(h3(split_title(inp, split)))
        blocks.append(table(Table(["A", "B", "n", "AUROC A", "AUROC B", "difference (95% CI)", "p", "verdict"], rows)))
    return blocks


def section_subgroups(inp: ReportInputs) -> list[dict]:
    ev = inp.evaluation
    if not ev:
        return [missing("Evaluation unavailable: no subgroup analysis.")]
    st = ev.get("settings") or {}
    min_pat = st.get("min_subgroup_patients")
    blocks: list[dict] = [
        p(
            "AUROC (patient-level 95% CI) per subgroup of sex, age band and view. ⚑ marks a flagged subgroup: "
            f"fewer than {fnum(st.get('min_subgroup_size'))} images"
            + (f" or fewer than {fnum(min_pat)} patients" if min_pat is not None else "")
            + ", or a single class (its AUROC is unreliable or undefined). Subgroup results are exploratory."
        )
    ]
    for split in configured_splits(inp):
        if split not in splits_present(inp):
            blocks.append(missing(f"No subgroups for {split}: it was not evaluated."))
            continue
        rows, classes = [], []
        for m in evaluated_methods(inp):
            for g in (split_block(inp, m, split) or {}).get("subgroups") or []:
                flag = g.get("flagged")
                rows.append(
                    [
                        m,
                        str(g.get("attribute")),
                        ("⚑ " if flag else "") + str(g.get("group")),
                        fnum(g.get("n")),
                        fnum(g.get("n_patients")),
                        fnum(g.get("n_positive")),
                        fci(g.get("auroc"), g.get("ci_low"), g.get("ci_high")),
                        "; ".join(g.get("flags") or []) if flag else "",
                    ]
                )
                classes.append("flagged" if flag else "")
        blocks.append(h3(split_title(inp, split)))
        if rows:
            blocks.append(
                table(
                    Table(
                        ["method", "attribute", "group", "n", "patients", "positive", "AUROC (95% CI)", "flag"],
                        rows,
                        row_classes=classes,
                    )
                )
            )
        else:
            blocks.append(missing(f"No subgroup rows in evaluation.json for the {split} split."))
    return blocks


__all__ = [
    "section_comparisons",
    "section_confusion",
    "section_curves",
    "section_results",
    "section_subgroups",
    "section_validation",
]
