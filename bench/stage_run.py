"""Run the real `sources` and `ingest` stages on a DICOM folder in a fresh workspace, sampling
the resident memory of the whole process tree (the stage and its decoder workers)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml

from pipeline.params import REPO_ROOT


@dataclass(frozen=True)
class StageRun:
    returncode: int
    output: str  # the ingest stage's stdout + stderr
    seconds: float  # wall time of the ingest stage process, interpreter start-up included
    peak_tree_rss: int  # bytes: the stage + its workers, summed at each sample
    peak_parent_rss: int  # bytes: the stage process alone


def _rss(proc: psutil.Process) -> tuple[int, int]:
    """(tree, parent) resident bytes now."""
    parent = tree = 0
    with contextlib.suppress(psutil.Error):
        parent = tree = proc.memory_info().rss
    with contextlib.suppress(psutil.Error):
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                tree += child.memory_info().rss
    return tree, parent


def run_ingest_stage(dicom_dir: Path, ws: Path, workers: int, sample_s: float = 0.02) -> StageRun:
    """Write ``ws/params.yaml`` (the repository's, pointed at ``dicom_dir``/labels.csv, no external
    set, ``ingest.workers``), run ``stages.sources`` then ``stages.ingest`` with ``--root ws``."""
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["data"].update(dicom_dir=str(dicom_dir), labels_csv=str(dicom_dir / "labels.csv"), external=[])
    raw["ingest"]["workers"] = workers
    ws.mkdir(parents=True, exist_ok=True)
    (ws / "params.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "CI": "1"}
    subprocess.run(
        [sys.executable, "-m", "stages.sources", "--root", str(ws)],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.ingest", "--root", str(ws)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    ps, peak_tree, peak_parent = psutil.Process(proc.pid), 0, 0
    while proc.poll() is None:
        tree, parent = _rss(ps)
        peak_tree, peak_parent = max(peak_tree, tree), max(peak_parent, parent)
        time.sleep(sample_s)
    output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    return StageRun(proc.returncode, output, time.perf_counter() - t0, peak_tree, peak_parent)
