"""Each DVC stage's deps cover every project module it imports, transitively.

The closure is derived from the code (pipeline.depgraph walks every import with ast), so adding an
import without adding the dependency to dvc.yaml fails here, naming the stage and the module.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.depgraph import covered, missing_deps, module_closure, stage_closure, stage_script
from pipeline.params import REPO_ROOT

# A `foreach` stage's command and deps are in its `do` block.
STAGES = {n: s.get("do", s) for n, s in yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"].items()}


def _deps(spec: dict) -> list[str]:
    return [d for d in spec.get("deps", []) if isinstance(d, str)]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_cover_its_import_closure(stage: str) -> None:
    spec = STAGES[stage]
    script = stage_script(spec["cmd"])
    assert script is not None, f"{stage}: its cmd should be `python -m stages.<name>`"
    gaps = missing_deps(REPO_ROOT, script, _deps(spec))
    assert not gaps, f"stage {stage!r} imports {', '.join(map(str, gaps))} but does not depend on it"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_code_deps_exist(stage: str) -> None:
    for dep in _deps(STAGES[stage]):
        if dep.startswith(("pipeline/", "stages/")):
            assert (REPO_ROOT / dep).exists(), f"{stage}: dependency {dep} missing"


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_closure_follows_every_kind_of_import(tmp_path) -> None:
    root = _tree(
        tmp_path,
        {
            "stages/s.py": "from pipeline.steps.s import run_s\n",
            "pipeline/__init__.py": "",
            "pipeline/steps/__init__.py": "",
            "pipeline/steps/s.py": "from pipeline import a\nimport numpy\n\ndef f():\n    import pipeline.sub.c\n",
            "pipeline/a.py": "from pipeline.b import thing\n",
            "pipeline/b.py": "thing = 1\n",
            "pipeline/sub/__init__.py": "",
            "pipeline/sub/c.py": "",
            "pipeline/unused.py": "",
        },
    )
    got = {str(p) for p in stage_closure(root, "s")}
    assert got == {
        "stages/s.py",
        "pipeline/__init__.py",
        "pipeline/steps/__init__.py",
        "pipeline/steps/s.py",
        "pipeline/a.py",
        "pipeline/b.py",
        "pipeline/sub/__init__.py",
        "pipeline/sub/c.py",
    }
    # A folder dep covers the modules below it; a missing import is named.
    assert covered(Path("pipeline/sub/c.py"), ["pipeline/sub"])
    deps = sorted(got - {"pipeline/b.py"})
    assert missing_deps(root, "s", deps) == [Path("pipeline/b.py")]
    assert module_closure(root, root / "pipeline/b.py") == set()


def test_an_import_added_without_its_dep_fails(tmp_path) -> None:
    """The check the suite runs on dvc.yaml, shown failing on a copy with one more import."""
    root = _tree(tmp_path, {"stages/split.py": (REPO_ROOT / "stages/split.py").read_text()})
    for f in (REPO_ROOT / "pipeline").rglob("*.py"):
        _tree(root, {str(f.relative_to(REPO_ROOT)): f.read_text()})
    step = root / "pipeline/steps/split.py"
    step.write_text(step.read_text() + "\nfrom pipeline import metrics  # noqa: F401\n")
    gaps = missing_deps(root, "split", _deps(STAGES["split"]))
    assert Path("pipeline/metrics.py") in gaps
