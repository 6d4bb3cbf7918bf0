"""What the report reads: every pipeline output it shows, each validated against its contract.

:func:`load_inputs` reads the files under a project root into one :class:`ReportInputs`; a
missing or invalid file is recorded in ``problems`` (input -> why), never fatal, so each section
can say what it lacks. Nothing here computes a statistic.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline import contracts as C
from pipeline import paths

PACKAGES = ("torch", "torchvision", "monai", "pydicom", "scikit-learn", "numpy", "scipy", "pandas", "dvc", "dvclive")
SALT_MASK = "***masked***"


@dataclass
class ReportInputs:
    """Everything the report shows, read from disk; ``None`` = that input is missing."""

    params: Any  # pipeline.params.Params
    ingest: C.IngestReport | None = None
    split: C.SplitReport | None = None
    sources: C.Sources | None = None
    metrics: dict | None = None  # validated against C.Metrics
    evaluation: dict | None = None  # validated against C.Evaluation
    diagnostics: dict | None = None  # validated against C.Diagnostics
    recommendation: C.Recommendation | None = None
    introspection: C.Introspection | None = None
    transferability: C.Transferability | None = None
    train_logs: dict[str, C.TrainLog | C.LinearLog | C.KnnLog] = field(default_factory=dict)
    features_info: C.FeaturesInfo | None = None
    attributions: list[tuple[str, str]] = field(default_factory=list)  # (folder, text)
    figures: dict[str, Path] = field(default_factory=dict)  # existing upstream PNGs by key
    cams: dict[str, Any] = field(default_factory=dict)  # method -> gradcam.CamResult
    cam_notes: dict[str, str] = field(default_factory=dict)  # method -> why its map is missing
    repro: dict[str, Any] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # input -> why it is unavailable


def read_optional(path: Path, problems: dict[str, str], name: str, model: type[C.M]) -> C.M | None:
    """The file validated against its contract; ``None`` (and the reason in ``problems``) when it
    is missing, not JSON or does not match."""
    if not path.exists():
        problems[name] = f"{name} not found"
        return None
    try:
        return C.read_contract(path, model)
    except C.ContractError as err:
        problems[name] = str(err)
        return None


def _read_plain(path: Path, problems: dict[str, str], name: str, model: type[C.M]) -> dict | None:
    """Like :func:`read_optional`, as the plain (validated) document."""
    doc = read_optional(path, problems, name, model)
    return None if doc is None else doc.model_dump(by_alias=True, exclude_unset=True)


def mask_params(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The validated params with the pseudonym salt masked (it protects the pseudonyms)."""
    out = yaml.safe_load(yaml.safe_dump(dict(raw), sort_keys=False))
    if isinstance(out.get("ingest"), dict) and "pseudonym_salt" in out["ingest"]:
        out["ingest"]["pseudonym_salt"] = SALT_MASK
    return out


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            out[n] = "not installed"
    return out


def reproducibility_facts(root: Path, params_raw: Mapping[str, Any], sources: C.Sources | None) -> dict[str, Any]:
    import platform

    from pipeline.provenance import reproducibility_record

    return {
        "record": reproducibility_record(root, sources),
        "packages": package_versions(),
        "python": platform.python_version(),
        "params": mask_params(params_raw),
    }


def _attributions(root: Path, params: Any) -> list[tuple[str, str]]:
    from pipeline.params import resolve_path

    out = []
    for folder in [params.data.dicom_dir] + [e.dicom_dir for e in params.data.external]:
        # Attribution sits in the DICOM folder or beside it (next to the labels CSV), so that
        # ingest sees only DICOM files in the folder itself.
        for where in (Path(folder), Path(folder).parent):
            f = resolve_path(where, root) / "ATTRIBUTION.md"
            if f.exists():
                out.append((where.as_posix(), f.read_text(encoding="utf-8", errors="replace")))
                break
    return out


def load_inputs(root: Path, params: Any, params_raw: Mapping[str, Any] | None = None) -> ReportInputs:
    """Read the pipeline's reports under ``root``, each validated against its contract; missing or
    invalid ones are recorded, not fatal."""
    from pipeline.sources import SOURCES_FILE

    root = Path(root)
    problems: dict[str, str] = {}
    inp = ReportInputs(params=params, problems=problems)

    def read(rel: Path, model: type[C.M]) -> C.M | None:
        return read_optional(root / rel, problems, str(rel), model)

    inp.ingest = read(paths.INGEST_REPORT, C.IngestReport)
    inp.split = read(paths.SPLIT_REPORT, C.SplitReport)
    inp.sources = read(SOURCES_FILE, C.Sources)
    inp.metrics = _read_plain(root / paths.METRICS, problems, str(paths.METRICS), C.Metrics)
    inp.evaluation = _read_plain(root / paths.EVALUATION, problems, str(paths.EVALUATION), C.Evaluation)
    inp.diagnostics = _read_plain(root / paths.DIAGNOSTICS, problems, str(paths.DIAGNOSTICS), C.Diagnostics)
    inp.features_info = read(paths.FEATURES_INFO, C.FeaturesInfo)
    inp.recommendation = read(paths.RECOMMENDATION, C.Recommendation)
    inp.introspection = read(paths.INTROSPECTION, C.Introspection)
    inp.transferability = read(paths.TRANSFERABILITY, C.Transferability)
    for name in paths.methods(params):
        log_ = read(paths.train_log(name), C.train_log_model(name))
        if log_ is not None:
            inp.train_logs[name] = log_
    inp.attributions = _attributions(root, params)
    candidates = {"augment_preview": root / paths.FIGURES / "augment_preview.png"}
    if inp.diagnostics:
        for key, rel in (inp.diagnostics.get("figures") or {}).items():
            candidates[f"diagnose_{key}"] = root / rel
    if inp.introspection is not None:
        intro = inp.introspection
        candidates["introspect_filters"] = root / intro.first_layer.figure
        candidates["introspect_feature_maps"] = root / intro.feature_maps.figure
        for group, rel in intro.units.figures.items():
            candidates[f"introspect_units_{group}"] = root / rel
    inp.figures = {k: v for k, v in candidates.items() if v.exists()}
    for key, f in candidates.items():
        if key.startswith("introspect_") and not f.exists():
            problems[str(f.relative_to(root))] = f"{f.relative_to(root)} not found (rerun the introspect stage)"
    raw = params_raw if params_raw is not None else params.model_dump(mode="json")
    inp.repro = reproducibility_facts(root, raw, inp.sources)
    return inp


__all__ = [
    "PACKAGES",
    "SALT_MASK",
    "ReportInputs",
    "load_inputs",
    "mask_params",
    "package_versions",
    "read_optional",
    "reproducibility_facts",
]
