"""The whole demo pipeline, timed: ``dvc repro`` from scratch on a fresh clone of this checkout.

``python -m bench.repro [--device cuda]`` (run by ``make bench-gpu``): clones the committed tree to
a temporary folder, sets ``train.device``, runs ``dvc repro`` there with this virtualenv's
``python`` and records the wall time of the whole run and of each stage (from DVC's
``Running stage`` lines) in reports/bench/repro-<device>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from pipeline.common import write_json
from pipeline.params import REPO_ROOT


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], check=True)
        params = yaml.safe_load((clone / "params.yaml").read_text())
        params["train"]["device"] = args.device
        (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        t0 = time.perf_counter()
        stage_start: dict[str, float] = {}
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "dvc"), "repro"],
            cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            m = re.match(r"Running stage '([^']+)'", line)
            if m:
                stage_start[m.group(1)] = time.perf_counter() - t0
        rc = proc.wait()
        total = time.perf_counter() - t0
    names = list(stage_start)
    ends = [stage_start[n] for n in names[1:]] + [total]
    stages = {n: round(e - stage_start[n], 1) for n, e in zip(names, ends, strict=True)}
    out = REPO_ROOT / "reports" / "bench" / f"repro-{args.device}.json"
    write_json(
        out,
        {
            "date": dt.date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "device": args.device,
            "returncode": rc,
            "total_s": round(total, 1),
            "stages_s": stages,
        },
    )
    print(f"dvc repro on a fresh clone: {total:.0f} s (exit {rc}); per stage: {stages} -> {out}")


if __name__ == "__main__":
    main()
