"""The report's sections, one module per topic; :data:`SECTIONS` is their order.

Each ``section_<topic>(inp[, figs])`` returns the section's blocks (pipeline.report.blocks) from a
:class:`pipeline.report.inputs.ReportInputs`; a missing input gives an explicit "not available"
block, never silence.
"""

from __future__ import annotations

# (id, title): the report's sections in order; ids are the HTML anchors (tests look for them).
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("recommendation", "Recommendation: which way to transfer"),
    ("intended-use", "Intended use and limitations"),
    ("data-sources", "Data sources and provenance"),
    ("ingest", "Ingest: accepted and rejected files"),
    ("patient-flow", "Patient flow, label definition and class mix"),
    ("demographics", "Demographics per split"),
    ("model-cards", "Model cards"),
    ("introspection", "The re-used network: architecture and introspection"),
    ("transferability", "Transferability ranking of candidate backbones"),
    ("validation", "Validation performance at the chosen operating point"),
    ("results", "Results"),
    ("curves", "ROC, precision-recall and calibration"),
    ("confusion", "Confusion matrices at the pre-registered operating point"),
    ("comparisons", "Paired comparisons"),
    ("subgroups", "Subgroups"),
    ("overfitting", "Overfitting diagnostics"),
    ("gradcam", "Class activation maps (Grad-CAM, linear CAM)"),
    ("reproducibility", "Reproducibility and code"),
    ("checklist", "Reporting checklist (CLAIM / TRIPOD+AI)"),
)
SECTION_IDS = tuple(s for s, _ in SECTIONS)
SECTION_TITLES = dict(SECTIONS)

__all__ = ["SECTIONS", "SECTION_IDS", "SECTION_TITLES"]
