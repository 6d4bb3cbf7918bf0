"""features stage: embed every image and every augmented view with the frozen pretrained backbone.

Reads params `backbone.*`, `features.batch_size`, `train.num_threads`, `train.device`; writes
data/features/images.npy (N, D) float32 in manifest row order, data/features/augmented.npy (M, D)
in augmented.csv order, and data/features/info.json (backbone, weights sha256, D, timing).
"""

from pipeline.cli import entry
from pipeline.steps.features import run_features

if __name__ == "__main__":
    entry("features", run_features, __doc__)
