"""The clinical evaluation report: one self-contained HTML file and the same content as Markdown.

Structure after the CLAIM (Checklist for AI in Medical Imaging) and TRIPOD+AI reporting
guidelines. Every number shown is read from the pipeline's JSON reports (ingest.json, split.json,
metrics.json, evaluation.json, diagnostics.json, reports/train/*.json, introspection.json,
transferability.json); nothing here computes a statistic. A missing optional input gives its
section an explicit "not available" note.

How: :func:`pipeline.report.inputs.load_inputs` reads the files, :func:`build_sections` turns them
into a list of sections (one module per topic under :mod:`pipeline.report.sections`) made of
simple blocks (:mod:`pipeline.report.blocks`: paragraph, table, figure, note, ...), and one Jinja2
template per format renders the same blocks, so the HTML and the Markdown cannot drift apart. The
HTML embeds figures as base64 PNG data URIs and inline CSS, and has no script and no remote
reference; the Markdown links the PNG files under ``reports/figures/``.

This module keeps the public names of the report (blocks, formatters, inputs) importable from one
place.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.common import get_logger
from pipeline.report.blocks import (
    Figure,
    Table,
    callout,
    fblock,
    fci,
    fdiff,
    figure,
    fnum,
    fp,
    fprop,
    fsci,
    h3,
    missing,
    p,
    pre,
    strip_url_schemes,
    table,
    ul,
)
from pipeline.report.inputs import SALT_MASK, ReportInputs, load_inputs, mask_params, package_versions
from pipeline.report.lookup import (
    evaluated_methods,
    split_block,
    split_title,
    splits_present,
)
from pipeline.report.recommendation import recommendation_blocks
from pipeline.report.sections import SECTION_IDS, SECTIONS
from pipeline.report.sections.checklist import section_checklist
from pipeline.report.sections.data import (
    section_data_sources,
    section_demographics,
    section_flow,
    section_ingest,
    section_intended_use,
)
from pipeline.report.sections.explain import section_cams
from pipeline.report.sections.models import section_model_cards
from pipeline.report.sections.network import section_introspection, section_transferability
from pipeline.report.sections.overfitting import section_overfitting
from pipeline.report.sections.provenance import section_reproducibility
from pipeline.report.sections.results import (
    section_comparisons,
    section_confusion,
    section_curves,
    section_results,
    section_subgroups,
    section_validation,
)

log = get_logger(__name__)

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


def _section_summary(inp: ReportInputs) -> list[dict]:
    from pipeline.report.answer import answer

    blocks: list[dict] = []
    titles = {s: split_title(inp, s) for s in splits_present(inp)}
    answers = answer(inp.evaluation, inp.train_logs, inp.diagnostics, titles, recommendation=inp.recommendation)
    for ans in answers:
        blocks.append(h3(f"The answer: {ans['title']}"))
        blocks.append(callout(" ".join(ans["sentences"])))
        if ans["warnings"]:
            blocks.append(ul([f"⚠ {w}" for w in ans["warnings"]]))
    if not answers:
        blocks.append(
            missing("No results: reports/evaluation.json is missing or empty, so the questions cannot be answered.")
        )
    for e in inp.params.data.external:
        if e.split_key not in splits_present(inp):
            blocks.append(missing(f"External set `{e.name}` is configured but has no results in evaluation.json."))
    if not inp.params.data.external:
        blocks.append(missing("No external validation: no external set is configured (data.external is empty)."))
    d = inp.diagnostics
    if d and d.get("verdicts"):
        blocks.append(p("Overfitting: " + " ".join(f"{k}: {v.get('text')}" for k, v in d["verdicts"].items())))
        for ref, c in ((d.get("learning_curve") or {}).get("scratch_catch_up") or {}).items():
            blocks.append(p(f"Learning curve (scratch vs {ref}): {c.get('text')}"))
    blocks.append(
        p(
            "AUROC is shown with its patient-level 95% confidence interval (clustered DeLong and patient bootstrap: "
            "a patient's images are not independent); 'not separated' means the interval of the paired difference "
            "includes zero. Research use only: see the limitations below."
        )
    )
    return blocks


# --------------------------------------------------------------------------- figures of the report


def draw_report_figures(inp: ReportInputs, fig_dir: Path, md_base: Path) -> dict[str, Figure]:
    """ROC/PR/calibration/confusion PNGs under ``fig_dir``, plus the upstream figures that exist."""
    from pipeline.report import figures as F

    figs: dict[str, Figure] = {}

    def add(key: str, path: Path, caption: str) -> None:
        figs[key] = Figure(key=key, path=path, md_path=_rel(path, md_base), caption=caption)

    ev = inp.evaluation
    if ev and ev.get("splits"):
        splits = list(ev["splits"])
        has_curves = any(
            (split_block(inp, pth, s) or {}).get("curves", {}).get("roc")
            for pth in evaluated_methods(inp)
            for s in splits
        )
        if has_curves:
            add(
                "roc",
                F.plot_roc_pr(ev, splits, "roc", fig_dir / "roc.png"),
                "ROC curves per split; legend: AUROC (patient-level 95% CI).",
            )
            add(
                "pr",
                F.plot_roc_pr(ev, splits, "pr", fig_dir / "pr.png"),
                "Precision-recall curves per split; legend: average precision.",
            )
        if any((split_block(inp, pth, s) or {}).get("calibration") for pth in evaluated_methods(inp) for s in splits):
            add(
                "calibration",
                F.plot_calibration(ev, splits, fig_dir / "calibration.png"),
                "Reliability diagrams: observed fraction positive against mean predicted probability per bin.",
            )
        if ev.get("positive_class"):
            add(
                "confusion",
                F.plot_confusion(
                    ev,
                    splits,
                    ev.get("classes") or list(inp.params.data.classes),
                    ev["positive_class"],
                    fig_dir / "confusion.png",
                ),
                "Confusion matrices at each method's validation-chosen threshold.",
            )
    for key, path in inp.figures.items():
        add(key, path, _caption(key))
    for method, cam in inp.cams.items():
        add(
            f"cam_{method}",
            Path(cam.figure),
            f"{cam.kind} of {method} over test images, one colour scale for every panel (colour bar): outcome, "
            "manifest row, true and predicted label and the predicted probability per panel.",
        )
    return figs


CAPTIONS = {
    "augment_preview": "Training images and their augmented views (augment stage).",
    "diagnose_curves": "Loss and AUROC per epoch (train dashed, validation solid); circle: kept epoch; "
    "dotted line: overfitting onset.",
    "diagnose_trifecta": "Validation AUROC per epoch, finetune vs scratch; squares: first epoch at 95% of the way "
    "from chance to the method's best (dotted line).",
    "diagnose_validation_curve": "Linear method: train-fold and cross-validated AUROC over C; dotted line: chosen C.",
    "diagnose_learning_curve": "Test AUROC (patient-level 95% CI) against the number of training patients.",
    "introspect_filters": "First-layer filters, pretrained (left) and fine-tuned (right), on one symmetric colour "
    "scale per network (introspect stage).",
    "introspect_feature_maps": "Feature maps of one training radiograph at several depths, pretrained and "
    "fine-tuned (introspect stage).",
}


def _caption(key: str) -> str:
    if key.startswith("introspect_units_"):
        group = key[len("introspect_units_") :]
        return (
            f"{group}: per unit, the training radiographs that activate it most, its activation-maximisation image "
            "and a guided-backprop reconstruction; left pretrained, right fine-tuned (introspect stage)."
        )
    return CAPTIONS.get(key, key)


def _rel(path: Path, base: Path) -> str:
    import os

    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


# --------------------------------------------------------------------------- assembly + rendering


def build_sections(inp: ReportInputs, figs: dict[str, Figure]) -> list[dict[str, Any]]:
    """Every section, in :data:`SECTIONS` order, as ``{"id", "title", "number", "blocks"}``."""
    builders = {
        "summary": lambda: _section_summary(inp),
        "recommendation": lambda: recommendation_blocks(inp.recommendation),
        "intended-use": lambda: section_intended_use(inp),
        "data-sources": lambda: section_data_sources(inp),
        "ingest": lambda: section_ingest(inp),
        "patient-flow": lambda: section_flow(inp),
        "demographics": lambda: section_demographics(inp),
        "model-cards": lambda: section_model_cards(inp),
        "introspection": lambda: section_introspection(inp, figs),
        "transferability": lambda: section_transferability(inp),
        "validation": lambda: section_validation(inp),
        "results": lambda: section_results(inp),
        "curves": lambda: section_curves(inp, figs),
        "confusion": lambda: section_confusion(inp, figs),
        "comparisons": lambda: section_comparisons(inp),
        "subgroups": lambda: section_subgroups(inp),
        "overfitting": lambda: section_overfitting(inp, figs),
        "gradcam": lambda: section_cams(inp, figs),
        "reproducibility": lambda: section_reproducibility(inp),
        "checklist": lambda: section_checklist(inp, figs),
    }
    if set(builders) != set(SECTION_IDS):
        raise AssertionError("every section needs exactly one builder")
    out = []
    for i, (sid, title) in enumerate(SECTIONS, start=1):
        blocks = builders[sid]()
        if sid == "data-sources" and "augment_preview" in figs:
            blocks.append(figure(figs["augment_preview"]))
        out.append({"id": sid, "title": title, "number": i, "blocks": blocks})
    return out


def sanitize_blocks(sections: list[dict[str, Any]]) -> None:
    """Strip URL schemes from every text shown (inputs may cite web pages): no link can leak in."""
    for sec in sections:
        for b in sec["blocks"]:
            if "text" in b:
                b["text"] = strip_url_schemes(str(b["text"]))
            if "items" in b:
                b["items"] = [strip_url_schemes(str(i)) for i in b["items"]]
            if b["kind"] == "table":
                t = b["table"]
                t.rows = [[strip_url_schemes(str(c)) for c in row] for row in t.rows]
                t.caption = strip_url_schemes(t.caption)
            if b["kind"] == "figure":
                b["figure"].caption = strip_url_schemes(b["figure"].caption)


def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default=False),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,  # a typo in a template is an error, not an empty cell
        keep_trailing_newline=True,
    )
    env.filters["md_cell"] = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
    return env


def render_html(title: str, sections: list[dict[str, Any]], figs: Mapping[str, Figure]) -> str:
    """One self-contained HTML page: inline CSS, figures as data URIs, no script, no remote URL."""
    from pipeline.report.figures import png_data_uri

    for f in figs.values():
        f.uri = png_data_uri(f.path)
    css = (TEMPLATE_DIR / "report.css").read_text(encoding="utf-8")
    return _environment().get_template("report.html.j2").render(title=title, sections=sections, css=css)


def render_markdown(title: str, sections: list[dict[str, Any]]) -> str:
    return _environment().get_template("report.md.j2").render(title=title, sections=sections)


def check_self_contained(html: str) -> None:
    """Refuse to write an HTML report that would load anything: no script, no remote reference."""
    bad = []
    if re.search(r"<script\b", html, re.I):
        bad.append("a <script> element")
    for m in re.finditer(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html, re.I):
        v = m.group(1)
        if not (v.startswith("#") or v.startswith("data:image/png;base64,")):
            bad.append(f"reference {v[:60]!r}")
    for m in re.finditer(r"url\(\s*['\"]?([^)'\"]*)", html, re.I):
        if not m.group(1).startswith("data:"):
            bad.append(f"url({m.group(1)[:60]})")
    if re.search(r"@import", html, re.I):
        bad.append("a CSS @import")
    if re.search(r"\b(?:https?|ftp)://", html, re.I):
        bad.append("a web address")
    if bad:
        raise ValueError("report.html would not be self-contained: " + "; ".join(sorted(set(bad))[:5]))


def write_report(inp: ReportInputs, html_path: Path, md_path: Path, fig_dir: Path) -> tuple[Path, Path]:
    """Draw the report's figures, render both formats, check the HTML, write both files."""
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    figs = draw_report_figures(inp, fig_dir, Path(md_path).parent)
    sections = build_sections(inp, figs)
    sanitize_blocks(sections)
    title = inp.params.report.title
    html = render_html(title, sections, figs)
    check_self_contained(html)
    md = render_markdown(title, sections)
    Path(html_path).parent.mkdir(parents=True, exist_ok=True)
    Path(html_path).write_text(html, encoding="utf-8")
    Path(md_path).write_text(md, encoding="utf-8")
    return Path(html_path), Path(md_path)


__all__ = [
    "SALT_MASK",
    "SECTIONS",
    "SECTION_IDS",
    "Figure",
    "ReportInputs",
    "Table",
    "build_sections",
    "callout",
    "check_self_contained",
    "draw_report_figures",
    "fblock",
    "fci",
    "fdiff",
    "figure",
    "fnum",
    "fp",
    "fprop",
    "fsci",
    "h3",
    "load_inputs",
    "mask_params",
    "missing",
    "p",
    "package_versions",
    "pre",
    "render_html",
    "render_markdown",
    "sanitize_blocks",
    "strip_url_schemes",
    "table",
    "ul",
    "write_report",
]
