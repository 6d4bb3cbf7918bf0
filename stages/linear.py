"""linear stage: logistic regression on frozen embeddings, C by patient-grouped CV on train.

Reads params `seed`, `data.classes`, `data.positive_class` and `linear.*` only (so a linear.*
change reruns this stage and what follows, never the backbone). Inputs: data/features/
(images.npy, augmented.npy, info.json), data/processed/{manifest,splits,augmented}.csv.
Writes predictions/linear.csv (every manifest row), models/linear/model.joblib and
reports/train/linear.json.
"""

from pipeline.cli import entry
from pipeline.steps.linear import run_linear

if __name__ == "__main__":
    entry("linear", run_linear, __doc__)
