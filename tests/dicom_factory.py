"""Builds small synthetic DICOM files for the ingest tests (pydicom only, written to tmp_path)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def chest_like(rows: int = 48, cols: int = 40, bits: int = 12, seed: int = 0) -> np.ndarray:
    """A smooth, non-constant unsigned image using the full ``bits`` range (+ some noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    base = 0.5 + 0.25 * np.sin(x / 5.0) + 0.2 * np.cos(y / 7.0)
    img = base + 0.05 * rng.random((rows, cols))
    img = (img - img.min()) / (img.max() - img.min())
    return np.round(img * (2**bits - 1)).astype(np.uint16 if bits > 8 else np.uint8)


def make_dataset(arr: np.ndarray, *, bits_stored: int | None = None, **attrs: Any) -> Dataset:
    """A DX dataset holding ``arr`` (2-D, or 3-D RGB) uncompressed; ``attrs`` override/add keywords."""
    arr = np.asarray(arr)
    ds = Dataset()
    fm = FileMetaDataset()
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.MediaStorageSOPClassUID = DX_STORAGE
    fm.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta = fm
    ds.SOPClassUID = DX_STORAGE
    ds.SOPInstanceUID = fm.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PatientID = "TEST-PATIENT"
    ds.PatientName = "Test^Patient"
    ds.PatientSex = "F"
    ds.PatientAge = "045Y"
    ds.ViewPosition = "PA"
    ds.Rows, ds.Columns = arr.shape[:2]
    ds.SamplesPerPixel = 3 if arr.ndim == 3 else 1
    if arr.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = "RGB" if arr.ndim == 3 else "MONOCHROME2"
    ds.BitsAllocated = arr.dtype.itemsize * 8
    bits = bits_stored if bits_stored is not None else arr.dtype.itemsize * 8
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    ds.PixelData = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
    for key, value in attrs.items():
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)
    return ds


def to_bytes(ds: Dataset, transfer_syntax: str | None = None) -> bytes:
    """Serialise (optionally compressing with pydicom's encoders or switching native syntax)."""
    from pydicom.uid import UID

    if transfer_syntax is not None:
        ts = UID(transfer_syntax)
        if ts.is_compressed:
            ds.compress(ts)
        else:
            ds.file_meta.TransferSyntaxUID = ts
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write(path: Path, ds: Dataset, transfer_syntax: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_bytes(ds, transfer_syntax))
    return path


def encapsulated(ds: Dataset, frame: bytes, transfer_syntax: str) -> bytes:
    """``ds`` with ``frame`` as its single encapsulated frame under ``transfer_syntax``."""
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def jpeg_lossless_sv1(arr: np.ndarray, precision: int) -> bytes:
    """A JPEG Lossless (process 14, selection value 1) codestream of a 2-D unsigned image.

    pydicom 3 has no encoder for this syntax, so the test writes one: predictor 1 (left; above
    for the first column; 2^(P-1) for the first sample), one Huffman table in which difference
    category k has the 5-bit code k. Enough to check that pylibjpeg's decoder gives the stored
    values back.
    """
    arr = np.asarray(arr, dtype=np.int64)
    rows, cols = arr.shape
    out = bytearray(b"\xff\xd8")
    # SOF3: lossless, Huffman
    out += b"\xff\xc3" + (11).to_bytes(2, "big") + bytes([precision])
    out += rows.to_bytes(2, "big") + cols.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    # DHT: DC table 0, 17 symbols (categories 0..16) of code length 5
    bits = [0] * 16
    bits[4] = 17
    table = bytes([0x00]) + bytes(bits) + bytes(range(17))
    out += b"\xff\xc4" + (2 + len(table)).to_bytes(2, "big") + table
    # SOS: one component, table 0, Ss = predictor 1, Se = 0, Ah/Al = 0
    out += b"\xff\xda" + (8).to_bytes(2, "big") + bytes([1, 1, 0x00, 1, 0, 0])

    acc, nbits = 0, 0
    data = bytearray()

    def put(value: int, n: int) -> None:
        nonlocal acc, nbits
        acc = (acc << n) | (value & ((1 << n) - 1))
        nbits += n
        while nbits >= 8:
            byte = (acc >> (nbits - 8)) & 0xFF
            data.append(byte)
            if byte == 0xFF:
                data.append(0x00)  # byte stuffing
            nbits -= 8

    for r in range(rows):
        for c in range(cols):
            if r == 0 and c == 0:
                pred = 1 << (precision - 1)
            elif c == 0:
                pred = int(arr[r - 1, 0])
            else:
                pred = int(arr[r, c - 1])
            diff = (int(arr[r, c]) - pred) % 65536
            if diff >= 32768:
                diff -= 65536
            ssss = 16 if diff == -32768 else abs(diff).bit_length()
            put(ssss, 5)
            if 0 < ssss < 16:
                put(diff if diff > 0 else diff + (1 << ssss) - 1, ssss)
    if nbits:
        put((1 << (8 - nbits)) - 1, 8 - nbits)  # pad with 1s
    out += data + b"\xff\xd9"
    return bytes(out)
