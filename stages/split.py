"""split stage: patient-level, label-stratified train/val/test split of the manifest.

Reads params `seed`, `data.classes`, `split.*` and data/processed/manifest.csv; writes
data/processed/splits.csv (row, patient, label, split; external rows: split = external) and
reports/split.json (per split: patients, images, labels, sex, view). Fails if a patient would be
in two of train/val/test.
"""

from pipeline.cli import entry
from pipeline.steps.split import run_split

if __name__ == "__main__":
    entry("split", run_split, __doc__)
