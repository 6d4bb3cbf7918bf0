"""PNG/JPEG radiographs + a labels CSV -> DICOM files that the ingest stage reads.

Usage (builds ``data/demo``; see ``data/demo/ATTRIBUTION.md``)::

    python -m pipeline.importer --images-dir DIR --labels CSV --out DIR \\
        [--modality DX] [--map-label pneumonia=abnormal] [--default-view AP]

Why: many public chest X-ray sets ship as PNG/JPEG. Converting them to DICOM, with the CSV's
metadata in the header, lets the demo exercise the same ingest path as a hospital export.

What it writes, per CSV row (columns ``file`` and ``label`` required; ``patient_id``, ``sex``,
``age`` (years), ``view`` used when present):

* a Secondary Capture image (``ConversionType WSD``) with ``Modality`` (``--modality``),
  PatientID, PatientSex, PatientAge (``nnnY``), ViewPosition; MONOCHROME2; no names, no dates
  (type-2 attributes are present and empty);
* PNG (8- or 16-bit grey; RGB/RGBA/LA/palette only when they are grey: R = G = B and an opaque
  alpha) -> uncompressed Explicit VR Little Endian;
* JPEG (8-bit, one component, baseline) -> the original JPEG bytes encapsulated as JPEG
  Baseline (no re-encoding: lossless with respect to the source file);
* UIDs derived from the sha256 of the source file (``2.25.`` + a name-based UUID), so rerunning
  the import gives byte-identical files;
* ``<out>/labels.csv`` with ``file`` (the .dcm path relative to ``--out``) and ``label``
  (after ``--map-label``).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
)

from pipeline.common import write_csv


class ConversionError(ValueError):
    """A source image or the CSV cannot be converted faithfully; the message names the file."""


@dataclass(frozen=True)
class Meta:
    patient_id: str | None
    sex: str | None
    age: int | None
    view: str | None


def read_grey_png(path: Path) -> np.ndarray:
    """A PNG as a 2-D uint8/uint16 grey array; raises if it carries colour or transparency."""
    from PIL import Image

    with Image.open(path) as opened:
        opened.load()
        mode = opened.mode
        im: Image.Image = opened
        if mode == "P":
            im = opened.convert("RGBA")
            mode = "RGBA"
        arr = np.asarray(im)
    if mode in ("L", "1"):
        return arr.astype(np.uint8)
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        if arr.min() < 0 or arr.max() > 65535:
            raise ConversionError(f"{path}: 32-bit values outside 0..65535")
        return arr.astype(np.uint16)
    if mode in ("LA", "RGB", "RGBA"):
        channels = arr[..., :-1] if mode in ("LA", "RGBA") else arr
        if mode in ("LA", "RGBA") and not np.all(arr[..., -1] == np.iinfo(arr.dtype).max):
            raise ConversionError(f"{path}: transparent pixels (alpha < max); cannot read as grey")
        if channels.shape[-1] == 3 and not (
            np.array_equal(channels[..., 0], channels[..., 1]) and np.array_equal(channels[..., 0], channels[..., 2])
        ):
            raise ConversionError(f"{path}: a colour image (R, G, B differ), not a grey radiograph")
        return np.ascontiguousarray(channels[..., 0])
    raise ConversionError(f"{path}: unsupported PNG mode {mode}")


def jpeg_info(data: bytes, name: str = "") -> tuple[int, int]:
    """(rows, columns) of a baseline 8-bit one-component JPEG; raises otherwise."""
    if data[:2] != b"\xff\xd8":
        raise ConversionError(f"{name}: not a JPEG file")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ConversionError(f"{name}: malformed JPEG marker stream")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            precision, rows = data[i + 4], int.from_bytes(data[i + 5 : i + 7], "big")
            cols, comps = int.from_bytes(data[i + 7 : i + 9], "big"), data[i + 9]
            if marker != 0xC0:
                raise ConversionError(
                    f"{name}: JPEG SOF{marker - 0xC0} (progressive/extended/lossless); only baseline "
                    "(SOF0) can be encapsulated as JPEG Baseline without re-encoding"
                )
            if precision != 8 or comps != 1:
                raise ConversionError(
                    f"{name}: JPEG with {comps} component(s) of {precision} bit; need 1 grey component of 8 bit"
                )
            return rows, cols
        i += 2 + length
    raise ConversionError(f"{name}: no JPEG frame header found")


def _uid(digest: str, role: str) -> str:
    """A ``2.25.<uuid>`` UID from a name-based (SHA-1, version 5) UUID of the source's sha256:
    the same source file always gets the same UIDs, so reruns are byte-identical.
    (pydicom's ``generate_uid(prefix=None)`` is random whatever its entropy sources.)"""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, f'cxr-transfer-importer:{digest}:{role}').int}"


def _base_dataset(digest: str, meta: Meta, modality: str, tsyntax: str, body_part: str) -> Dataset:
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    fm.MediaStorageSOPInstanceUID = UID(_uid(digest, "sop"))
    fm.TransferSyntaxUID = UID(tsyntax)
    ds = Dataset()
    ds.file_meta = fm
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = fm.MediaStorageSOPClassUID
    ds.SOPInstanceUID = fm.MediaStorageSOPInstanceUID
    # Type-2 attributes present and empty: no dates, no names.
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.ConversionType = "WSD"
    ds.ReferringPhysicianName = ""
    ds.PatientName = ""
    ds.PatientID = meta.patient_id or ""
    ds.PatientBirthDate = ""
    ds.PatientSex = meta.sex or ""
    if meta.age is not None:
        ds.PatientAge = f"{meta.age:03d}Y"
    if body_part:
        ds.BodyPartExamined = body_part
    if meta.view:
        ds.ViewPosition = meta.view
    ds.StudyInstanceUID = _uid(digest, "study")
    ds.SeriesInstanceUID = _uid(digest, "series")
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelRepresentation = 0
    return ds


def to_dicom(source: Path, meta: Meta, modality: str = "DX", body_part: str = "CHEST") -> Dataset:
    """Build the DICOM dataset for one PNG or JPEG file."""
    data = source.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if data[:2] == b"\xff\xd8":
        rows, cols = jpeg_info(data, str(source))
        ds = _base_dataset(digest, meta, modality, JPEGBaseline8Bit, body_part)
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.LossyImageCompression = "01"  # the source JPEG was lossy; we did not re-encode it
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        ds.PixelData = encapsulate([data])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        return ds
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        arr = read_grey_png(source)
        ds = _base_dataset(digest, meta, modality, ExplicitVRLittleEndian, body_part)
        ds.Rows, ds.Columns = arr.shape
        bits = 8 * arr.dtype.itemsize
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
        ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        ds["PixelData"].VR = "OB" if bits == 8 else "OW"
        return ds
    raise ConversionError(f"{source}: neither PNG nor JPEG")


def _clean(value: object) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    s = str(value).strip()
    return s or None


def _meta(row: pd.Series, default_view: str | None, name: str) -> Meta:
    sex = _clean(row.get("sex"))
    if sex is not None:
        sex = sex.upper()[:1]
        if sex not in ("M", "F", "O"):
            raise ConversionError(f"{name}: sex {row.get('sex')!r} is not M/F/O")
    age_raw = _clean(row.get("age"))
    age = None
    if age_raw is not None:
        try:
            age_f = float(age_raw)
        except ValueError:
            raise ConversionError(f"{name}: age {age_raw!r} is not a number of years") from None
        if not 0 <= age_f <= 999:
            raise ConversionError(f"{name}: age {age_raw!r} outside 0..999 years")
        age = int(age_f)
    view = _clean(row.get("view")) or default_view
    return Meta(_clean(row.get("patient_id")), sex, age, view.upper() if view else None)


def parse_label_map(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConversionError(f"--map-label expects OLD=NEW, got {item!r}")
        old, new = (x.strip() for x in item.split("=", 1))
        if not old or not new:
            raise ConversionError(f"--map-label expects OLD=NEW, got {item!r}")
        out[old] = new
    return out


def import_images(
    images_dir: str | Path,
    labels_csv: str | Path,
    out_dir: str | Path,
    *,
    modality: str = "DX",
    label_map: dict[str, str] | None = None,
    default_view: str | None = None,
    body_part: str = "CHEST",
    labels_out: str | Path | None = None,
) -> pd.DataFrame:
    """Convert every CSV row's image; write the labels CSV; return it (file, label).

    The CSV goes to ``labels_out`` (default ``<out>/labels.csv``); its ``file`` column is relative to
    ``out_dir`` either way. Keeping it (and any attribution file) outside ``out_dir`` means ingest
    sees only DICOM files there.
    """
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    df = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
    missing = [c for c in ("file", "label") if c not in df.columns]
    if missing:
        raise ConversionError(f"{labels_csv}: missing column(s) {missing}; has {list(df.columns)}")
    label_map = label_map or {}
    out_rows = []
    for _, row in df.iterrows():
        rel = PurePosixPath(str(row["file"]).strip().replace("\\", "/"))
        if rel.is_absolute() or ".." in rel.parts:
            raise ConversionError(f"{labels_csv}: file {str(rel)!r} must be relative to --images-dir")
        src = images_dir / rel
        if not src.is_file():
            raise ConversionError(f"{labels_csv}: {rel} not found under {images_dir}")
        ds = to_dicom(src, _meta(row, default_view, str(rel)), modality=modality, body_part=body_part)
        dst_rel = rel.with_suffix(".dcm")
        dst = out_dir / dst_rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        dst.write_bytes(buf.getvalue())
        label = str(row["label"]).strip()
        out_rows.append({"file": dst_rel.as_posix(), "label": label_map.get(label, label)})
    labels = pd.DataFrame(out_rows, columns=["file", "label"]).sort_values("file").reset_index(drop=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels_path = Path(labels_out) if labels_out is not None else out_dir / "labels.csv"
    labels_path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(labels, labels_path)
    return labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.importer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images-dir", required=True, type=Path, help="folder the CSV's file paths are relative to")
    parser.add_argument("--labels", required=True, type=Path, help="CSV: file, label [, patient_id, sex, age, view]")
    parser.add_argument("--out", required=True, type=Path, help="output folder for the DICOM files")
    parser.add_argument(
        "--labels-out",
        type=Path,
        default=None,
        help="where to write the labels CSV (default OUT/labels.csv); its file column is relative to OUT",
    )
    parser.add_argument("--modality", default="DX", help="DICOM Modality to record (default DX)")
    parser.add_argument(
        "--map-label",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="rename a label (repeatable), e.g. pneumonia=abnormal",
    )
    parser.add_argument(
        "--default-view",
        default=None,
        help="ViewPosition for rows without a view value (e.g. AP when the source documents it)",
    )
    parser.add_argument("--body-part", default="CHEST", help="BodyPartExamined (default CHEST; empty to omit)")
    args = parser.parse_args(argv)
    try:
        labels = import_images(
            args.images_dir,
            args.labels,
            args.out,
            modality=args.modality.upper(),
            label_map=parse_label_map(args.map_label),
            default_view=args.default_view,
            body_part=args.body_part,
            labels_out=args.labels_out,
        )
    except (ConversionError, OSError) as err:
        print(f"importer: {err}", file=sys.stderr)
        return 1
    counts = labels["label"].value_counts().sort_index().to_dict()
    print(f"importer: {len(labels)} DICOM files -> {args.out} (labels: {counts})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "ConversionError",
    "import_images",
    "jpeg_info",
    "main",
    "parse_label_map",
    "read_grey_png",
    "to_dicom",
]
