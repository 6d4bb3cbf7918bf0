"""ingest stage: DICOM folder(s) + labels CSV -> image store, manifest, reports/ingest.json.

Reads params `data.*` and `ingest.*`; writes data/processed/images.npy (N, size, size) float16,
data/processed/manifest.csv and reports/ingest.json (every file accounted for). Stops with a
non-zero exit only for unusable input: a missing folder or CSV, a CSV without `file`/`label`,
or no accepted image.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import paths
from pipeline.common import get_logger
from pipeline.ingest import IngestError, ingest
from pipeline.params import REPO_ROOT, ParamsError, load_params

log = get_logger("ingest")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--out-root", type=Path, default=REPO_ROOT,
                        help="folder the outputs are written under (default: the repository root)")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        report = ingest(
            params,
            store_path=args.out_root / paths.STORE,
            manifest_path=args.out_root / paths.MANIFEST,
            report_path=args.out_root / paths.INGEST_REPORT,
        )
    except (IngestError, ParamsError) as err:
        raise SystemExit(f"ingest: {err}") from None

    def line(name: str, r: dict) -> str:
        return (f"{name}: seen {r['seen']}, accepted {r['accepted']}, rejected {r['rejected']} "
                f"{r['reasons'] or ''}; labels without file: {len(r['labels_without_file'])}")

    log.info(line("internal", report))
    if "external" in report:
        log.info(line("external", report["external"]))
    t = report["timing"]
    log.info("%d images -> %s in %.1f s (%.1f files/s, %d workers)", report["store"]["rows"],
             paths.STORE, t["seconds"], t["files_per_s"] or 0, t["workers"])


if __name__ == "__main__":
    main()
