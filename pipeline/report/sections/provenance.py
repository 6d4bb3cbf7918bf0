"""The reproducibility section: where the code and its commit live, the reproducibility record
(pipeline.provenance), seeds, software versions, data fingerprints and every parameter."""

from __future__ import annotations

from typing import Any

import yaml

from pipeline import __version__
from pipeline.report.blocks import Table, callout, fnum, h3, missing, p, pre, table
from pipeline.report.inputs import ReportInputs


def _code_text(code: dict[str, Any]) -> str:
    """Where the code lives: the checkout, its branch, its remote (or that there is none)."""
    if not code:
        return "not available (no reproducibility record)"
    where = f"checkout {code.get('checkout')}" + (f" (branch {code['branch']})" if code.get("branch") else "")
    remote = code.get("remote")
    return where + (
        f"; git remote {remote}" if remote else "; no git remote configured: the code lives in this checkout only"
    )


def section_reproducibility(inp: ReportInputs) -> list[dict]:
    r = inp.repro or {}
    rec = r.get("record") or {}
    git = rec.get("git") or {}
    commit = git.get("commit")
    lc = (inp.diagnostics or {}).get("learning_curve") or {}
    lc_seeds = sorted({pt.get("seed") for pt in lc.get("points") or [] if pt.get("seed") is not None})
    rows = [
        [
            "git commit",
            (commit + (" (clean: no uncommitted input)" if git.get("clean") else " (uncommitted changes to inputs)"))
            if commit
            else "not available (not a git checkout)",
        ],
        [
            "dvc.lock sha256",
            rec.get("dvc_lock_sha256") or "not available (no dvc.lock: the pipeline was not run by DVC)",
        ],
        ["code", _code_text(rec.get("code") or {})],
        ["pipeline version", __version__],
        ["seed (params)", fnum(inp.params.seed)],
        [
            "seeds of the training runs",
            ", ".join(f"{k}: {fnum(v.model_card.seed)}" for k, v in inp.train_logs.items()) or "n/a",
        ],
        ["learning-curve seeds", ", ".join(str(s) for s in lc_seeds) or "n/a"],
        ["evaluation bootstrap seed", fnum((inp.evaluation or {}).get("seed"))],
        ["Python", str(r.get("python"))],
    ]
    rows += [[f"package {k}", v] for k, v in (r.get("packages") or {}).items()]
    data_rows = [
        [
            str(d.get("name")),
            str(d.get("dicom_dir")),
            str(d.get("dicom_dir_md5")),
            fnum(d.get("n_files")),
            str(d.get("labels_csv_md5")),
        ]
        for d in rec.get("data") or []
    ]
    if rec.get("reproducible"):
        verdict = callout(
            f"Reproducible from this commit: `git checkout {commit}` and `dvc repro` with data of "
            "the hashes below rerun every number (CPU runs are deterministic for a given seed and "
            "package versions)."
        )
    else:
        verdict = missing(
            "Not reproducible from a commit as it stands: "
            + "; ".join(rec.get("missing") or ["no reproducibility record"])
            + "."
        )
    blocks = [
        verdict,
        table(Table(["item", "value"], rows)),
        h3("Data fingerprints (data/sources.json)"),
        table(Table(["set", "DICOM folder", "DVC md5", "files", "labels CSV md5"], data_rows))
        if data_rows
        else missing("No data fingerprint recorded (run the sources stage)."),
        p("The pseudonym salt is masked below."),
        h3("Parameters (validated params.yaml)"),
        pre(yaml.safe_dump(r.get("params") or {}, sort_keys=False, allow_unicode=True).strip()),
    ]
    return blocks


__all__ = ["section_reproducibility"]
