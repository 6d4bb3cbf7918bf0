"""pipeline.importer: PNG/JPEG + CSV -> DICOM that ingest accepts, faithfully and reproducibly;
and the committed demo sets built with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

from pipeline.dicom import DecodedImage, DecodeOptions, read_dicom
from pipeline.importer import ConversionError, import_images, main
from pipeline.params import REPO_ROOT

RAW = DecodeOptions(apply_voi_lut=False, min_size=1)


def _grey(h: int = 24, w: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(10, 240, (h, w)).astype(np.uint8)


@pytest.fixture()
def sources(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "src"
    (src / "png").mkdir(parents=True)
    g = _grey()
    Image.fromarray(g, "L").save(src / "png" / "grey.png")
    Image.fromarray(np.stack([g] * 3, -1), "RGB").save(src / "png" / "rgb_grey.png")
    Image.fromarray(np.dstack([g, g, g, np.full_like(g, 255)]), "RGBA").save(src / "png" / "rgba.png")
    Image.fromarray(np.dstack([g, np.full_like(g, 255)]), "LA").save(src / "png" / "la.png")
    Image.fromarray(g.astype(np.uint16) * 257).save(src / "png" / "sixteen.png")
    Image.fromarray(_grey(30, 26, 1), "L").save(src / "chest.jpg", quality=90)
    rows = [
        ("png/grey.png", "normal", "P-1", "M", 57, "PA"),
        ("png/rgb_grey.png", "normal", "P-1", "M", 58.6, "PA"),
        ("png/rgba.png", "pneumonia", "P-2", "F", 7, "AP"),
        ("png/la.png", "pneumonia", "P-2", "F", "", ""),
        ("png/sixteen.png", "normal", "", "", "", ""),
        ("chest.jpg", "pneumonia", "P-3", "f", 3, "ap"),
    ]
    csv = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=["file", "label", "patient_id", "sex", "age", "view"]).to_csv(csv, index=False)
    return src, csv


def test_import_converts_every_kind_faithfully(sources, tmp_path: Path) -> None:
    src, csv = sources
    out = tmp_path / "out"
    labels = import_images(src, csv, out, modality="DX", label_map={"pneumonia": "abnormal"})
    assert list(labels.columns) == ["file", "label"]
    assert pd.read_csv(out / "labels.csv").equals(labels)
    assert dict(zip(labels["file"], labels["label"], strict=False)) == {
        "chest.dcm": "abnormal",
        "png/grey.dcm": "normal",
        "png/la.dcm": "abnormal",
        "png/rgb_grey.dcm": "normal",
        "png/rgba.dcm": "abnormal",
        "png/sixteen.dcm": "normal",
    }
    g = _grey().astype(np.float32)
    expected = (g - g.min()) / (g.max() - g.min())
    for name in ("grey", "rgb_grey", "rgba", "la", "sixteen"):
        res = read_dicom(out / "png" / f"{name}.dcm", RAW)
        assert isinstance(res, DecodedImage), res
        assert res.header.transfer_syntax == ExplicitVRLittleEndian
        np.testing.assert_allclose(res.image, expected, atol=1e-6)
    assert read_dicom(out / "png" / "sixteen.dcm", RAW).header.bits_stored == 16

    ds = pydicom.dcmread(out / "png" / "grey.dcm")
    assert (ds.Modality, ds.PatientID, ds.PatientSex, ds.PatientAge, ds.ViewPosition) == (
        "DX",
        "P-1",
        "M",
        "057Y",
        "PA",
    )
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    assert ds.PatientName == "" and ds.StudyDate == "" and ds.PatientBirthDate == ""
    assert pydicom.dcmread(out / "png" / "rgb_grey.dcm").PatientAge == "058Y"  # whole years
    assert "PatientAge" not in pydicom.dcmread(out / "png" / "la.dcm")
    assert pydicom.dcmread(out / "png" / "sixteen.dcm").PatientID == ""


def test_jpeg_is_encapsulated_without_reencoding(sources, tmp_path: Path) -> None:
    src, csv = sources
    out = tmp_path / "out"
    import_images(src, csv, out)
    ds = pydicom.dcmread(out / "chest.dcm")
    assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    frames = list(generate_frames(ds.PixelData, number_of_frames=1))
    assert frames[0].rstrip(b"\x00") == (src / "chest.jpg").read_bytes().rstrip(b"\x00")
    assert (ds.PatientSex, ds.PatientAge, ds.ViewPosition, ds.LossyImageCompression) == ("F", "003Y", "AP", "01")
    res = read_dicom(out / "chest.dcm", RAW)
    assert isinstance(res, DecodedImage) and res.image.shape == (30, 26)
    # Same pixels as Pillow's decoder of the source JPEG (two libjpeg builds: +-1 grey level).
    ref = np.asarray(Image.open(src / "chest.jpg"), dtype=np.float32)
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    assert np.abs(res.image - ref).max() <= 2.5 / 230


def test_rerun_gives_identical_files(sources, tmp_path: Path) -> None:
    src, csv = sources
    import_images(src, csv, tmp_path / "a")
    import_images(src, csv, tmp_path / "b")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 7
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    uids = {pydicom.dcmread(tmp_path / "a" / r).SOPInstanceUID for r in files if r.suffix == ".dcm"}
    assert len(uids) == 6 and all(u.startswith("2.25.") for u in uids)


@pytest.mark.parametrize("kind", ["colour", "transparent", "progressive", "missing_column"])
def test_unfaithful_inputs_are_refused(tmp_path: Path, kind: str) -> None:
    g = _grey()
    path = tmp_path / ("x.jpg" if kind == "progressive" else "x.png")
    if kind == "colour":
        Image.fromarray(np.dstack([g, g, 255 - g]), "RGB").save(path)
    elif kind == "transparent":
        Image.fromarray(np.dstack([g, np.full_like(g, 100)]), "LA").save(path)
    elif kind == "progressive":
        Image.fromarray(g, "L").save(path, progressive=True)
    else:
        Image.fromarray(g, "L").save(path)
    cols = "file,diagnosis" if kind == "missing_column" else "file,label"
    (tmp_path / "l.csv").write_text(f"{cols}\n{path.name},normal\n")
    match = {
        "colour": "colour image",
        "transparent": "transparent",
        "progressive": "baseline",
        "missing_column": "missing column",
    }[kind]
    with pytest.raises(ConversionError, match=match):
        import_images(tmp_path, tmp_path / "l.csv", tmp_path / "out")


def test_cli(sources, tmp_path: Path, capsys) -> None:
    src, csv = sources
    rc = main(
        [
            "--images-dir",
            str(src),
            "--labels",
            str(csv),
            "--out",
            str(tmp_path / "o"),
            "--map-label",
            "pneumonia=abnormal",
            "--default-view",
            "AP",
        ]
    )
    assert rc == 0 and "6 DICOM files" in capsys.readouterr().out
    assert pydicom.dcmread(tmp_path / "o" / "png" / "la.dcm").ViewPosition == "AP"  # default view
    rc = main(
        ["--images-dir", str(src), "--labels", str(csv), "--out", str(tmp_path / "o2"), "--map-label", "pneumonia"]
    )
    assert rc == 1 and "OLD=NEW" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("folder", "n", "counts"),
    [("data/demo", 700, {"abnormal": 350, "normal": 350}), ("data/demo-external", 16, {"abnormal": 8, "normal": 8})],
)
def test_committed_demo_sets(folder: str, n: int, counts: dict) -> None:
    root = REPO_ROOT / folder
    labels = pd.read_csv(root / "labels.csv")
    assert list(labels.columns) == ["file", "label"] and len(labels) == n
    assert labels["label"].value_counts().to_dict() == counts
    # The DICOM files live in dicom/ (data.dicom_dir); labels and attribution beside it, so that
    # ingest sees only DICOM files.
    assert all((root / "dicom" / f).is_file() for f in labels["file"])
    assert sorted(p.name for p in root.iterdir()) == ["ATTRIBUTION.md", "dicom", "labels.csv"]
    assert (root / "ATTRIBUTION.md").is_file()
    first = pydicom.dcmread(root / "dicom" / labels["file"].iloc[0])
    assert first.Modality == "DX" and first.PatientName == "" and first.PatientID
    if folder == "data/demo-external":
        assert first.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
