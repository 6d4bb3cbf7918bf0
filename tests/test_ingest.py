"""pipeline.ingest / pipeline.store / stages: accounting for every file, pseudonymisation, the
store, resizing, and the stage CLIs end to end on a small generated folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from dicom_factory import chest_like, make_dataset, write
from pydicom.uid import RLELossless

from pipeline.common import read_json
from pipeline.dicom import DecodeOptions, read_dicom
from pipeline.ingest import (
    MANIFEST_COLUMNS,
    IngestError,
    area_resize,
    fit_square,
    ingest,
    pseudonym,
    read_labels,
)
from pipeline.params import REPO_ROOT, Params, validate_params
from pipeline.splits import make_splits, split_report
from pipeline.store import open_store

SIZE = 32
SALT = "test-salt"
# Distinctive identifiers: no output file may contain them.
NAME = "Quackenbush^Zebediah"
RAW_ID = "SECRET-ID-{:04d}"
CONTRACT_KEYS = {"seen", "accepted", "rejected", "reasons", "rejected_files", "labels_without_file"}


def make_params(tmp: Path, internal: Path, external: Path | None = None, **ingest_overrides) -> Params:
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["data"]["dicom_dir"] = str(internal)
    raw["data"]["labels_csv"] = str(internal / "labels.csv")
    raw["data"]["external"] = (
        {"dicom_dir": str(external), "labels_csv": str(external / "labels.csv")}
        if external
        else {"dicom_dir": None, "labels_csv": None}
    )
    raw["ingest"].update({"size": SIZE, "min_size": 16, "pseudonym_salt": SALT, "workers": 1})
    raw["ingest"].update(ingest_overrides)
    raw["split"] = {"val_fraction": 0.15, "test_fraction": 0.15}
    (tmp / "params.yaml").write_text(yaml.safe_dump(raw))
    return validate_params(raw)


def _dx(i: int, **attrs):
    arr = chest_like(40 + (i % 3) * 8, 36, bits=12, seed=i)
    base = dict(
        PatientID=RAW_ID.format(i // 2),
        PatientName=NAME,
        PatientSex="MF"[i % 2],
        PatientAge=f"{(40 + i) % 100:03d}Y",
        ViewPosition="PA" if i % 3 else "AP",
        WindowCenter=2000,
        WindowWidth=3000,
    )
    base.update(attrs)
    return make_dataset(arr, bits_stored=12, **base)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """An internal folder exercising every ingest rule, and a small external one."""
    root = tmp_path_factory.mktemp("ingest")
    internal, external = root / "internal", root / "external"
    rows = []
    for i in range(24):  # 12 patients, 2 images each, alternating labels by patient
        rel = f"p{i // 2:02d}/img{i}.dcm"
        write(internal / rel, _dx(i), RLELossless if i % 5 == 0 else None)
        rows.append((rel, "abnormal" if (i // 2) % 2 else "normal"))
    # Every ingest-level rule:
    shutil.copy(internal / "p00/img0.dcm", internal / "zz_duplicate.dcm")  # same SOPInstanceUID
    write(internal / "extra/unlabelled.dcm", _dx(30))
    write(internal / "odd_label.dcm", _dx(31))
    write(internal / "ambiguous.dcm", _dx(32))
    write(internal / "ct.dcm", _dx(33, Modality="CT"))
    write(internal / "no_id.dcm", _dx(34, PatientID=None))
    (internal / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 64)
    (internal / "notes").mkdir()
    (internal / "notes" / "readme.txt").write_text("scanned on a Tuesday\n")
    os.symlink(internal / "gone.dcm", internal / "broken_link.dcm")
    rows += [
        ("zz_duplicate.dcm", "normal"),
        ("odd_label.dcm", "maybe"),
        ("ambiguous.dcm", "normal"),
        ("ambiguous.dcm", "abnormal"),
        ("ct.dcm", "normal"),
        ("no_id.dcm", "abnormal"),
        ("missing.dcm", "normal"),
        ("./p01/img2.dcm", "abnormal"),  # duplicate row, same label
        ("broken_link.dcm", "normal"),
    ]
    pd.DataFrame(rows, columns=["file", "label"]).assign(note="x").to_csv(internal / "labels.csv", index=False)

    ext_rows = []
    for i in range(4):
        rel = f"site2/e{i}.dcm"
        write(external / rel, _dx(100 + i, PatientID=f"EXT-{i // 2}"))
        ext_rows.append((rel, "normal" if i < 2 else "abnormal"))
    shutil.copy(internal / "p03/img6.dcm", external / "copy_of_internal.dcm")
    ext_rows.append(("copy_of_internal.dcm", "normal"))
    pd.DataFrame(ext_rows, columns=["file", "label"]).to_csv(external / "labels.csv", index=False)
    return {"root": root, "internal": internal, "external": external}


@pytest.fixture(scope="module")
def run(folders, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("out")
    params = make_params(out, folders["internal"], folders["external"])
    report = ingest(
        params, store_path=out / "images", manifest_path=out / "manifest.csv", report_path=out / "ingest.json"
    )
    return {"out": out, "params": params, "report": report}


def test_every_file_is_accounted_for(run) -> None:
    r = run["report"]
    assert set(r) >= CONTRACT_KEYS and set(r["external"]["external"]) >= CONTRACT_KEYS
    assert r == read_json(run["out"] / "ingest.json")  # written as returned
    for block in (r, r["external"]["external"]):
        assert block["accepted"] + block["rejected"] == block["seen"]
        assert block["rejected"] == len(block["rejected_files"]) == sum(block["reasons"].values())
    # 24 + duplicate + unlabelled + odd + ambiguous + ct + no_id + .DS_Store + readme + broken link
    assert r["seen"] == 33 and r["accepted"] == 25  # 24 + no_id
    assert r["reasons"] == {
        "ambiguous_label": 1,
        "duplicate_sop_instance_uid": 1,
        "label_not_in_classes": 1,
        "modality_not_radiograph": 1,
        "not_dicom": 2,
        "not_in_labels": 1,
        "unreadable_file": 1,
    }
    by_file = {x["file"]: x["reason"] for x in r["rejected_files"]}
    assert by_file["zz_duplicate.dcm"] == "duplicate_sop_instance_uid: same as internal/p00/img0.dcm"
    assert by_file["ct.dcm"] == "modality_not_radiograph: CT"
    assert by_file["odd_label.dcm"] == "label_not_in_classes: 'maybe'"
    assert by_file["ambiguous.dcm"].startswith("ambiguous_label")
    assert by_file[".DS_Store"] == "not_dicom" and by_file["notes/readme.txt"] == "not_dicom"
    assert by_file["extra/unlabelled.dcm"] == "not_in_labels"
    assert by_file["broken_link.dcm"] == "unreadable_file: broken link"
    assert r["labels_without_file"] == ["missing.dcm"]
    assert r["excluded"] == ["labels.csv"]
    assert r["labels_duplicate_rows"] == 1
    assert r["patients_missing_id"] == 1 and r["patients"] == 13
    assert r["per_class"] == {"abnormal": 13, "normal": 12}

    ext = r["external"]["external"]  # the single mapping form: one set named `external`
    assert (ext["seen"], ext["accepted"], ext["rejected"]) == (5, 4, 1)
    assert ext["rejected_files"] == [
        {"file": "copy_of_internal.dcm", "reason": "duplicate_sop_instance_uid: same as internal/p03/img6.dcm"}
    ]
    assert ext["patients_also_internal"] == 0


def test_store_and_manifest(run, folders) -> None:
    out = run["out"]
    store = open_store(out / "images")
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False, na_values=[""])
    assert tuple(manifest.columns) == MANIFEST_COLUMNS
    assert store.shape == (29, SIZE, SIZE) and store.dtype == np.float16 and not store[0].flags.writeable
    assert manifest["row"].tolist() == list(range(29))
    assert manifest["source"].tolist() == ["internal"] * 25 + ["external"] * 4
    assert float(np.asarray(store).min()) >= 0.0 and float(np.asarray(store).max()) <= 1.0

    row = manifest.set_index("file").loc["p01/img3.dcm"]
    assert row["patient"] == pseudonym(SALT, RAW_ID.format(1)) and len(row["patient"]) == 16
    assert (row["sex"], row["age"], row["view"], row["label"]) == ("F", 43.0, "AP", "abnormal")
    assert (row["rows"], row["columns"], row["bits_stored"], row["photometric"]) == (40, 36, 12, "MONOCHROME2")
    # The stored image is the decoded image fitted to the square (float16 precision).
    src = folders["internal"] / "p01/img3.dcm"
    expected = fit_square(read_dicom(src, DecodeOptions()).image, SIZE)
    np.testing.assert_allclose(store[int(row["row"])].astype(np.float32), expected, atol=1e-3)
    # pad: letterboxed with black left and right (40 x 36 -> 32 x 29)
    assert np.all(store[int(row["row"])][:, 0] == 0)
    no_id = manifest.set_index("file").loc["no_id.dcm"]
    assert no_id["patient"] == pseudonym(SALT, "file:internal/no_id.dcm")


def test_split_and_outputs_carry_no_identifiers(run, tmp_path) -> None:
    out = run["out"]
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False, na_values=[""])
    splits = make_splits(manifest, val_fraction=0.15, test_fraction=0.15, seed=0, classes=["normal", "abnormal"])
    assert splits.loc[manifest["source"] == "external", "split"].eq("external").all()
    splits.to_csv(tmp_path / "splits.csv", index=False)
    from pipeline.common import write_json

    write_json(tmp_path / "split.json", split_report(splits, manifest))
    for path in (out / "manifest.csv", out / "ingest.json", tmp_path / "splits.csv", tmp_path / "split.json"):
        text = path.read_text()
        for secret in (NAME, "Quackenbush", "Zebediah", "SECRET-ID", "EXT-0", "EXT-1"):
            assert secret not in text, f"{secret} in {path.name}"


def test_parallel_equals_serial(folders, run, tmp_path) -> None:
    params = make_params(tmp_path, folders["internal"], folders["external"])
    report = ingest(
        params,
        store_path=tmp_path / "images",
        manifest_path=tmp_path / "manifest.csv",
        report_path=tmp_path / "ingest.json",
        workers=2,
    )
    assert report["timing"]["workers"] == 2
    for f in sorted((run["out"] / "images").iterdir()):  # the same shards and index, byte for byte
        assert (tmp_path / "images" / f.name).read_bytes() == f.read_bytes()
    assert len(list((tmp_path / "images").iterdir())) == len(list((run["out"] / "images").iterdir()))
    assert (tmp_path / "manifest.csv").read_text() == (run["out"] / "manifest.csv").read_text()


def test_unusable_inputs_stop_with_a_clear_error(folders, tmp_path) -> None:
    params = make_params(tmp_path, tmp_path / "nowhere")
    with pytest.raises(IngestError, match="not a folder"):
        ingest(params, store_path=tmp_path / "s", manifest_path=tmp_path / "m.csv", report_path=tmp_path / "r.json")

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "labels.csv").write_text("file,diagnosis\na.dcm,normal\n")
    with pytest.raises(IngestError, match=r"lacks the required column\(s\) \['label'\]"):
        ingest(
            make_params(tmp_path, bad),
            store_path=tmp_path / "s",
            manifest_path=tmp_path / "m.csv",
            report_path=tmp_path / "r.json",
        )
    with pytest.raises(IngestError, match="not found"):
        read_labels(tmp_path / "absent.csv")

    # Nothing usable: every file rejected -> error, the report is still written, no store.
    only_ct = tmp_path / "only_ct"
    write(only_ct / "a.dcm", _dx(1, Modality="CT"))
    (only_ct / "labels.csv").write_text("file,label\na.dcm,normal\n")
    with pytest.raises(IngestError, match="no usable image"):
        ingest(
            make_params(tmp_path, only_ct),
            store_path=tmp_path / "s",
            manifest_path=tmp_path / "m.csv",
            report_path=tmp_path / "r.json",
        )
    assert read_json(tmp_path / "r.json")["reasons"] == {"modality_not_radiograph": 1}
    assert not list(tmp_path.glob("s*"))  # neither a store nor a partial one


# ----------------------------------------------------------------------------- resizing


def test_area_resize_integer_factor_is_block_mean() -> None:
    img = np.random.default_rng(0).random((64, 48)).astype(np.float32)
    out = area_resize(img, (16, 12))
    np.testing.assert_allclose(out, img.reshape(16, 4, 12, 4).mean(axis=(1, 3)), atol=1e-6)


def test_area_resize_matches_monai_area() -> None:
    from monai.transforms import Resize

    y, x = np.mgrid[0:300, 0:260]
    img = (0.5 + 0.3 * np.sin(x / 17.0) * np.cos(y / 23.0)).astype(np.float32)
    for shape in [(50, 52), (37, 32), (150, 130), (600, 520)]:
        ours = area_resize(img, shape)
        ref = Resize(spatial_size=shape, mode="area" if shape[0] < 300 else "bilinear")(img[None])[0]
        assert ours.shape == shape
        assert np.abs(ours - np.asarray(ref)).mean() < 0.005, shape


def test_area_resize_does_not_alias() -> None:
    # A 1-pixel checkerboard must average to grey, not to a moire pattern.
    board = (np.indices((512, 512)).sum(axis=0) % 2).astype(np.float32)
    out = area_resize(board, (40, 40))
    assert np.abs(out - 0.5).max() < 0.03


@pytest.mark.parametrize("fit", ["pad", "crop"])
def test_fit_square(fit: str) -> None:
    img = np.ones((100, 50), np.float32)
    out = fit_square(img, 32, fit)
    assert out.shape == (32, 32)
    if fit == "pad":  # 100 x 50 -> 32 x 16, centred on black
        assert np.allclose(out[:, 8:24], 1.0, atol=1e-6)
        assert out[:, :8].max() == 0.0 and out[:, 24:].max() == 0.0
    else:  # centre square, no border
        assert np.allclose(out, 1.0, atol=1e-6)


# ----------------------------------------------------------------------------- streamed manifest


def test_manifest_streamed_in_chunks_has_the_bytes_of_one_frame(tmp_path) -> None:
    """CsvStream writes chunk by chunk (a chunk may have every age missing, or none) and gives the
    bytes of the whole DataFrame written at once; nothing is under the name before close()."""
    from pipeline.common import CsvStream, write_csv
    from pipeline.ingest import MANIFEST_DTYPES

    rows = []
    for i in range(10):
        rows.append(
            {c: f'v{i}, "q"\n' for c in MANIFEST_COLUMNS}
            | {"row": i, "age": None if i < 4 else 40.5 + i, "rows": 64, "columns": 60, "bits_stored": 12}
        )
    write_csv(pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)), tmp_path / "whole.csv")
    with CsvStream(tmp_path / "streamed.csv", MANIFEST_COLUMNS, MANIFEST_DTYPES, chunk=3) as s:
        for r in rows:
            s.append(r)
        assert not (tmp_path / "streamed.csv").exists()
    assert s.count == 10
    assert (tmp_path / "streamed.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    with pytest.raises(RuntimeError), CsvStream(tmp_path / "aborted.csv", ["a"], {"a": "int64"}) as s:
        s.append({"a": 1})
        raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["streamed.csv", "whole.csv"]
