"""sources stage: fingerprint the configured data sets (data/sources.json) so DVC reruns ingest when one changes.

Reads params `data.*`; writes data/sources.json (DVC md5 hash, file count and size of every
DICOM folder and labels CSV). Runs on every `dvc repro` (always_changed) and takes a second; what
depends on it reruns only when a hash changed.
"""

from pipeline.cli import entry
from pipeline.steps.sources import run_sources

if __name__ == "__main__":
    entry("sources", run_sources, __doc__)
