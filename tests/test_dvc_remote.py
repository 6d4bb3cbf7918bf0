"""A shared DVC cache: outputs pushed to a remote (a local folder here; S3, GCS and SSH work the
same way, README "Sharing results") are pulled into a fresh clone, which then has every output
of the pipeline up to evaluate without recomputing anything.

Runs the real dvc.yaml on a tiny project (tests/dvc_project.py, the session fixture dvc_baseline).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dvc_project import DVC_TARGET, dvc, git, run

from pipeline import paths

pytestmark = pytest.mark.slow

#: Cached (not git-tracked) outputs of the stages up to evaluate.
CACHED = (
    paths.STORE,
    paths.AUGMENTED_STORE,
    paths.MANIFEST,
    paths.FEATURES_DIR,
    paths.MODELS / "finetune" / "best.pt",
    paths.predictions_csv("linear"),
    paths.predictions_csv("scratch"),
)


def _files(root: Path, rel: Path) -> dict[str, bytes]:
    p = root / rel
    if p.is_file():
        return {str(rel): p.read_bytes()}
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file()}


def _status(project: Path) -> dict:
    return json.loads(dvc(project, "status", "--json", "--with-deps", DVC_TARGET).strip().splitlines()[-1])


def test_push_then_pull_into_a_fresh_clone_recomputes_nothing(dvc_baseline: Path, tmp_path: Path) -> None:
    project = dvc_baseline
    remote = tmp_path / "remote"
    dvc(project, "remote", "add", "-d", "shared", str(remote))
    git(project, "commit", "-q", "-am", "shared DVC remote")
    dvc(project, "push", "-q", "--with-deps", DVC_TARGET)
    objects = [f for f in (remote / "files/md5").rglob("*") if f.is_file()]
    assert len(objects) >= len(CACHED)
    # The image store is a folder of shards: DVC stores each shard as one object (+ the .dir list).
    store = json.loads((project / paths.STORE / "store.json").read_text())
    assert len([o for o in objects if o.name.endswith(".dir")]) >= 3  # images/, augmented/, features/
    assert store["rows"] > 0

    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(project), str(clone))
    assert not (clone / paths.STORE).exists()
    before = _status(clone)
    assert "deleted" in json.dumps(before)  # outputs missing: not yet pulled

    # Only the stages up to evaluate ran in the tiny project, so pull those (after a full
    # `dvc repro`, a plain `dvc pull` gets everything).
    dvc(clone, "pull", "-q", "--with-deps", DVC_TARGET)
    assert _status(clone) == {"sources": ["always changed"]}  # the only entry when nothing is stale
    for rel in CACHED:
        got = _files(clone, rel)
        assert got and got == _files(project, rel), rel
    out = dvc(clone, "repro", DVC_TARGET)
    ran = [line for line in out.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'sources':"], out  # sources always runs; its output is unchanged
    assert "Stage 'finetune' didn't change, skipping" in out
    assert git(clone, "status", "--porcelain").strip() == ""  # dvc.lock and results untouched
