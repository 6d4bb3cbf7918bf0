"""augment stage: materialise `augment.copies` deterministic views of every TRAIN image.

Reads params `seed` and `augment.*`; writes data/processed/augmented/ (image store) + augmented.csv and
reports/figures/augment_preview.png. Validation, test and external images are never augmented.
"""

from pipeline.cli import entry
from pipeline.steps.augment import run_augment

if __name__ == "__main__":
    entry("augment", run_augment, __doc__)
