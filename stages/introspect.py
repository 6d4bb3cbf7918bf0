"""introspect stage: architecture summary, per-path training plan, first-layer filters, feature
maps and unit visualisations of the re-used network, before and after fine-tuning.

Reads params `seed`, `data.classes`, `backbone`, `finetune`, `scratch`, `train.device`,
`train.num_threads` and `introspect.*`. Inputs: data/processed/ (store, manifest, splits) and
models/finetune/best.pt. Writes reports/introspection/introspection.json and
reports/introspection/figures/*.png; offline.
"""

from pipeline.cli import entry
from pipeline.steps.introspect import run_introspect

if __name__ == "__main__":
    entry("introspect", run_introspect, __doc__)
