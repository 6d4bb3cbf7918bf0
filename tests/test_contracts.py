"""The inter-stage JSON contracts: real writers' documents round-trip, unknown keys fail, the
committed demo files validate, and DESIGN.md carries exactly the generated schema tables."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import report_inputs as RI
from pydantic import BaseModel, ValidationError

from pipeline import contracts as C
from pipeline import paths
from pipeline.common import read_json
from pipeline.errors import StageError
from pipeline.params import REPO_ROOT
from pipeline.workspace import Workspace

BEGIN, END = "<!-- contracts:begin -->", "<!-- contracts:end -->"
COMMITTED = [
    f
    for f in C.FILES
    if (REPO_ROOT / f).is_file()
    and subprocess.run(["git", "ls-files", "--error-unmatch", f], cwd=REPO_ROOT, capture_output=True).returncode == 0
]


def _round_trip(model: type[BaseModel], doc: object) -> None:
    """Every key of ``doc`` is declared and kept: validating and dumping gives ``doc`` back."""
    back = model.model_validate(doc).model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert back == json.loads(json.dumps(doc))


@pytest.fixture(scope="module")
def report_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report-inputs")
    RI.build(root, with_model=False)
    return root


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> Workspace:
    """The real sources and ingest stages on a tiny DICOM folder with one external set."""
    from test_steps import _ext, _params, _site

    from pipeline.sources import run_sources
    from pipeline.steps.ingest import run_ingest
    from pipeline.steps.split import run_split

    root = tmp_path_factory.mktemp("ingested")
    sites = {"dev": _site(root / "dev", 12, "d"), "b": _site(root / "b", 2, "b", 100)}
    params = _params(root / "ws", sites, _ext(sites, "b", description="Hospital B"))
    ws = Workspace(root / "ws")
    run_sources(params, ws)
    run_ingest(params, ws)
    run_split(params, ws)
    return ws


def test_committed_demo_files_validate() -> None:
    assert {
        "data/sources.json",
        "reports/ingest.json",
        "reports/split.json",
        "reports/evaluation.json",
        "reports/metrics.json",
        "reports/diagnostics.json",
    } <= set(COMMITTED)
    for f in COMMITTED:
        C.read_contract(REPO_ROOT / f, C.FILES[f])


@pytest.mark.parametrize("name", ["data/sources.json", str(paths.INGEST_REPORT), str(paths.SPLIT_REPORT)])
def test_sources_ingest_split_round_trip_from_the_stages(ingested, name) -> None:
    doc = read_json(ingested.path(name))
    _round_trip(C.FILES[name], doc)


def test_external_sets_are_dict_keys(ingested) -> None:
    ingest = C.read_contract(ingested.path(paths.INGEST_REPORT), C.IngestReport)
    split = C.read_contract(ingested.path(paths.SPLIT_REPORT), C.SplitReport)
    assert list(ingest.external) == ["site-b"] and ingest.external["site-b"].accepted == 4
    assert set(split.splits) == {"train", "val", "test", "external/site-b"}
    assert split.splits["external/site-b"].images == 4


@pytest.mark.parametrize("name", [str(paths.EVALUATION), str(paths.METRICS), str(paths.DIAGNOSTICS)])
def test_evaluation_metrics_diagnostics_round_trip(report_root, name) -> None:
    """tests/report_inputs.py builds these with pipeline.evaluation and pipeline.diagnostics."""
    _round_trip(C.FILES[name], read_json(report_root / name))


def _add_key(doc: dict, model: type[BaseModel]) -> dict:
    doc = copy.deepcopy(doc)
    if model is C.Metrics:
        doc[next(iter(doc))]["test"]["bogus"] = 1.0
    else:
        doc["bogus"] = 1
    return doc


@pytest.mark.parametrize("name", COMMITTED)
def test_an_undeclared_key_fails(name) -> None:
    model = C.FILES[name]
    doc = read_json(REPO_ROOT / name)
    with pytest.raises(ValidationError):
        model.model_validate(_add_key(doc, model))


def test_an_undeclared_nested_key_fails() -> None:
    ev = read_json(REPO_ROOT / paths.EVALUATION)
    block = ev["results"]["linear"]["splits"]["test"]
    block["auroc"]["extra_ci"] = 0.1
    with pytest.raises(ValidationError, match="extra_ci"):
        C.Evaluation.model_validate(ev)
    split = read_json(REPO_ROOT / paths.SPLIT_REPORT)
    split["external/site-b"] = {"patients": 1}
    with pytest.raises(ValidationError):
        C.SplitReport.model_validate(split)


def test_write_contract_checks_before_writing_and_maps_nan_to_null(tmp_path) -> None:
    doc = read_json(REPO_ROOT / paths.METRICS)
    doc["linear"]["test"]["auroc"] = np.float64("nan")
    doc["linear"]["test"]["n"] = np.int64(doc["linear"]["test"]["n"])
    out = C.write_contract(tmp_path / "metrics.json", C.Metrics, doc)
    back = C.read_contract(out, C.Metrics)
    assert back.root["linear"]["test"].auroc is None
    with pytest.raises(ValidationError):
        C.write_contract(tmp_path / "bad.json", C.Metrics, _add_key(doc, C.Metrics))
    assert not (tmp_path / "bad.json").exists()


def test_multiclass_metrics_allow_only_per_class_auroc() -> None:
    row = read_json(REPO_ROOT / paths.METRICS)["linear"]["test"]
    assert C.SplitMetrics.model_validate({**row, "auroc_effusion": 0.7}).model_extra == {"auroc_effusion": 0.7}
    with pytest.raises(ValidationError, match="undeclared"):
        C.SplitMetrics.model_validate({**row, "f1": 0.7})


def test_a_file_that_breaks_its_contract_is_a_one_line_stage_error(tmp_path) -> None:
    f = tmp_path / "split.json"
    f.write_text(json.dumps({"settings": {}}))
    with pytest.raises(StageError, match=r"split.json does not match SplitReport \(settings.seed: Field required"):
        C.read_contract(f, C.SplitReport)
    f.write_text("{not json")
    with pytest.raises(StageError, match="not valid JSON"):
        C.read_contract(f, C.SplitReport)


def test_design_md_holds_exactly_the_generated_tables() -> None:
    text = (REPO_ROOT / "DESIGN.md").read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    inside = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert inside.strip("\n") == C.markdown().strip("\n"), (
        "DESIGN.md's schema tables are stale: paste `python -m pipeline.contracts --markdown` between the markers"
    )


def test_markdown_lists_every_file_and_field() -> None:
    md = C.markdown()
    for f in C.FILES:
        assert f"`{f}`" in md
    assert "| `dicom_dir_md5` |" in md and "| `class` |" in md and "| *other keys* | SplitStats |" in md
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.contracts", "--markdown"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == md
