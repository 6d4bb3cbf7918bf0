"""Queued experiments with one worker per GPU, on a tiny copy of the project (not in ``make bench``).

Builds the tiny project of tests/dvc_project.py (32 radiographs at 32 px, 1 epoch), runs `dvc
repro evaluate`, queues ``--experiments`` values of ``finetune.lr_powers`` with `dvc exp run
--queue`, starts worker k with ``CUDA_VISIBLE_DEVICES=k-1`` (`CUDA_VISIBLE_DEVICES=0 dvc queue
start -j 1`, then `CUDA_VISIBLE_DEVICES=1 dvc queue start -j 2`, ...), and while they run reads the
environment of every stage process (/proc/<pid>/environ) to record which device each experiment's
stages saw. Ends with `dvc exp show --json`, the wall time and that record
(reports/bench/dvc_queue.json). On a machine without GPUs the variable is still passed on (and
the stages run on the CPU): this checks the pinning mechanism, not GPU speed.

    python -m bench.dvc_queue --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from pipeline.common import write_json
from pipeline.params import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests"))
from dvc_project import BIN, DVC_TARGET, dvc, env, git, tiny_project  # noqa: E402

OUT = REPO_ROOT / "reports" / "bench" / "dvc_queue.json"
SWEEP = ("[5, 3, 1]", "[4, 2, 1]", "[5, 4, 2]", "[4, 3, 2]")


MARK = "CXR_QUEUE_BENCH"  # set for the workers, so their stage processes can be told from others'


def _stage_envs(mark: str) -> dict[int, tuple[str, str | None, str]]:
    """{pid: (stage module, CUDA_VISIBLE_DEVICES, cwd)} of the running `python -m stages.*`
    processes whose environment carries ``MARK=mark`` (inherited from our queue workers)."""
    out = {}
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if len(cmd) >= 3 and cmd[1] == "-m" and cmd[2].startswith("stages."):
            try:
                environ = p.environ()
                if environ.get(MARK) == mark:
                    out[p.pid] = (cmd[2], environ.get("CUDA_VISIBLE_DEVICES"), p.cwd())
            except psutil.Error:
                continue
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2, help="queue workers, worker k pinned to GPU k-1")
    ap.add_argument("--experiments", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cxr-queue-") as tmp:
        project = tiny_project(Path(tmp) / "project")
        t = time.perf_counter()
        dvc(project, "repro", "-q", DVC_TARGET, timeout=900)
        git(project, "add", "-A")
        git(project, "commit", "-q", "-m", "baseline")
        baseline_s = time.perf_counter() - t
        names = []
        for i, powers in enumerate(SWEEP[: a.experiments]):
            names.append(f"lr-{i}")
            dvc(project, "exp", "run", "--queue", "-n", names[-1], "-S", f"finetune.lr_powers={powers}", DVC_TARGET)
        t = time.perf_counter()
        for k in range(1, a.workers + 1):
            subprocess.run(
                [str(BIN / "dvc"), "queue", "start", "-j", str(k)],
                cwd=project,
                env=env() | {"CUDA_VISIBLE_DEVICES": str(k - 1), MARK: tmp},
                check=True,
                capture_output=True,
            )
        seen: dict[int, tuple[str, str | None, str]] = {}
        status = ""
        while time.perf_counter() - t < 900:
            seen |= _stage_envs(tmp)
            status = dvc(project, "queue", "status")
            if status.count("Success") + status.count("Failed") >= len(names):
                break
            time.sleep(0.5)
        queue_s = time.perf_counter() - t
        dvc(project, "queue", "stop")
        show = json.loads(dvc(project, "exp", "show", "--json").strip().splitlines()[-1])
    exps: dict[str, Any] = {}
    for commit in show:
        for group in commit.get("experiments") or []:
            for rev in group.get("revs", []):
                data = rev["data"]
                metrics = data["metrics"]["reports/metrics.json"]["data"]
                exps[rev["name"]] = {
                    "lr_powers": data["params"]["params.yaml"]["data"]["finetune"]["lr_powers"],
                    "finetune_test_auroc": metrics["finetune"]["test"]["auroc"],
                    "linear_test_auroc": metrics["linear"]["test"]["auroc"],
                }
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "workers": a.workers,
        "baseline_repro_s": round(baseline_s, 1),
        "queue_wall_s": round(queue_s, 1),
        "queue_status": status,
        "stage_processes_seen": [
            {"stage": s, "CUDA_VISIBLE_DEVICES": v, "workspace": Path(cwd).name} for s, v, cwd in seen.values()
        ],
        "experiments": exps,
    }
    write_json(a.out, result)
    print(json.dumps(result, indent=1))
    return 0 if status.count("Success") == len(names) else 1


if __name__ == "__main__":
    os.environ.setdefault("CXR_LOG_LEVEL", "WARNING")
    raise SystemExit(main())
