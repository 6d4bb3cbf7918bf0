"""diagnose stage: overfitting diagnostics, transfer trifecta, validation and learning curves.

Reads params `seed`, `data.*` (classes, positive class), `augment.*`, `backbone.*`, `linear.*`,
`train.*`, `finetune.*`, `scratch.*` (the learning curve retrains every path with the main run's
settings) and `diagnose.*`. Inputs: reports/train/{linear,finetune,scratch}.json,
reports/metrics.json, data/processed/{images.npy,manifest.csv,splits.csv,augmented.csv},
data/features/, predictions/{linear,finetune,scratch}.csv (fraction 1.0 reuse).
Writes reports/diagnostics.json and reports/figures/diagnose/{curves,trifecta,validation_curve,
learning_curve}.png.
"""

from __future__ import annotations

import argparse
import time

from pipeline import diagnostics as D
from pipeline import paths
from pipeline.common import get_logger, read_json, seed_everything, write_json
from pipeline.dataset import load_dataset
from pipeline.linear import load_linear_inputs
from pipeline.params import REPO_ROOT, load_params
from pipeline.report import figures

log = get_logger("diagnose")
FIGURE_DIR = paths.FIGURES / "diagnose"


def _read(rel) -> dict:
    p = paths.repo_path(rel)
    if not p.exists():
        raise SystemExit(f"diagnose: {rel} is missing; run the stage that writes it (dvc repro)")
    return read_json(p)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    seed_everything(params.seed)
    start = time.perf_counter()

    logs = {p: _read(paths.train_log(p)) for p in paths.PATHS}
    metrics = _read(paths.METRICS)
    rules = D.Rules.from_params(params)

    dataset = load_dataset(params, root=REPO_ROOT)
    linear_inputs = load_linear_inputs(REPO_ROOT)
    fit = D.make_fit(dataset, params, linear_inputs)
    lc = D.pipeline_learning_curve(dataset, params, fit)
    doc = D.build_diagnostics(logs, metrics, rules, lc)

    fig_dir = paths.repo_path(FIGURE_DIR)
    out = {
        "curves": figures.plot_training_curves(doc["paths"], fig_dir / "curves.png"),
        "trifecta": figures.plot_trifecta(doc["paths"], fig_dir / "trifecta.png"),
        "validation_curve": figures.plot_validation_curve(doc["paths"]["linear"], fig_dir / "validation_curve.png"),
        "learning_curve": figures.plot_learning_curve(lc["summary"], fig_dir / "learning_curve.png"),
    }
    doc["figures"] = {k: str(v.relative_to(REPO_ROOT)) for k, v in out.items()}
    doc["wall_time_s"] = round(time.perf_counter() - start, 1)
    write_json(paths.repo_path(paths.DIAGNOSTICS), doc)
    for path, v in doc["verdicts"].items():
        log.info("%s: %s", path, v["text"])
    for ref, c in lc["scratch_catch_up"].items():
        log.info("learning curve vs %s: %s", ref, c["text"])
    log.info("diagnose done in %.1f s", doc["wall_time_s"])


if __name__ == "__main__":
    main()
