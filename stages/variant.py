"""variant stage: one strategy of the menu listed in strategies.variants (`variant@<name>`).

Usage: python -m stages.variant <name> [--params FILE] [--root DIR]. Writes
predictions/<name>.csv and reports/train/<name>.json (trained variants also models/<name>/ and the
dvclive dir reports/train/<name>/).
"""

from pipeline.cli import entry
from pipeline.params import VARIANT_NAMES
from pipeline.steps.variant import run_variant

if __name__ == "__main__":
    entry("variant", run_variant, __doc__, methods=VARIANT_NAMES)
