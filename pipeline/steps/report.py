"""report stage: one self-contained HTML clinical evaluation report and the same content as Markdown."""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline import paths
from pipeline.common import get_logger
from pipeline.params import Params
from pipeline.report.gradcam import pipeline_cams
from pipeline.report.render import load_inputs, write_report
from pipeline.workspace import Workspace

log = get_logger("report")
FIGURE_DIR = paths.FIGURES / "report"


def run_report(params: Params, workspace: Workspace) -> tuple[Path, Path]:
    """reports/report.html, reports/report.md and reports/figures/report/*.png. Missing optional
    inputs are named in the report, not fatal."""
    inp = load_inputs(workspace.root, params)
    for why in inp.problems.values():
        log.warning("%s: the report says so in its section", why)
    fig_dir = workspace.path(FIGURE_DIR)
    shutil.rmtree(fig_dir, ignore_errors=True)  # no stale figure from an earlier run
    fig_dir.mkdir(parents=True)
    inp.cams, inp.cam_notes = pipeline_cams(workspace.root, params, inp.evaluation, fig_dir)
    for method, why in inp.cam_notes.items():
        log.warning("no class activation map for %s: %s", method, why)
    html, md = write_report(inp, workspace.path(paths.REPORT_HTML), workspace.path(paths.REPORT_MD), fig_dir)
    log.info("report -> %s (%d kB), %s", workspace.show(html), html.stat().st_size // 1024, workspace.show(md))
    return html, md
