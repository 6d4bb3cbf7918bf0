"""Where a run reads and writes: a root folder and the artifact paths below it.

Stages run on ``Workspace(repository root)``; tests give each run a temporary folder. Paths in
``params.yaml`` (data folders) resolve against the same root unless absolute.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline import paths
from pipeline.errors import MissingArtifactError


@dataclass(frozen=True)
class Workspace:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())

    def path(self, rel: str | Path) -> Path:
        """The absolute path of an artifact given relative to the root (absolute paths as given)."""
        p = Path(rel).expanduser()
        return p if p.is_absolute() else self.root / p

    def require(self, rel: str | Path, stage: str = "") -> Path:
        """The path of an input that must exist, else a :class:`MissingArtifactError` naming it."""
        p = self.path(rel)
        if not p.exists():
            by = f" (written by the {stage} stage)" if stage else ""
            raise MissingArtifactError(f"{rel} is missing{by}; run `dvc repro` to build it")
        return p

    def show(self, p: str | Path) -> str:
        """``p`` relative to the root when it lies below it (for logs and messages)."""
        p = Path(p)
        try:
            return str(p.resolve().relative_to(self.root))
        except ValueError:
            return str(p)

    # The artifacts every stage exchanges (pipeline/paths.py holds the relative names).
    @property
    def store(self) -> Path:
        return self.path(paths.STORE)

    @property
    def manifest(self) -> Path:
        return self.path(paths.MANIFEST)

    @property
    def splits(self) -> Path:
        return self.path(paths.SPLITS)

    def predictions(self, method: str) -> Path:
        return self.path(paths.predictions_csv(method))

    def train_log(self, method: str) -> Path:
        return self.path(paths.train_log(method))
