"""Shared test fixtures: the repository's params, and tiny workspaces the stage functions run in.

Stage functions (``pipeline.steps.<stage>.run_<stage>(params, workspace)``) are called on a
temporary :class:`~pipeline.workspace.Workspace`; nothing patches a global root.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import paths
from pipeline.params import REPO_ROOT, Params, validate_params
from pipeline.store import write_store
from pipeline.workspace import Workspace

_REPO_PARAMS = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def repo_params() -> dict[str, Any]:
    """A fresh copy of the repository's params.yaml as a dict."""
    return copy.deepcopy(_REPO_PARAMS)


def write_params(root: Path, raw: dict[str, Any]) -> Params:
    """Write ``raw`` as ``root/params.yaml`` and return it validated."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return validate_params(raw)


@pytest.fixture
def params_raw() -> dict[str, Any]:
    return repo_params()


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


def make_processed(
    ws: Workspace, splits: list[str], size: int = 16, seed: int = 0, images_per_patient: int = 2
) -> pd.DataFrame:
    """A processed data set in ``ws``: random store, manifest and splits.csv, one split per row
    (``external`` rows get the source ``external``); patients hold ``images_per_patient`` rows."""
    n = len(splits)
    proc = ws.path(paths.PROCESSED)
    proc.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    write_store(ws.path(paths.STORE), rng.random((n, size, size)).astype(np.float16))
    manifest = pd.DataFrame(
        {
            "row": range(n),
            "file": [f"f{i}.dcm" for i in range(n)],
            "source": ["external" if s == "external" else "internal" for s in splits],
            "patient": [f"{i // images_per_patient:016x}" for i in range(n)],
            "label": ["normal", "abnormal"] * (n // 2) + ["normal"] * (n % 2),
        }
    )
    manifest.to_csv(ws.manifest, index=False)
    manifest.assign(split=splits)[["row", "patient", "label", "split"]].to_csv(ws.splits, index=False)
    return manifest


def features_info(dim: int, image_size: int, n_images: int, n_augmented: int, weights_source: str = "test") -> dict:
    """A data/features/info.json document as the features stage writes it (tiny, for tests)."""
    return {
        "backbone": "efficientnet_lite0",
        "weights_source": weights_source,
        "weights_sha256": "ab" * 32,
        "num_features": dim,
        "num_classes": 2,
        "preprocessing": {
            "scale": 255.0,
            "mean": [127.0] * 3,
            "std": [128.0] * 3,
            "in_chans": 3,
            "grey_to_rgb": "repeat",
            "description": "(x*255 - 127) / 128; grey repeated to 3 channels",
        },
        "D": dim,
        "image_size": image_size,
        "n_images": n_images,
        "n_augmented": n_augmented,
        "batch_size": 8,
        "device": "cpu",
        "num_threads": 1,
    }


@pytest.fixture(scope="session")
def dvc_baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny git + DVC project (tests/dvc_project.py) with `dvc repro evaluate` run and its
    dvc.lock and small results committed: the state a user pushes or runs experiments from."""
    from dvc_project import DVC_TARGET, dvc, git, tiny_project

    project = tiny_project(tmp_path_factory.mktemp("dvc") / "project")
    dvc(project, "repro", "-q", DVC_TARGET, timeout=600)
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "baseline run")
    return project
