"""DVC reruns ingest, and only what depends on it, when a configured data folder changes; a set
is added or removed in params.yaml alone; nothing reruns when nothing changed.

Runs the real dvc.yaml (stages sources and ingest) on a copy of the project with tiny data.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dicom_factory import chest_like, make_dataset, write

from pipeline.params import REPO_ROOT

pytestmark = pytest.mark.slow


def _site(folder: Path, n: int, prefix: str) -> None:
    rows = []
    for i in range(n):
        rel = f"nested/{prefix}{i}.dcm"
        write(
            folder / rel,
            make_dataset(
                chest_like(40, 36, bits=12, seed=i + hash(prefix) % 97), bits_stored=12, PatientID=f"{prefix}{i // 2}"
            ),
        )
        rows.append((rel, "abnormal" if i % 2 else "normal"))
    pd.DataFrame(rows, columns=["file", "label"]).to_csv(folder / "labels.csv", index=False)


def _dvc(project: Path, *args: str) -> str:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "CI": "1",
    }
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("dvc")), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def _set_external(project: Path, external: object) -> None:
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["data"]["external"] = external
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def test_data_changes_rerun_ingest_through_params_alone(tmp_path) -> None:
    project = tmp_path / "project"
    for d in ("pipeline", "stages"):
        shutil.copytree(REPO_ROOT / d, project / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "dvc.yaml", project / "dvc.yaml")
    data = tmp_path / "elsewhere"  # data outside the project, as on a real site
    for name, n in (("dev", 8), ("b", 4), ("c", 4)):
        _site(data / name, n, name)
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["data"].update(dicom_dir=str(data / "dev"), labels_csv=str(data / "dev/labels.csv"), external=[])
    raw["ingest"].update(size=16, min_size=16, workers=1)
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    _dvc(project, "init", "--no-scm", "-q")

    out = _dvc(project, "repro", "ingest")
    assert "Running stage 'ingest'" in out
    out = _dvc(project, "repro", "ingest")
    assert "Stage 'ingest' didn't change, skipping" in out  # nothing changed: nothing reruns

    ext = [{"name": n, "dicom_dir": str(data / n), "labels_csv": str(data / n / "labels.csv")} for n in "bc"]
    _set_external(project, ext)  # two external sets: a params.yaml edit only
    assert "Running stage 'ingest'" in _dvc(project, "repro", "ingest")
    manifest = pd.read_csv(project / "data/processed/manifest.csv")
    assert manifest["source"].value_counts().to_dict() == {"internal": 8, "b": 4, "c": 4}

    f = data / "c/nested/c0.dcm"  # new content in an external folder outside the project
    f.write_bytes(f.read_bytes()[:-2] + b"\x01\x02")
    assert "Running stage 'ingest'" in _dvc(project, "repro", "ingest")
    assert "Stage 'ingest' didn't change, skipping" in _dvc(project, "repro", "ingest")

    _set_external(project, None)  # and off again
    assert "Running stage 'ingest'" in _dvc(project, "repro", "ingest")
    assert set(pd.read_csv(project / "data/processed/manifest.csv")["source"]) == {"internal"}
