"""evaluate stage: clinical metrics with confidence intervals for every transfer path.

Reads params `seed`, `data.classes`, `data.positive_class`, `data.external` and `evaluate.*`,
data/processed/manifest.csv and the predictions/<path>.csv files that exist (at least one);
writes reports/metrics.json (flat, for `dvc metrics show`), reports/evaluation.json (everything,
schema in DESIGN.md) and the `dvc plots` CSVs under reports/plots/{roc,pr,calibration}/.
"""

from pipeline.cli import entry
from pipeline.steps.evaluate import run_evaluate

if __name__ == "__main__":
    entry("evaluate", run_evaluate, __doc__)
