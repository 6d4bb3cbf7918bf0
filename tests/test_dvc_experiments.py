"""Queued experiments (README "Experiments and sweeps"): two sweeps points queued with
`dvc exp run --queue -S finetune.lr_powers=...`, run by two `dvc queue start -j 2` workers in the
background, compared with `dvc exp show --json`.

Runs the real dvc.yaml on a tiny project (tests/dvc_project.py, the session fixture dvc_baseline).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from dvc_project import DVC_TARGET, dvc

pytestmark = pytest.mark.slow

SWEEP = ("[5, 3, 1]", "[4, 2, 1]")  # finetune.lr_powers; the baseline is [6, 4, 2]


def _experiments(show: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{experiment name: its data (params, metrics)} from `dvc exp show --json`."""
    out = {}
    for commit in show:
        for group in commit.get("experiments") or []:
            for rev in group.get("revs", []):
                out[rev["name"]] = rev["data"]
    return out


def _wait_for_queue(project: Path, n: int, timeout_s: float = 400) -> str:
    """Poll `dvc queue status` until ``n`` tasks succeeded; a failed task fails with its log."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = dvc(project, "queue", "status")
        failed = [line.split()[1] for line in status.splitlines() if " Failed" in line]
        assert not failed, status + "".join(dvc(project, "queue", "logs", name) for name in failed)
        if status.count("Success") >= n:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(2)


def test_queued_sweep_runs_in_the_background_and_exp_show_compares_it(dvc_baseline: Path) -> None:
    project = dvc_baseline
    names = [f"lr-{i}" for i in range(len(SWEEP))]
    for name, powers in zip(names, SWEEP, strict=True):
        out = dvc(project, "exp", "run", "--queue", "-n", name, "-S", f"finetune.lr_powers={powers}", DVC_TARGET)
        assert "Queued experiment" in out
    assert dvc(project, "queue", "status").count("Queued") == len(SWEEP)
    dvc(project, "queue", "start", "-j", "2")  # two workers, as README shows (one per GPU there)
    try:
        _wait_for_queue(project, len(SWEEP))
    finally:
        dvc(project, "queue", "stop", "--kill")

    exps = _experiments(json.loads(dvc(project, "exp", "show", "--json").strip().splitlines()[-1]))
    assert set(names) <= set(exps), exps.keys()
    powers = {n: exps[n]["params"]["params.yaml"]["data"]["finetune"]["lr_powers"] for n in names}
    assert powers == {"lr-0": [5, 3, 1], "lr-1": [4, 2, 1]}
    metrics = {n: exps[n]["metrics"]["reports/metrics.json"]["data"] for n in names}
    for n in names:
        assert set(metrics[n]) >= {"linear", "finetune", "scratch"}
    # Only finetune was retrained: linear's and scratch's numbers are the baseline's, finetune's differ.
    assert metrics["lr-0"]["linear"] == metrics["lr-1"]["linear"]
    assert metrics["lr-0"]["scratch"] == metrics["lr-1"]["scratch"]
    assert metrics["lr-0"]["finetune"] != metrics["lr-1"]["finetune"]
    # The workspace is still the baseline: experiments ran in their own temporary copies.
    assert yaml.safe_load((project / "params.yaml").read_text())["finetune"]["lr_powers"] == [6, 4, 2]
