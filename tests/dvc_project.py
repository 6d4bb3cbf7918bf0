"""A tiny copy of the project for tests that run the real dvc.yaml: pipeline/, stages/, dvc.yaml,
.gitignore and a params.yaml with tiny settings (32 px images, 1 epoch), beside a small DICOM set
generated in tests/dicom_factory.py style."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from dicom_factory import chest_like, make_dataset, write

from pipeline.params import REPO_ROOT

BIN = Path(sys.executable).parent
#: What the remote and experiment tests reproduce: evaluate and every stage it needs (sources,
#: ingest, split, augment, features, linear, finetune, scratch).
DVC_TARGET = "evaluate"


def env() -> dict[str, str]:
    """Stage commands call `python` and `dvc`: this interpreter's first on PATH; no analytics."""
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "CI": "1",
        "CXR_LOG_LEVEL": "WARNING",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
    }


def run(cwd: Path, *cmd: str, timeout: float = 300) -> str:
    proc = subprocess.run(list(cmd), cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def dvc(project: Path, *args: str, timeout: float = 300) -> str:
    return run(project, str(BIN / "dvc"), *args, timeout=timeout)


def git(project: Path, *args: str) -> str:
    return run(project, "git", *args)


def site(folder: Path, n: int, prefix: str, images_per_patient: int = 1) -> None:
    """``n`` small 12-bit DICOMs under ``folder/nested/`` and their labels.csv; a patient's images
    share a label, labels alternate between patients."""
    rows = []
    for i in range(n):
        rel = f"nested/{prefix}{i}.dcm"
        patient = i // images_per_patient
        write(
            folder / rel,
            make_dataset(
                chest_like(40, 36, bits=12, seed=i + hash(prefix) % 97), bits_stored=12, PatientID=f"{prefix}{patient}"
            ),
        )
        rows.append((rel, "abnormal" if patient % 2 else "normal"))
    pd.DataFrame(rows, columns=["file", "label"]).to_csv(folder / "labels.csv", index=False)


def copy_code(project: Path) -> None:
    """The code and pipeline definition of this checkout (no data, no outputs)."""
    for d in ("pipeline", "stages"):
        shutil.copytree(REPO_ROOT / d, project / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "dvc.yaml", project / "dvc.yaml")
    shutil.copy(REPO_ROOT / ".gitignore", project / ".gitignore")


def tiny_params(**data: Any) -> dict[str, Any]:
    """The repository's params.yaml with settings that run every stage up to evaluate in seconds."""
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["data"].update(data)
    raw["ingest"].update(size=32, min_size=16, workers=1)
    raw["split"].update(val_fraction=0.25, test_fraction=0.25, max_patient_share=0.5)
    raw["augment"].update(copies=1, preview_images=2)
    raw["features"].update(batch_size=32)
    raw["linear"].update(C_grid=[1.0], cv_folds=2, max_iter=200)
    raw["train"].update(epochs=1, batch_size=8, early_stopping_patience=1, device="cpu")
    raw["evaluate"].update(bootstrap_samples=100)
    # scratch runs a step budget, not train.epochs: keep it (and its lr search) tiny too.
    raw["scratch"].update(steps=8, grid_steps=2, lr_grid=[0.001, 0.0003])
    # One variant stage (the trained one, which reads finetune's params): the frozen-feature
    # variants run the same DVC mechanics and have their own tests (test_feature_variants.py).
    raw["strategies"].update(variants=["lp_ft"])
    return raw


def tiny_project(project: Path, n_images: int = 32) -> Path:
    """A git + DVC repository at ``project`` with the code, tiny params and a data set inside it
    (data/tiny/, committed to git like data/demo/), nothing run yet."""
    copy_code(project)
    site(project / "data/tiny/dicom", n_images, "p", images_per_patient=2)
    raw = tiny_params(dicom_dir="data/tiny/dicom", labels_csv="data/tiny/dicom/labels.csv", external=[])
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    git(project, "init", "-q", "-b", "main")
    dvc(project, "init", "-q")
    dvc(project, "config", "core.analytics", "false")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "tiny project")
    return project
