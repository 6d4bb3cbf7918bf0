"""pipeline.params: the shipped params.yaml validates; bad values stop with a message that names
the key and the value."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pipeline.params import REPO_ROOT, ParamsError, load_params, validate_params

RAW = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def edited(path: str, value) -> dict:
    raw = copy.deepcopy(RAW)
    *parents, last = path.split(".")
    node = raw
    for p in parents:
        node = node[p]
    node[last] = value
    return raw


def test_shipped_params_are_valid() -> None:
    p = load_params()
    assert p.ingest.size >= 16 and p.data.classes == ["normal", "abnormal"]
    assert [e.name for e in p.data.external] == ["kermany-paediatric"] and p.data.positive_index == 1


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("ingest.size", -3, "ingest.size = -3"),
        ("ingest.size", "big", "ingest.size = 'big'"),
        ("ingest.fit", "stretch", "ingest.fit = 'stretch'"),
        ("ingest.workers", -1, "ingest.workers = -1"),
        ("split.val_fraction", 1.5, "split.val_fraction = 1.5"),
        ("ingest.apply_voi_lut", "maybe", "ingest.apply_voi_lut = 'maybe'"),
        ("data.classes", ["normal"], "data.classes = ['normal']"),
        ("seed", -1, "seed = -1"),
    ],
)
def test_bad_values_name_key_and_value(key: str, value, expected: str) -> None:
    with pytest.raises(ParamsError) as err:
        validate_params(edited(key, value), source="p.yaml")
    msg = str(err.value)
    assert msg.startswith("p.yaml: invalid parameters") and expected in msg


def test_unknown_key_is_named() -> None:
    raw = copy.deepcopy(RAW)
    raw["ingest"]["sise"] = 128
    with pytest.raises(ParamsError, match=r"ingest\.sise = 128: unknown key"):
        validate_params(raw)


def test_missing_key_is_named() -> None:
    raw = copy.deepcopy(RAW)
    del raw["ingest"]["pseudonym_salt"]
    with pytest.raises(ParamsError, match=r"ingest\.pseudonym_salt: required key is missing"):
        validate_params(raw)


def test_several_errors_reported_together_and_cross_field_rules() -> None:
    raw = edited("ingest.size", 0)
    raw["split"]["test_fraction"] = 0.8
    raw["data"]["external"] = {"dicom_dir": "x", "labels_csv": None}
    msg = str(pytest.raises(ParamsError, validate_params, raw).value)
    assert "ingest.size = 0" in msg and "split" in msg and "data.external" in msg
    assert "set both dicom_dir and labels_csv" in msg


def test_load_params_from_file(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(edited("ingest.min_size", 0)))
    with pytest.raises(ParamsError, match=r"ingest\.min_size = 0"):
        load_params(path)
    path.write_text("ingest: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(path)
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "absent.yaml")
