"""DDP under torchrun: two CPU processes (gloo) train like one, only rank 0 writes, resume works.

Runs the real stage command (``python -m stages.finetune`` with ``train.nproc: 2`` relaunches
itself under ``torch.distributed.run``) on a tiny workspace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from pipeline import distributed
from pipeline.params import REPO_ROOT
from pipeline.predictions import read_predictions
from pipeline.trained_methods import run_trained_method
from pipeline.workspace import Workspace
from tests.test_training import _dataset, _params, _write_project

TRAIN = {"epochs": 2, "batch_size": 8, "augment_on_the_fly": False, "device": "cpu", "num_threads": 1}


def _workspace(root, nproc: int):
    ds = _dataset(n=40)
    _write_project(root, ds)
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["train"].update(TRAIN, nproc=nproc)
    raw["data"]["external"] = []
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    return ds


def _stage(root, stage: str = "finetune") -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", f"stages.{stage}", "--root", str(root)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_shard_and_gather_are_inverse() -> None:
    order = np.arange(10) * 3
    ctxs = [distributed.Context(rank=r, world=3) for r in range(3)]
    shards = [distributed.shard(order, c) for c in ctxs]
    assert all(len(s) == 4 for s in shards)  # padded to equal length, as DistributedSampler does
    assert sorted(set(np.concatenate(shards))) == sorted(order)
    rows = np.arange(7)
    parts = [rows[c.rank :: c.world] for c in ctxs]
    out = np.empty(7, int)
    for r, p in enumerate(parts):
        out[r::3] = p
    assert (out == rows).all()
    with pytest.raises(ValueError, match="multiple"):
        distributed.local_batch_size(10, ctxs[0])


def test_two_gloo_processes_match_one_and_only_rank_0_writes(tmp_path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    _workspace(one, 1)
    _workspace(two, 2)
    run_trained_method("finetune", _params(train=TRAIN), Workspace(one))
    done = _stage(two)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DDP: rank 0 of 2 (gloo backend)" in done.stderr and "DDP: rank 1 of 2" in done.stderr
    log2 = json.loads((two / "reports/train/finetune.json").read_text())
    log1 = json.loads((one / "reports/train/finetune.json").read_text())
    assert [e["epoch"] for e in log2["history"]] == [1, 2]
    # Same global batch, same order, gradients averaged: the same run up to dropout draws and
    # floating-point summation order.
    for e1, e2 in zip(log1["history"], log2["history"], strict=True):
        assert e2["val_loss"] == pytest.approx(e1["val_loss"], rel=0.05)
        assert e2["train_loss"] == pytest.approx(e1["train_loss"], rel=0.05)
    # The model's own probabilities: the calibrated ones refit a sigmoid on a 40-image val split,
    # which magnifies the same small difference.
    classes = ["normal", "abnormal"]
    cols = [f"raw_prob_{c}" for c in classes]
    p1 = read_predictions(one / "predictions/finetune.csv", classes, raw=True)[cols].to_numpy()
    p2 = read_predictions(two / "predictions/finetune.csv", classes, raw=True)[cols].to_numpy()
    assert np.abs(p1 - p2).max() < 0.05
    # One writer: one checkpoint, one set of outputs, no temp files from a second rank.
    assert sorted(p.name for p in (two / "models/.resume/finetune").iterdir()) == ["checkpoint.pt"]
    # Resume: a rerun with the same params finds the finished checkpoint and trains nothing.
    again = _stage(two)
    assert again.returncode == 0, again.stderr[-3000:]
    log3 = json.loads((two / "reports/train/finetune.json").read_text())
    assert log3["resumed_from_epoch"] == 2 and log3["history"] == log2["history"]
