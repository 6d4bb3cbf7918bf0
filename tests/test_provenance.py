"""The reproducibility record says "reproducible from this commit" only when that holds."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from pipeline.contracts import Sources, SourceSet
from pipeline.provenance import pipeline_outputs, reproducibility_record

SOURCES = Sources(
    schema_version=1,
    hash="md5 (DVC)",
    sets=[
        SourceSet(
            name="internal",
            role="internal",
            dicom_dir="/data/a",
            labels_csv="/data/a.csv",
            description=None,
            dicom_dir_md5="abc.dir",
            n_files=3,
            size_bytes=10,
            labels_csv_md5="def",
        )
    ],
)


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def _project(root: Path) -> Path:
    (root / "pipeline").mkdir(parents=True)
    (root / "pipeline/x.py").write_text("x = 1\n")
    (root / "params.yaml").write_text("seed: 1\n")
    (root / "dvc.yaml").write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "s": {
                        "cmd": "true",
                        "outs": ["models/m.pt", {"reports/r.json": {"cache": False}}],
                        "metrics": [{"reports/metrics.json": {"cache": False}}],
                    }
                }
            }
        )
    )
    (root / "reports").mkdir()
    (root / "reports/r.json").write_text("{}")
    (root / "dvc.lock").write_text("schema: '2.0'\n")
    _git(root, "init", "-q")
    _git(root, "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A")
    _git(root, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    return root


def test_clean_checkout_is_reproducible(tmp_path) -> None:
    root = _project(tmp_path)
    (root / "reports/r.json").write_text('{"new": 1}')  # the run's own outputs may differ
    (root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    rec = reproducibility_record(root, SOURCES)
    assert rec["reproducible"] and rec["missing"] == []
    assert rec["git"]["changed_outputs"] == ["dvc.lock", "reports/r.json"]
    assert len(rec["git"]["commit"]) == 40 and len(rec["dvc_lock_sha256"]) == 64
    assert rec["data"][0]["dicom_dir_md5"] == "abc.dir"


def test_uncommitted_input_or_missing_fingerprint_is_said(tmp_path) -> None:
    root = _project(tmp_path)
    (root / "params.yaml").write_text("seed: 2\n")
    (root / "pipeline/new.py").write_text("")  # untracked code counts too
    rec = reproducibility_record(root, SOURCES)
    assert not rec["reproducible"]
    assert rec["missing"] == ["uncommitted changes to inputs: params.yaml, pipeline/new.py"]
    assert "no data fingerprint" in " ".join(reproducibility_record(root, None)["missing"])


def test_outside_git_and_without_dvc_lock(tmp_path) -> None:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    rec = reproducibility_record(tmp_path, SOURCES)
    assert not rec["reproducible"] and rec["git"]["commit"] is None
    assert any("not a git checkout" in m for m in rec["missing"])
    assert any("no dvc.lock" in m for m in rec["missing"])


def test_outputs_come_from_dvc_yaml(tmp_path) -> None:
    root = _project(tmp_path)
    assert pipeline_outputs(root) == ["dvc.lock", "models/m.pt", "reports/r.json", "reports/metrics.json"]


def test_code_location_names_branch_and_remote_without_credentials(tmp_path) -> None:
    from pipeline.provenance import code_location

    root = _project(tmp_path)
    assert code_location(root)["remote"] is None
    _git(root, "remote", "add", "origin", "https://alice:s3cret@git.example.org/lab/cxr-transfer.git")
    loc = reproducibility_record(root, SOURCES)["code"]
    assert loc["remote"] == "https://git.example.org/lab/cxr-transfer.git"
    assert loc["checkout"] == str(root.resolve()) and loc["branch"] in ("master", "main")
    assert code_location(tmp_path / "nowhere")["branch"] is None
