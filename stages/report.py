"""report stage: one self-contained HTML clinical evaluation report and the same content as Markdown.

Reads the whole validated params (shown in the report, pseudonym salt masked; `report.*` drives the
stage). Inputs: reports/{ingest,split,metrics,evaluation,diagnostics}.json, reports/train/*.json,
reports/figures/augment_preview.png, reports/figures/diagnose/*.png, data/features/info.json,
the ATTRIBUTION.md of each data folder, and for Grad-CAM models/finetune/best.pt,
predictions/finetune.csv and data/processed/images.npy. Missing optional inputs are named in the
report. Writes reports/report.html, reports/report.md and reports/figures/report/*.png.
"""

from __future__ import annotations

import argparse
import shutil

from pipeline import paths
from pipeline.common import get_logger
from pipeline.params import REPO_ROOT, load_params
from pipeline.report.gradcam import GradcamUnavailable, pipeline_gradcam
from pipeline.report.render import load_inputs, write_report

log = get_logger("report")
FIGURE_DIR = paths.FIGURES / "report"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    params = load_params(args.params)

    inp = load_inputs(REPO_ROOT, params)
    for why in inp.problems.values():
        log.warning("%s: the report says so in its section", why)
    fig_dir = paths.repo_path(FIGURE_DIR)
    shutil.rmtree(fig_dir, ignore_errors=True)  # no stale figure from an earlier run
    fig_dir.mkdir(parents=True)
    try:
        inp.gradcam = pipeline_gradcam(REPO_ROOT, params, inp.evaluation, fig_dir / "gradcam.png")
    except GradcamUnavailable as err:
        inp.gradcam_note = str(err)
        log.warning("Grad-CAM not available: %s", err)
    html, md = write_report(inp, paths.repo_path(paths.REPORT_HTML), paths.repo_path(paths.REPORT_MD), fig_dir)
    log.info("report -> %s (%d kB), %s", html.relative_to(REPO_ROOT), html.stat().st_size // 1024,
             md.relative_to(REPO_ROOT))


if __name__ == "__main__":
    main()
