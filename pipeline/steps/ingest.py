"""ingest stage: DICOM folders + labels CSVs -> image store, manifest, reports/ingest.json."""

from __future__ import annotations

from typing import Any

from pipeline import paths
from pipeline.common import get_logger
from pipeline.ingest import ingest
from pipeline.params import Params
from pipeline.sources import SOURCES_FILE, configured_sets, read_sources
from pipeline.workspace import Workspace

log = get_logger("ingest")


def run_ingest(params: Params, workspace: Workspace) -> dict[str, Any]:
    """Ingest the internal and every external set; the sources stage must have fingerprinted the
    same sets (data/sources.json), so that DVC reran this stage when any of them changed."""
    from pipeline.sources import SourceError

    recorded = [s.name for s in read_sources(workspace.path(SOURCES_FILE)).sets]
    configured = [s.name for s in configured_sets(params)]
    if recorded != configured:
        raise SourceError(
            f"{SOURCES_FILE} lists the sets {recorded} but params.yaml {configured}; "
            "run the sources stage first (dvc repro)"
        )
    report = ingest(
        params,
        store_path=workspace.store,
        manifest_path=workspace.manifest,
        report_path=workspace.path(paths.INGEST_REPORT),
        root=workspace.root,
    )
    log.info(_line("internal", report))
    for name, block in report["external"].items():
        log.info(_line(f"external {name}", block))
    t = report["timing"]
    log.info(
        "%d images -> %s in %.1f s (%.1f files/s, %d workers)",
        report["store"]["rows"],
        paths.STORE,
        t["seconds"],
        t["files_per_s"] or 0,
        t["workers"],
    )
    return report


def _line(name: str, r: dict[str, Any]) -> str:
    return (
        f"{name}: seen {r['seen']}, accepted {r['accepted']}, rejected {r['rejected']} "
        f"{r['reasons'] or ''}; labels without file: {len(r['labels_without_file'])}"
    )
