"""The overfitting section: verdicts, loss/AUROC curves, the transfer trifecta, the linear
method's validation curve over C and the learning curve, all from diagnostics.json."""

from __future__ import annotations

import math

from pipeline.report.blocks import Figure, Table, callout, fci, figure, fnum, fsci, h3, missing, p, table
from pipeline.report.inputs import ReportInputs
from pipeline.report.lookup import configured_methods, ordered


def section_overfitting(inp: ReportInputs, figs: dict[str, Figure]) -> list[dict]:
    d = inp.diagnostics
    if not d:
        return [missing(f"Diagnostics unavailable: {inp.problems.get('reports/diagnostics.json', 'missing')}.")]
    r = d.get("rules") or {}
    defs = d.get("definitions") or {}
    blocks: list[dict] = [
        h3("Verdicts"),
        p(
            f"Rules (diagnose.gap_mild = {fnum(r.get('gap_mild'), 2)}, "
            f"diagnose.gap_severe = {fnum(r.get('gap_severe'), 2)}, "
            f"diagnose.overfit_k = {fnum(r.get('overfit_k'))}): {defs.get('verdict', '')}"
        ),
    ]
    vt = [
        [k, str(v.get("level")), fnum(v.get("gap")), "yes" if v.get("onset") else "no", str(v.get("text"))]
        for k, v in (d.get("verdicts") or {}).items()
    ]
    blocks.append(table(Table(["method", "verdict", "AUROC gap", "onset", "why"], vt)))
    paths_ = d.get("paths") or {}
    ep_rows = []
    for name in ordered(paths_, configured_methods(inp)):
        x = paths_[name]
        if "best_epoch" not in x:  # the linear method's validation curve is below
            continue
        ab, al, on = x.get("at_best") or {}, x.get("at_last") or {}, x.get("overfit_onset")
        ep_rows.append(
            [
                name,
                f"{fnum(x.get('best_epoch'))} of {fnum(x.get('epochs_run'))}",
                f"{fnum(ab.get('train_auroc'))} / {fnum(ab.get('val_auroc'))}",
                fnum(ab.get("auroc_gap")),
                fnum(ab.get("loss_gap")),
                f"{fnum(al.get('train_auroc'))} / {fnum(al.get('val_auroc'))}",
                fnum(al.get("auroc_gap")),
                fnum(al.get("loss_gap")),
                f"epoch {on['epoch']} (val loss lowest at epoch {on['rise_after_epoch']})" if on else "none",
            ]
        )
    blocks.append(h3("Loss and AUROC curves"))
    if ep_rows:
        blocks.append(
            table(
                Table(
                    [
                        "method",
                        "kept epoch",
                        "train / val AUROC at kept",
                        "AUROC gap (kept)",
                        "loss gap (kept)",
                        "train / val AUROC at last",
                        "AUROC gap (last)",
                        "loss gap (last)",
                        "overfitting onset",
                    ],
                    ep_rows,
                )
            )
        )
        blocks.append(
            p(
                f"Gap definitions: {defs.get('auroc_gap', '')} {defs.get('loss_gap', '')} "
                f"Onset: {defs.get('overfit_onset', '')}"
            )
        )
    else:
        blocks.append(missing("No epoch-trained method in diagnostics.json."))
    for key in ("diagnose_curves",):
        blocks.append(figure(figs[key]) if figs.get(key) else missing("Loss/AUROC curve figure not found."))

    blocks.append(h3("Transfer trifecta: start, convergence, asymptote"))
    tri = (d.get("trifecta") or {}).get("paths") or {}
    if tri:
        rows = []
        for name in ordered(tri, configured_methods(inp)):
            t = tri[name]
            test = t.get("test") or {}
            rows.append(
                [
                    name,
                    fnum(t.get("start_val_auroc")),
                    "n/a"
                    if t.get("convergence_epochs") is None
                    else f"{t['convergence_epochs']} epochs"
                    + (
                        f" ({fnum(t.get('convergence_seconds'), 0)} s)"
                        if t.get("convergence_seconds") is not None
                        else ""
                    ),
                    fnum(t.get("best_val_auroc", t.get("best_cv_auroc")))
                    if t.get("best_val_auroc") is not None
                    else f"{fnum(t.get('best_cv_auroc'))} (CV)",
                    fci(test.get("auroc"), test.get("ci_low"), test.get("ci_high")),
                ]
            )
        blocks.append(
            table(
                Table(
                    [
                        "method",
                        "start (val AUROC, epoch 1)",
                        "convergence (95% of the way from chance to best)",
                        "best val AUROC",
                        "test AUROC (95% CI)",
                    ],
                    rows,
                )
            )
        )
        cmp_ = (d.get("trifecta") or {}).get("finetune_vs_scratch") or {}
        if cmp_:

            def claim(key: str) -> str:
                v = cmp_.get(key)
                return str(cmp_.get(f"{key}_claim") or ("n/a" if v is None else "yes" if v else "no"))

            overlap = cmp_.get("test_ci_overlap")
            overlap_text = "overlap" if overlap else "do not overlap" if overlap is False else "n/a"
            blocks.append(
                p(
                    f"finetune vs scratch: higher start {claim('higher_start')} "
                    f"(Δ {fnum(cmp_.get('start_val_auroc_diff'))}), "
                    f"faster convergence {claim('faster_convergence')} "
                    f"({fnum(cmp_.get('convergence_epochs_saved'))} epochs saved), "
                    f"higher asymptote {claim('higher_asymptote')} (test Δ {fnum(cmp_.get('test_auroc_diff'))}; "
                    f"95% CIs {overlap_text})."
                )
            )
        blocks.append(
            p(
                f"Definitions: {defs.get('starting_performance', '')} {defs.get('convergence', '')} "
                f"{defs.get('asymptote', '')}"
            )
        )
        if tri.get("linear", {}).get("note"):
            blocks.append(p(tri["linear"]["note"]))
    else:
        blocks.append(missing("No trifecta numbers in diagnostics.json."))
    blocks.append(
        figure(figs["diagnose_trifecta"]) if figs.get("diagnose_trifecta") else missing("Trifecta figure not found.")
    )

    blocks.append(h3("Linear method: validation curve over C"))
    lin = paths_.get("linear")
    if lin:
        blocks.append(
            table(
                Table(
                    ["C", "train AUROC", "CV AUROC", "CV SD", "gap"],
                    [
                        [
                            ("→ " if math.isclose(rw["C"], lin["best_C"]) else "") + fsci(rw["C"]),
                            fnum(rw.get("train_auroc")),
                            fnum(rw.get("cv_auroc")),
                            fnum(rw.get("cv_auroc_std")),
                            fnum(rw.get("gap")),
                        ]
                        for rw in lin.get("curve", [])
                    ],
                    caption=f"→ marks the chosen C = {lin['best_C']:g}",
                )
            )
        )
        blocks.append(p(defs.get("linear_gap", "")))
    else:
        blocks.append(missing("No linear validation curve in diagnostics.json."))
    blocks.append(
        figure(figs["diagnose_validation_curve"])
        if figs.get("diagnose_validation_curve")
        else missing("Validation-curve figure not found.")
    )

    blocks.append(h3("Learning curve"))
    lc = d.get("learning_curve")
    if lc and lc.get("summary"):
        sizes = ""
        if lc.get("n_training_patients_total") is not None:
            sizes = (
                f" {fnum(lc.get('n_training_patients_total'))} training patients in all; test split of "
                f"{fnum(lc.get('n_test_images'))} images."
            )
        blocks.append(
            p(
                f"{defs.get('learning_curve', '')} Fractions {lc.get('fractions')}, "
                f"{fnum(lc.get('repeats'))} repeat(s), "
                f"{fnum(lc.get('epochs'))} epochs for finetune/scratch.{sizes} {lc.get('reuse', '')}"
            )
        )
        blocks.append(
            table(
                Table(
                    [
                        "method",
                        "fraction",
                        "training patients",
                        "training images",
                        "test AUROC (95% CI)",
                        "repeats",
                        "reused main run",
                    ],
                    [
                        [
                            s["path"],
                            fnum(s["fraction"], 2),
                            fnum(s["n_patients"]),
                            fnum(s["n_images"]),
                            fci(s.get("test_auroc"), s.get("ci_low"), s.get("ci_high")),
                            fnum(s.get("repeats")),
                            "yes" if s.get("reused_main_run") else "no",
                        ]
                        for s in lc["summary"]
                    ],
                )
            )
        )
        blocks.append(p(f"Catch-up rule: {defs.get('scratch_catches_up', '')}"))
        for ref, c in (lc.get("scratch_catch_up") or {}).items():
            blocks.append(callout(f"scratch vs {ref}: {c.get('text')}"))
    else:
        blocks.append(missing("No learning curve in diagnostics.json."))
    blocks.append(
        figure(figs["diagnose_learning_curve"])
        if figs.get("diagnose_learning_curve")
        else missing("Learning-curve figure not found.")
    )
    return blocks


__all__ = ["section_overfitting"]
