"""The DVC project wiring: dvc.yaml, params.yaml, pipeline/paths.py and .dvc/config agree."""

from __future__ import annotations

import configparser

import pytest
import yaml

from pipeline import paths
from pipeline.params import REPO_ROOT, load_params

DVC_YAML = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
PARAMS_RAW = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
STAGES = {n: s.get("do", s) for n, s in DVC_YAML["stages"].items()}  # a foreach stage: its `do`


def _entries(stage: dict, key: str) -> list[str]:
    out = []
    for item in stage.get(key, []):
        out.append(next(iter(item)) if isinstance(item, dict) else item)
    return out


def test_default_params_validate() -> None:
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.finetune.learning_rates == pytest.approx([1e-6, 1e-4, 1e-2])


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_declared_params_exist(stage: str) -> None:
    for key in _entries(STAGES[stage], "params"):
        if key.endswith(".yaml"):  # a whole params file
            assert (REPO_ROOT / key).is_file(), f"{stage}: {key} missing"
            continue
        node = PARAMS_RAW
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{stage}: params key {key} not in params.yaml"
            node = node[part]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_commands_run_the_stage_module(stage: str) -> None:
    spec = STAGES[stage]
    # `python -m stages.<name>`: run as a module so `pipeline` comes from the checkout being run.
    expected = f"python -m stages.{stage}" + (" ${item}" if "foreach" in DVC_YAML["stages"][stage] else "")
    assert spec["cmd"] == expected, spec["cmd"]
    assert (REPO_ROOT / f"stages/{stage}.py").is_file(), f"{stage}: stages/{stage}.py missing"


def test_contract_outputs_are_declared() -> None:
    declared = set()
    for spec in STAGES.values():
        for key in ("outs", "metrics", "plots"):
            declared.update(_entries(spec, key))
    for artifact in (
        paths.STORE,
        paths.MANIFEST,
        paths.INGEST_REPORT,
        paths.SPLITS,
        paths.SPLIT_REPORT,
        paths.METRICS,
        paths.EVALUATION,
        paths.DIAGNOSTICS,
        paths.RECOMMENDATION,
        paths.REPORT_HTML,
        paths.REPORT_MD,
        *(paths.predictions_csv(p) for p in paths.PATHS),
        *(paths.calibration_json(p) for p in paths.PATHS),
    ):
        assert str(artifact) in declared, f"{artifact} is not declared as a DVC output"


def test_metrics_declared_for_dvc_metrics_show() -> None:
    assert str(paths.METRICS) in _entries(STAGES["evaluate"], "metrics")


def test_dvc_config_is_offline() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO_ROOT / ".dvc" / "config")
    assert cfg.get("core", "analytics") == "false"
    assert cfg.get("core", "check_update") == "false"


def test_linear_stage_reads_no_upstream_model_params() -> None:
    """Changing linear.* must rerun linear and what follows, never features or the trainers."""
    for stage in ("ingest", "split", "augment", "features", "finetune", "scratch"):
        assert not any(k == "linear" or k.startswith("linear.") for k in _entries(STAGES[stage], "params"))
