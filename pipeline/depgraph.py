"""Which project modules each stage imports, transitively: the code its DVC deps must cover.

A stage's result can change with any module it imports, so ``dvc.yaml`` lists them as deps;
:func:`stage_closure` derives the list from the code (every ``import`` statement, at module level
or inside a function, found with :mod:`ast`; importing ``pipeline.a.b`` also runs the packages'
``__init__.py``). ``tests/test_stage_deps.py`` fails, naming the stage and the module, when a
dependency is missing. ``python -m pipeline.depgraph`` prints what each stage needs.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

PACKAGE = "pipeline"


def _module_file(root: Path, dotted: str) -> Path | None:
    base = root / Path(*dotted.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _imported_names(tree: ast.AST) -> set[str]:
    """Dotted names a module imports (``from pipeline import x`` gives ``pipeline`` and
    ``pipeline.x``: x may be a submodule)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")}


def _with_parents(dotted: str) -> list[str]:
    parts = dotted.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def module_closure(root: Path, start: Path) -> set[Path]:
    """Project module files (relative to ``root``) that ``start`` imports, transitively."""
    root = Path(root)
    seen: set[Path] = set()
    todo = [Path(start)]
    while todo:
        f = todo.pop()
        tree = ast.parse(f.read_text(), filename=str(f))
        for name in _imported_names(tree):
            for dotted in _with_parents(name):
                mod = _module_file(root, dotted)
                if mod is not None and mod not in seen:
                    seen.add(mod)
                    todo.append(mod)
    return {p.relative_to(root) for p in seen}


def stage_script(cmd: str) -> str | None:
    """``stages/<x>.py`` of a stage command ``python -m stages.<x> ...`` (None for other commands)."""
    words = str(cmd).split()
    if len(words) >= 3 and words[:2] == ["python", "-m"] and words[2].startswith("stages."):
        return words[2].split(".", 1)[1]
    return None


def stage_closure(root: Path, stage: str) -> set[Path]:
    """The stage script ``stages/<stage>.py`` plus every project module it imports."""
    script = Path("stages") / f"{stage}.py"
    return {script, *module_closure(root, root / script)}


def covered(module: Path, deps: list[str]) -> bool:
    """Is ``module`` one of ``deps`` or inside a folder among them?"""
    for dep in deps:
        d = Path(dep)
        if module == d or d in module.parents:
            return True
    return False


def missing_deps(root: Path, stage: str, deps: list[str]) -> list[Path]:
    return sorted(m for m in stage_closure(root, stage) if not covered(m, deps))


def rewrite_code_deps(text: str, closures: dict[str, set[Path]]) -> str:
    """dvc.yaml ``text`` with each stage's code deps (its ``- pipeline/...`` / ``- stages/...``
    lines) replaced by the sorted ``closures[stage]``, at the place of the first one; other deps,
    comments and formatting are kept."""
    out: list[str] = []
    stage: str | None = None
    written: set[str] = set()
    for line in text.splitlines(keepends=True):
        head = re.match(r"^  ([A-Za-z0-9_@-]+):\s*$", line)
        if head:
            stage = head.group(1)
        code = re.match(r"^(\s+)- (pipeline|stages)/\S+\s*$", line)
        if code and stage in closures:
            if stage not in written:
                written.add(stage)
                out.extend(f"{code.group(1)}- {m}\n" for m in sorted(map(str, closures[stage])))
            continue
        out.append(line)
    return "".join(out)


def main() -> int:
    import yaml

    root = Path.cwd()
    if "--write" in sys.argv[1:]:
        text = (root / "dvc.yaml").read_text()
        closures = {}
        for name, spec in yaml.safe_load(text)["stages"].items():
            script = stage_script(spec.get("do", spec).get("cmd", ""))
            if script is not None:
                closures[name] = stage_closure(root, script)
        (root / "dvc.yaml").write_text(rewrite_code_deps(text, closures))
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    for name, spec in stages.items():
        script = stage_script(spec.get("do", spec).get("cmd", ""))
        if script is None:
            continue
        deps = [d for d in spec.get("do", spec).get("deps", []) if isinstance(d, str)]
        gaps = missing_deps(root, script, deps)
        print(f"{name}: {'ok' if not gaps else 'missing ' + ', '.join(map(str, gaps))}")
        print("  needs: " + ", ".join(sorted(map(str, stage_closure(root, script)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
