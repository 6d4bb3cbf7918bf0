"""recommend stage: which transfer method this data set rewards, chosen on validation only.

Reads params `diagnose.chance_margin` and `strategies.variants`, reports/evaluation.json (val
AUROCs, paired comparisons on val, test and each external set), reports/diagnostics.json and the
train logs under reports/train/; writes reports/recommendation.json (schema in DESIGN.md).
"""

from pipeline.cli import entry
from pipeline.steps.recommend import run_recommend

if __name__ == "__main__":
    entry("recommend", run_recommend, __doc__)
