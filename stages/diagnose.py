"""diagnose stage: overfitting diagnostics, transfer trifecta, validation and learning curves.

Reads params `seed`, `data.*` (classes, positive class), `augment.*`, `backbone.*`, `linear.*`,
`train.*`, `finetune.*`, `scratch.*` (the learning curve retrains every path with the main run's
settings) and `diagnose.*`. Inputs: reports/train/{linear,finetune,scratch}.json,
reports/metrics.json, data/processed/{images/,manifest.csv,splits.csv,augmented.csv},
data/features/, predictions/{linear,finetune,scratch}.csv (fraction 1.0 reuse).
Writes reports/diagnostics.json and reports/figures/diagnose/{curves,trifecta,validation_curve,
learning_curve}.png.
"""

from pipeline.cli import entry
from pipeline.steps.diagnose import run_diagnose

if __name__ == "__main__":
    entry("diagnose", run_diagnose, __doc__)
