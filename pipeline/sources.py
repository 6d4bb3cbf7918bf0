"""The data sets a run reads, and a fingerprint of each: the link between params.yaml and DVC.

DVC cannot depend on a path that params.yaml may leave unset, nor on a list of folders whose
length changes. So the ``sources`` stage (``always_changed`` in dvc.yaml) resolves the configured
sets, the development set ``internal`` and every ``data.external`` entry, and writes
``data/sources.json`` with DVC's own content hash (md5, the ``.dir`` hash ``dvc.lock`` would
record) and the file count of each DICOM folder and labels CSV. ``ingest`` depends on that file:
when no folder or CSV changed, the file is byte-identical and DVC skips ``ingest`` and everything
after it; when one changed, or a set was added, removed or renamed, ingest and only what depends on
it rerun. Hashing reuses DVC's state database (unchanged files are not read again) when the
workspace is a DVC repository.

The report quotes the fingerprints as the reproducibility record of data that may live outside the
repository.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.common import get_logger
from pipeline.contracts import Sources, read_contract, write_contract
from pipeline.errors import StageError
from pipeline.params import Params, resolve_path

log = get_logger("sources")

SOURCES_FILE = Path("data/sources.json")
INTERNAL = "internal"


class SourceError(StageError):
    """A configured data folder or labels CSV is missing."""


@dataclass(frozen=True)
class DataSet:
    """One configured set: ``internal`` (train/val/test) or an external one."""

    name: str
    dicom_dir: str  # as written in params.yaml
    labels_csv: str
    description: str | None = None

    @property
    def is_external(self) -> bool:
        return self.name != INTERNAL

    def resolved(self, root: Path) -> tuple[Path, Path]:
        return resolve_path(self.dicom_dir, root), resolve_path(self.labels_csv, root)


def configured_sets(params: Params) -> list[DataSet]:
    """``internal`` first, then the external sets in params order."""
    d = params.data
    return [DataSet(INTERNAL, d.dicom_dir, d.labels_csv, None)] + [
        DataSet(e.name, e.dicom_dir, e.labels_csv, e.description) for e in d.external
    ]


def _hasher(root: Path, scratch: str) -> tuple[Any, Any, dict[str, Any]]:
    """DVC's file system, an object database in ``scratch`` (nothing is stored: dry runs) and
    DVC's state database when ``root`` is a DVC repository."""
    from dvc_data.hashfile.db.local import LocalHashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    fs = LocalFileSystem()
    odb = LocalHashFileDB(fs, scratch)
    extra: dict[str, Any] = {}
    if (root / ".dvc").is_dir():
        from dvc.repo import Repo

        extra["state"] = Repo(str(root)).state  # DVC's cache of hashes by inode, mtime, size
    return fs, odb, extra


def fingerprint(sets: list[DataSet], root: Path) -> dict[str, Any]:
    """DVC md5 hash, file count and size of every set's DICOM folder and labels CSV."""
    with tempfile.TemporaryDirectory(prefix="cxr-sources-") as scratch:
        return _fingerprint(sets, root, *_hasher(root, scratch))


def _fingerprint(sets: list[DataSet], root: Path, fs: Any, odb: Any, extra: dict[str, Any]) -> dict[str, Any]:
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.hash import hash_file

    out = []
    for s in sets:
        folder, csv = s.resolved(root)
        what = "data" if s.name == INTERNAL else f"data.external[{s.name}]"
        if not folder.is_dir():
            raise SourceError(f"{what}.dicom_dir {s.dicom_dir} ({folder}) is not a folder")
        if not csv.is_file():
            raise SourceError(f"{what}.labels_csv {s.labels_csv} ({csv}) is not a file")
        _, meta, obj = build(odb, str(folder), fs, "md5", dry_run=True, **extra)
        _, csv_hash = hash_file(str(csv), fs, "md5", **extra)
        out.append(
            {
                "name": s.name,
                "role": "external" if s.is_external else "internal",
                "dicom_dir": s.dicom_dir,
                "labels_csv": s.labels_csv,
                "description": s.description,
                "dicom_dir_md5": obj.hash_info.value,
                "n_files": int(meta.nfiles or 0),
                "size_bytes": int(meta.size or 0),
                "labels_csv_md5": csv_hash.value,
            }
        )
    return {"schema_version": 1, "hash": "md5 (DVC)", "sets": out}


def run_sources(params: Params, workspace: Any) -> dict[str, Any]:
    """The ``sources`` stage: write data/sources.json (unchanged bytes when no data changed)."""
    doc = fingerprint(configured_sets(params), workspace.root)
    write_contract(workspace.path(SOURCES_FILE), Sources, doc)
    for s in doc["sets"]:
        log.info("%s: %s, %d files, %s", s["name"], s["dicom_dir"], s["n_files"], s["dicom_dir_md5"])
    return doc


def read_sources(path: Path) -> Sources:
    if not path.is_file():
        raise SourceError(f"{path} is missing; run the sources stage (dvc repro)")
    return read_contract(path, Sources)


__all__ = [
    "DataSet",
    "INTERNAL",
    "SOURCES_FILE",
    "SourceError",
    "configured_sets",
    "fingerprint",
    "read_sources",
    "run_sources",
]
