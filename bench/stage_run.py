"""Run the real `sources` and `ingest` stages on a DICOM folder in a fresh workspace, sampling
the resident memory of the whole process tree (the stage and its decoder workers)."""

from __future__ import annotations

import contextlib
import os
import resource
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
    # bytes: proportional set size summed over the tree (pages shared by forked workers with the
    # stage counted once, not once per process as in the RSS sum); 0 where /proc/*/smaps is absent
    peak_tree_pss: int
    cpu_seconds: float  # user + system CPU of the stage and its workers


def _memory(proc: psutil.Process) -> tuple[int, int, int]:
    """(tree RSS, parent RSS, tree PSS) in bytes, now."""
    parent = tree = pss = 0
    procs = [proc]
    with contextlib.suppress(psutil.Error):
        procs += proc.children(recursive=True)
    for i, p in enumerate(procs):
        with contextlib.suppress(psutil.Error, AttributeError):
            rss = p.memory_info().rss
            tree += rss
            parent = rss if i == 0 else parent
            pss += getattr(p.memory_full_info(), "pss", 0)
    return tree, parent, pss


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
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.ingest", "--root", str(ws)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    ps, peak = psutil.Process(proc.pid), [0, 0, 0]
    while proc.poll() is None:
        peak = [max(a, b) for a, b in zip(peak, _memory(ps), strict=True)]
        time.sleep(sample_s)
    seconds = time.perf_counter() - t0
    # The stage waited for its workers and we for the stage: both are in RUSAGE_CHILDREN now.
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    return StageRun(proc.returncode, output, seconds, peak[0], peak[1], peak[2], cpu)
