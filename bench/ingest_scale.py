"""Ingest at scale: files/s and peak memory for 1k, 5k and 20k synthetic 1024 x 1024 DICOMs.

``make bench`` runs ``python -m bench.ingest_scale``; results: printed table and
reports/bench/ingest_scale.json (BENCHMARKS.md records them). The claim under test: ingest's cost
grows linearly with the number of files (files/s within 10% across sizes) and its memory does
not grow (peak RSS of the whole process tree, stage + decoder workers, flat).

The files: 8-bit MONOCHROME2 DX, 1024 x 1024, **JPEG baseline** (1.2.840.10008.1.2.4.50, the
common lossy PACS export), ~200 KB each, so 20,000 files take ~4 GB of disk instead of the 40 GB
of 12-bit uncompressed ones, and stay in the page cache (a run that read from disk for 20k but
from memory for 1k would measure the disk, not ingest). Every file is decoded for real (libjpeg
through pydicom, then VOI, resize to ``ingest.size``, sha256 of the file): the pixel data is one of
``--distinct`` (64) codestreams encoded once with Pillow (chest-like smooth content plus noise,
quality 90), and each file has its own SOPInstanceUID and PatientID (two images per patient), so
no file is a duplicate. Files lie in nested folders of 1,000. Each size is generated, ingested by
the real stages (``python -m stages.sources``, then ``python -m stages.ingest``) in a temporary
workspace, checked (every file accepted, manifest rows == stored images, the store's shards) and
deleted before the next, so disk use is bounded by the largest size.

files/s is given two ways: from the ingest call's own timer (``reports/ingest.json`` ->
``timing``: walk, labels, worker pool start-up, decode, store, manifest) and from the stage
process's wall time (interpreter start-up and imports included, ~2-4 s, which a 1k run does not
amortise). The 10% target is checked on the first.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit

from bench.ingest import dx_header
from bench.stage_run import run_ingest_stage
from pipeline.common import write_json
from pipeline.params import REPO_ROOT
from pipeline.store import open_store

SIZE_PX = 1024
SIZES = (1000, 5000, 20000)
OUT = REPO_ROOT / "reports" / "bench" / "ingest_scale.json"


def codestreams(k: int, size: int = SIZE_PX) -> list[bytes]:
    """``k`` distinct JPEG baseline codestreams of chest-like 8-bit images."""
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    out = []
    for seed in range(k):
        rng = np.random.default_rng(seed)
        img = 110 + 70 * np.sin(6 * x + seed) * np.cos(4 * y) + rng.normal(0, 4, (size, size))
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def write_corpus(folder: Path, n: int, streams: list[bytes], size: int = SIZE_PX) -> int:
    """``n`` files under ``folder/<thousands>/``, plus labels.csv; returns the bytes written."""
    rows = []
    total = 0
    for i in range(n):
        rel = f"{i // 1000:03d}/{i:06d}.dcm"
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        ds = dx_header(f"scale-{i}", f"SCALE-{i // 2}", size, JPEGBaseline8Bit, 8)
        ds.PatientSex = "MF"[i % 2]
        ds.PixelData = encapsulate([streams[i % len(streams)]])
        ds["PixelData"].VR = "OB"
        ds.save_as(path, enforce_file_format=True)
        total += path.stat().st_size
        rows.append((rel, "abnormal" if i % 2 else "normal"))
    pd.DataFrame(rows, columns=["file", "label"]).to_csv(folder / "labels.csv", index=False)
    return total


def measure(n: int, streams: list[bytes], workers: int, tmp: Path) -> dict[str, Any]:
    root = tmp / f"n{n}"
    try:
        t = time.perf_counter()
        nbytes = write_corpus(root / "dicom", n, streams)
        gen_s = time.perf_counter() - t
        load = os.getloadavg()[0]
        run = run_ingest_stage(root / "dicom", root / "ws", workers, sample_s=0.05)
        if run.returncode != 0:
            raise RuntimeError(f"ingest of {n} files failed:\n{run.output[-3000:]}")
        report = json.loads((root / "ws/reports/ingest.json").read_text())
        store = open_store(root / "ws/data/processed/images")
        manifest_rows = len(pd.read_csv(root / "ws/data/processed/manifest.csv"))
        if not report["accepted"] == report["seen"] == n == manifest_rows == len(store):
            raise RuntimeError(f"{n} files: accepted {report['accepted']}, {report['reasons']}")
        timing = report["timing"]
        return {
            "files": n,
            "corpus_mib": round(nbytes / 2**20, 1),
            "generate_s": round(gen_s, 1),
            "load_avg_at_start": round(load, 2),
            "ingest_s": timing["seconds"],
            "files_per_s": round(n / timing["seconds"], 1),
            "stage_wall_s": round(run.seconds, 1),
            "stage_files_per_s": round(n / run.seconds, 1),
            "workers": timing["workers"],
            "cpu_s": round(run.cpu_seconds, 1),
            "files_per_cpu_s": round(n / run.cpu_seconds, 2),
            "peak_rss_tree_mib": round(run.peak_tree_rss / 2**20, 1),
            "peak_rss_parent_mib": round(run.peak_parent_rss / 2**20, 1),
            "peak_pss_tree_mib": round(run.peak_tree_pss / 2**20, 1),
            "store_shards": store.n_shards,
            "store_mib": round(store.nbytes / 2**20, 1),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--workers", type=int, default=0, help="ingest.workers (0 = one per core)")
    ap.add_argument("--distinct", type=int, default=64, help="distinct JPEG codestreams (default 64)")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "settings": {"size_px": SIZE_PX, "transfer_syntax": "JPEG baseline 8-bit", "distinct": a.distinct},
        "runs": [],
    }
    try:
        streams = codestreams(a.distinct)
        for n in a.sizes:
            got = measure(n, streams, a.workers, tmp)
            print(json.dumps(got), flush=True)
            result["runs"].append(got)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    runs = result["runs"]
    fps = [r["files_per_s"] for r in runs]
    cpu = [r["files_per_cpu_s"] for r in runs]
    rss = [r["peak_rss_tree_mib"] for r in runs]
    pss = [r["peak_pss_tree_mib"] for r in runs]
    result["throughput_min_over_max"] = round(min(fps) / max(fps), 3)
    result["cpu_throughput_min_over_max"] = round(min(cpu) / max(cpu), 3)
    result["rss_max_over_min"] = round(max(rss) / min(rss), 3)
    result["pss_max_over_min"] = round(max(pss) / min(pss), 3) if min(pss) > 0 else None
    result["targets"] = {
        "throughput_within_10%": result["throughput_min_over_max"] >= 0.9,
        "cpu_throughput_within_10%": result["cpu_throughput_min_over_max"] >= 0.9,
        "rss_flat_within_10%": result["rss_max_over_min"] <= 1.1,
    }
    write_json(a.out, result)
    print_table(result)
    return 0


def print_table(r: dict[str, Any]) -> None:
    print(f"\ningest at scale, {r['date']}, {r['machine']['cores']} cores, {SIZE_PX}px JPEG baseline -> store")
    head = ("files", "load", "ingest s", "files/s", "stage f/s", "f/cpu-s", "RSS tree", "RSS parent", "PSS tree")
    print("".join(f"{h:>11}" for h in head))
    for x in r["runs"]:
        vals = (
            x["files"],
            x["load_avg_at_start"],
            x["ingest_s"],
            x["files_per_s"],
            x["stage_files_per_s"],
            x["files_per_cpu_s"],
            x["peak_rss_tree_mib"],
            x["peak_rss_parent_mib"],
            x["peak_pss_tree_mib"],
        )
        print("".join(f"{v:>11}" for v in vals))
    print(
        f"files/s min/max = {r['throughput_min_over_max']} (per CPU second: {r['cpu_throughput_min_over_max']}), "
        f"peak RSS max/min = {r['rss_max_over_min']} (PSS: {r['pss_max_over_min']}); "
        f"targets: {r['targets']}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
