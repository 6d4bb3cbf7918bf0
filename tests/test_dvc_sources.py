"""DVC reruns ingest, and only what depends on it, when a configured data folder changes; a set
is added or removed in params.yaml alone; nothing reruns when nothing changed.

Runs the real dvc.yaml (stages sources and ingest) on a copy of the project with tiny data.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from dvc_project import copy_code, dvc, site, tiny_params

pytestmark = pytest.mark.slow


def _set_external(project: Path, external: object) -> None:
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["data"]["external"] = external
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def test_data_changes_rerun_ingest_through_params_alone(tmp_path) -> None:
    project = tmp_path / "project"
    copy_code(project)
    data = tmp_path / "elsewhere"  # data outside the project, as on a real site
    for name, n in (("dev", 8), ("b", 4), ("c", 4)):
        site(data / name, n, name)
    raw = tiny_params(dicom_dir=str(data / "dev"), labels_csv=str(data / "dev/labels.csv"), external=[])
    raw["ingest"].update(size=16)
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    dvc(project, "init", "--no-scm", "-q")

    out = dvc(project, "repro", "ingest")
    assert "Running stage 'ingest'" in out
    out = dvc(project, "repro", "ingest")
    assert "Stage 'ingest' didn't change, skipping" in out  # nothing changed: nothing reruns

    ext = [{"name": n, "dicom_dir": str(data / n), "labels_csv": str(data / n / "labels.csv")} for n in "bc"]
    _set_external(project, ext)  # two external sets: a params.yaml edit only
    assert "Running stage 'ingest'" in dvc(project, "repro", "ingest")
    manifest = pd.read_csv(project / "data/processed/manifest.csv")
    assert manifest["source"].value_counts().to_dict() == {"internal": 8, "b": 4, "c": 4}

    f = data / "c/nested/c0.dcm"  # new content in an external folder outside the project
    f.write_bytes(f.read_bytes()[:-2] + b"\x01\x02")
    assert "Running stage 'ingest'" in dvc(project, "repro", "ingest")
    assert "Stage 'ingest' didn't change, skipping" in dvc(project, "repro", "ingest")

    _set_external(project, None)  # and off again
    assert "Running stage 'ingest'" in dvc(project, "repro", "ingest")
    assert set(pd.read_csv(project / "data/processed/manifest.csv")["source"]) == {"internal"}
