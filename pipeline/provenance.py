"""An honest reproducibility record: can this run be reproduced from this commit, and if not, why?

A run is "reproducible from this commit" only when all of these hold:

- the workspace is a git checkout with a HEAD commit;
- no input differs from that commit: every tracked or untracked (not ignored) file other than the
  pipeline's own outputs (the ``outs``/``metrics``/``plots`` of dvc.yaml, and ``dvc.lock``) is
  committed as it is;
- ``dvc.lock`` exists (the run went through DVC) and is digested here;
- every data folder and labels CSV has a recorded fingerprint (``data/sources.json``: DVC md5 hash
  and file count), so data kept outside the repository can be checked to be the same.

Anything that fails is listed under ``missing`` in plain words; the report quotes them.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from pipeline.common import file_sha256
from pipeline.contracts import Sources

GIT_TIMEOUT_S = 20


def _git(root: Path, *args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def pipeline_outputs(root: Path) -> list[str]:
    """Every path dvc.yaml declares as an output (files and folders), plus dvc.lock."""
    dvc_yaml = root / "dvc.yaml"
    outs = ["dvc.lock"]
    if not dvc_yaml.is_file():
        return outs
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {})
    for spec in stages.values():
        spec = spec.get("do", spec)
        for key in ("outs", "metrics", "plots"):
            for item in spec.get(key, []) or []:
                outs.append(str(next(iter(item)) if isinstance(item, dict) else item))
    return outs


def _is_output(path: str, outputs: list[str]) -> bool:
    return any(path == o or path.startswith(o.rstrip("/") + "/") for o in outputs)


_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")


def code_location(root: Path) -> dict[str, Any]:
    """Where the code lives: the checkout, its branch and its first git remote (credentials in
    the remote's address removed), or None for what git cannot tell."""
    remotes = (_git(root, "remote") or "").split()
    remote = None
    if remotes:
        name = "origin" if "origin" in remotes else remotes[0]
        url = (_git(root, "remote", "get-url", name) or "").strip()
        remote = _USERINFO.sub(r"\1", url) or None
    branch = (_git(root, "rev-parse", "--abbrev-ref", "HEAD") or "").strip() or None
    return {"checkout": str(Path(root).resolve()), "branch": branch, "remote": remote}


def git_state(root: Path) -> dict[str, Any]:
    """HEAD commit and the uncommitted files, split into inputs and the pipeline's own outputs."""
    head = _git(root, "rev-parse", "HEAD")
    if head is None:
        return {"commit": None, "clean": None, "changed_inputs": [], "changed_outputs": []}
    status = _git(root, "status", "--porcelain=v1", "--untracked-files=all", "-z") or ""
    changed = []
    for entry in filter(None, status.split("\0")):
        if len(entry) > 3 and entry[2] == " ":
            changed.append(entry[3:])
    outputs = pipeline_outputs(root)
    inputs = sorted(p for p in changed if not _is_output(p, outputs))
    return {
        "commit": head.strip(),
        "clean": not inputs,
        "changed_inputs": inputs,
        "changed_outputs": sorted(p for p in changed if _is_output(p, outputs)),
    }


def reproducibility_record(root: Path, sources: Sources | None) -> dict[str, Any]:
    """The record the report shows (see the module docstring for the rule)."""
    root = Path(root)
    git = git_state(root)
    lock = root / "dvc.lock"
    record: dict[str, Any] = {
        "git": git,
        "code": code_location(root),
        "dvc_lock_sha256": file_sha256(lock) if lock.is_file() else None,
        "data": [
            s.model_dump(include={"name", "dicom_dir", "labels_csv", "dicom_dir_md5", "n_files", "labels_csv_md5"})
            for s in (sources.sets if sources is not None else [])
        ],
    }
    missing = []
    if git["commit"] is None:
        missing.append("not a git checkout: no commit to reproduce from")
    elif git["changed_inputs"]:
        shown = ", ".join(git["changed_inputs"][:10])
        more = len(git["changed_inputs"]) - 10
        missing.append(f"uncommitted changes to inputs: {shown}" + (f" and {more} more" if more > 0 else ""))
    if record["dvc_lock_sha256"] is None:
        missing.append("no dvc.lock: the run did not go through `dvc repro`")
    if not record["data"]:
        missing.append("no data fingerprint (data/sources.json): the data used cannot be checked")
    record["missing"] = missing
    record["reproducible"] = not missing
    return record


__all__ = ["code_location", "git_state", "pipeline_outputs", "reproducibility_record"]
