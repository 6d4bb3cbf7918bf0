"""transferability stage: rank the candidate backbones by LogME on frozen train features.

Reads params `seed`, `data.classes`, `backbone`, `features.batch_size`, `train.device`,
`train.num_threads` and `strategies.candidates`. Inputs: data/processed/ (store, manifest,
splits), data/features/ (the configured backbone's features, reused), reports/train/linear.json
(val AUROC). Writes reports/transferability.json; nothing is trained or downloaded.
"""

from pipeline.cli import entry
from pipeline.steps.transferability import run_transferability

if __name__ == "__main__":
    entry("transferability", run_transferability, __doc__)
