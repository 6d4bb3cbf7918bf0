"""report stage: one self-contained HTML clinical evaluation report and the same content as Markdown.

Reads the whole validated params (shown in the report, pseudonym salt masked; `report.*` drives the
stage). Inputs: reports/{ingest,split,metrics,evaluation,diagnostics}.json, reports/train/*.json,
reports/figures/augment_preview.png, reports/figures/diagnose/*.png, data/features/info.json,
the ATTRIBUTION.md of each data folder, and for Grad-CAM models/finetune/best.pt,
predictions/finetune.csv and data/processed/images/. Missing optional inputs are named in the
report. Writes reports/report.html, reports/report.md and reports/figures/report/*.png.
"""

from pipeline.cli import entry
from pipeline.steps.report import run_report

if __name__ == "__main__":
    entry("report", run_report, __doc__)
