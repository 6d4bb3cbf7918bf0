"""ingest stage: DICOM folder(s) + labels CSV -> image store, manifest, reports/ingest.json.

Reads params `data.*` and `ingest.*`; writes the image store data/processed/images/ (N, size, size) float16,
data/processed/manifest.csv and reports/ingest.json (every file accounted for). Stops with a
non-zero exit only for unusable input: a missing folder or CSV, a CSV without `file`/`label`,
or no accepted image.
"""

from pipeline.cli import entry
from pipeline.steps.ingest import run_ingest

if __name__ == "__main__":
    entry("ingest", run_ingest, __doc__)
