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
no file is a duplicate. Files lie in nested folders of 1,000. The corpus is generated once for
the largest size; each size is a folder of symlinks to its first n files (disk: the largest
size only, ~4 GB). Each run ingests one size with the real stages (``python -m stages.sources``,
then ``python -m stages.ingest``) in a fresh temporary workspace, checks it (every file accepted,
manifest rows == stored images) and deletes the workspace. ``--rounds`` (2) rounds run every size
in turn, so load from other jobs on a shared machine hits all sizes alike; per size the fastest
round's files/s counts, and the largest peak memory of any round.

files/s is given three ways: from the ingest call's own timer (``reports/ingest.json`` ->
``timing``: walk, labels, worker pool start-up, decode, store, manifest) and from the stage
process's wall time (interpreter start-up and imports included, ~1-3 s, which a 1k run does not
amortise), and per CPU second of the stage and its workers (less sensitive to other jobs). Memory:
the peak over samples every 50 ms of the RSS summed over the process tree (pages that the forked
workers share with the stage are counted once per process) and of the PSS (each shared page
split between its processes: the tree's real footprint). The 10% targets are checked on files/s
(ingest's timer) and on the RSS sum.
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


def size_folder(corpus: Path, n: int, folder: Path) -> Path:
    """A folder of symlinks to the first ``n`` files of ``corpus`` (same nested layout) and
    their labels: every size reads the same bytes from the page cache."""
    labels = pd.read_csv(corpus / "labels.csv").iloc[:n]
    for rel in labels["file"]:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(corpus / rel, folder / rel)
    labels.to_csv(folder / "labels.csv", index=False)
    return folder


def measure(folder: Path, n: int, workers: int, ws: Path) -> dict[str, Any]:
    """Ingest ``folder`` (n files) with the real stages in the fresh workspace ``ws``; check it."""
    try:
        load = os.getloadavg()[0]
        run = run_ingest_stage(folder, ws, workers, sample_s=0.05)
        if run.returncode != 0:
            raise RuntimeError(f"ingest of {n} files failed:\n{run.output[-3000:]}")
        report = json.loads((ws / "reports/ingest.json").read_text())
        store = open_store(ws / "data/processed/images")
        manifest_rows = len(pd.read_csv(ws / "data/processed/manifest.csv"))
        if not report["accepted"] == report["seen"] == n == manifest_rows == len(store):
            raise RuntimeError(f"{n} files: accepted {report['accepted']}, {report['reasons']}")
        timing = report["timing"]
        return {
            "files": n,
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
        shutil.rmtree(ws, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--rounds", type=int, default=2, help="rounds over all sizes, interleaved (default 2)")
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
        "settings": {
            "size_px": SIZE_PX,
            "transfer_syntax": "JPEG baseline 8-bit",
            "distinct": a.distinct,
            "rounds": a.rounds,
        },
        "rounds": [],
    }
    try:
        t = time.perf_counter()
        nbytes = write_corpus(tmp / "corpus", max(a.sizes), codestreams(a.distinct))
        generated = time.perf_counter() - t
        # Write the corpus's dirty pages back before timing, so that no size's run shares the
        # machine with the kernel's writeback of ~4 GB (a precaution: on the dev VM it took
        # 0.8 s, recorded as sync_s).
        t = time.perf_counter()
        os.sync()
        result["corpus"] = {
            "files": max(a.sizes),
            "mib": round(nbytes / 2**20, 1),
            "generate_s": round(generated, 1),
            "sync_s": round(time.perf_counter() - t, 1),
        }
        folders = {n: size_folder(tmp / "corpus", n, tmp / f"n{n}") for n in a.sizes}
        for r in range(a.rounds):  # interleaved, so that load from other jobs hits every size alike
            for n in a.sizes:
                got = measure(folders[n], n, a.workers, tmp / f"ws-{n}-{r}") | {"round": r}
                print(json.dumps(got), flush=True)
                result["rounds"].append(got)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # Per size: the fastest round (the least disturbed by other jobs), its memory, and the
    # largest peak memory of any round.
    best = []
    for n in a.sizes:
        mine = [x for x in result["rounds"] if x["files"] == n]
        top = max(mine, key=lambda x: x["files_per_s"])
        best.append(
            top
            | {
                "max_peak_rss_tree_mib": max(x["peak_rss_tree_mib"] for x in mine),
                "max_peak_pss_tree_mib": max(x["peak_pss_tree_mib"] for x in mine),
            }
        )
    result["runs"] = best
    runs = best
    fps = [r["files_per_s"] for r in runs]
    cpu = [r["files_per_cpu_s"] for r in runs]
    rss = [r["max_peak_rss_tree_mib"] for r in runs]
    pss = [r["max_peak_pss_tree_mib"] for r in runs]
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
            x["max_peak_rss_tree_mib"],
            x["peak_rss_parent_mib"],
            x["max_peak_pss_tree_mib"],
        )
        print("".join(f"{v:>11}" for v in vals))
    print(
        f"files/s min/max = {r['throughput_min_over_max']} (per CPU second: {r['cpu_throughput_min_over_max']}), "
        f"peak RSS max/min = {r['rss_max_over_min']} (PSS: {r['pss_max_over_min']}); "
        f"targets: {r['targets']}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
