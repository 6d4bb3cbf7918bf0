"""Ingest of a mutated PACS-like corpus: the "done when" check of the robustness work.

Makes N mutated DICOM files of every class in tests/mutations.py (deterministic), runs the real
stages (`python -m stages.sources`, then `python -m stages.ingest`) on them in a temporary
workspace, samples the peak resident memory of the whole process tree (stage + workers) every
20 ms, and checks: exit code 0, accepted + rejected == seen, manifest rows == accepted == stored
images, every stored image finite and in [0, 1], no planted patient name or ID in any output.

    python -m bench.ingest_mutations --files 2000      # results: reports/bench/ingest_mutations.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from bench.stage_run import run_ingest_stage
from pipeline.common import write_json
from pipeline.params import REPO_ROOT
from pipeline.store import open_store

sys.path.insert(0, str(REPO_ROOT / "tests"))
from mutations import PLANTED_ID, PLANTED_NAME, make_corpus, mutation_classes  # noqa: E402

OUT = REPO_ROOT / "reports" / "bench" / "ingest_mutations.json"


def run(n_files: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="cxr-mut-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            make_corpus(root / "dicom", n_files, seed=7)
        make_s = time.perf_counter() - start
        ws = root / "ws"
        stage = run_ingest_stage(root / "dicom", ws, workers)
        output, seconds, peak = stage.output, stage.seconds, stage.peak_tree_rss
        report = json.loads((ws / "reports/ingest.json").read_text())
        images = np.asarray(open_store(ws / "data/processed/images"))
        manifest = pd.read_csv(ws / "data/processed/manifest.csv", keep_default_na=False, na_values=[""])
        leaks = []
        for f in [*ws.rglob("*.json"), *ws.rglob("*.csv"), *ws.rglob("*.log")]:
            if f.name == "params.yaml":
                continue
            blob = f.read_bytes()
            leaks += [f"{f.relative_to(ws)}: {n}" for n in (PLANTED_NAME, PLANTED_ID) if n.encode() in blob]
        leaks += [f"stage output: {n}" for n in (PLANTED_NAME, PLANTED_ID) if n in output]
        checks = {
            "exit_code_0": stage.returncode == 0,
            "accounted": report["accepted"] + report["rejected"] == report["seen"] == n_files,
            "manifest_rows_equal_accepted": len(manifest) == report["accepted"] == len(images),
            "stored_images_finite_in_0_1": bool(np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1),
            "no_planted_identifier": not leaks,
            "no_traceback_in_stage_output": "Traceback" not in output,
            "peak_rss_below_2_gib": peak < 2 * 2**30,
        }
        return {
            "files": n_files,
            "classes": len(mutation_classes()),
            "workers": workers,
            "corpus_seconds": round(make_s, 1),
            "ingest_seconds": round(seconds, 1),
            "files_per_s": round(n_files / seconds, 1),
            "peak_rss_tree_mib": round(peak / 2**20, 1),
            "accepted": report["accepted"],
            "rejected": report["rejected"],
            "reasons": report["reasons"],
            "leaks": leaks,
            "checks": checks,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
            "date": time.strftime("%Y-%m-%d"),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    result = run(args.files, args.workers)
    write_json(args.out, result)
    print(json.dumps(result, indent=1))
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
