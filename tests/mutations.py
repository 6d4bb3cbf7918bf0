"""A deterministic corpus of malformed DICOM files made from valid radiographs by mutation.

Every file carries the planted identifiers :data:`PLANTED_NAME` / :data:`PLANTED_ID` (and, for
the "long/non-ASCII patient fields" class, variants of them), so a test can check that no output
quotes them. Mutation classes (the issue's list): byte flips and truncation in header, pixel data
and JPEG / JPEG 2000 / RLE fragments; huge, zero or negative Rows/Columns/Bits*/SamplesPerPixel;
wrong VRs and length fields (a Modality whose length swallows the next elements); bad Rescale,
Window, VOI LUT and Modality LUT values; garbage photometric interpretation, transfer syntax, file
meta and preamble; empty files; deep sequence nesting; deflate bombs; non-ASCII and very long
patient fields; control characters in header strings that reach the manifest.

``python -m tests.mutations OUT N`` (or :func:`make_corpus`) writes N files plus ``labels.csv``.
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dicom_factory import chest_like, make_dataset, to_bytes  # noqa: E402

PLANTED_NAME = "Quackenbush^Zebediah"
PLANTED_ID = "SECRET-ID-4711"
SIIM = Path(__file__).resolve().parent / "fixtures" / "dicom" / "siim-pneumothorax-sample.dcm"


def _base(seed: int, size: int = 64) -> Dataset:
    return make_dataset(
        chest_like(size, size, bits=12, seed=seed),
        bits_stored=12,
        PatientName=PLANTED_NAME,
        PatientID=PLANTED_ID,
        WindowCenter=2000,
        WindowWidth=3000,
    )


def _compressed(seed: int, syntax: str) -> Dataset:
    ds = _base(seed)
    ds.compress(syntax)
    return ds


def _jpeg(seed: int) -> Dataset:
    ds = pydicom.dcmread(SIIM)
    ds.PatientName, ds.PatientID = PLANTED_NAME, PLANTED_ID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[str(seed)])
    return ds


def _flip(data: bytes, rng: np.random.Generator, lo: int, hi: int, n: int = 8) -> bytes:
    b = bytearray(data)
    for pos in rng.integers(lo, max(lo + 1, hi), size=n):
        b[int(pos)] ^= int(rng.integers(1, 256))
    return bytes(b)


def _pixel_offset(data: bytes) -> int:
    return data.rindex(b"\xe0\x7f\x10\x00")


def _set(ds: Dataset, **attrs: object) -> bytes:
    for k, v in attrs.items():
        setattr(ds, k, v)
    return to_bytes(ds) if ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1" else _raw(ds)


def _raw(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _with_element(data: bytes, keyword_tag: bytes, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    """Insert an explicit-VR element right after the file meta (tags sort early)."""
    ln = len(value) if length is None else length
    elem = (
        keyword_tag
        + vr
        + (
            struct.pack("<H", ln)
            if vr not in (b"OB", b"OW", b"SQ", b"UN", b"UT")
            else b"\x00\x00" + struct.pack("<I", ln)
        )
        + value
    )
    meta_end = _meta_end(data)
    return data[:meta_end] + elem + data[meta_end:]


def _meta_end(data: bytes) -> int:
    fp = io.BytesIO(data)
    fp.seek(132)
    pydicom.filereader._read_file_meta_info(fp)
    return fp.tell()


def _swallowing_modality(seed: int) -> bytes:
    """Modality (0008,0060) declares a length that runs over PatientName/PatientID."""
    data = to_bytes(_base(seed))
    i = data.index(b"\x08\x00\x60\x00CS")
    return data[: i + 6] + struct.pack("<H", 400) + data[i + 8 :]


def _swallowing_photometric(seed: int) -> bytes:
    data = to_bytes(_base(seed))
    i = data.index(b"\x28\x00\x04\x00CS")
    # Move the patient module after it so the swallowed bytes would hold the identifiers.
    pn = f"{PLANTED_NAME}\\{PLANTED_ID}".encode()
    return data[: i + 6] + struct.pack("<H", 12 + len(pn)) + data[i + 8 : i + 8 + 12] + pn + data[i + 8 + 12 :]


def _deep_sequence(seed: int, depth: int = 200) -> bytes:
    ds = _base(seed)
    inner = Dataset()
    inner.CodeValue = "X"
    for _ in range(depth):
        outer = Dataset()
        outer.ContentSequence = Sequence([inner])
        inner = outer
    ds.ContentSequence = inner.ContentSequence
    return to_bytes(ds)


def _deflate_bomb(seed: int, inflated: int = 512 << 20) -> bytes:
    """A deflated data set that inflates to ``inflated`` bytes (a huge private OB element)."""
    ds = _base(seed)
    ds.add_new(0x00291010, "OB", b"\x00" * 16)
    head = _raw(ds)
    meta_end = _meta_end(head)
    body = head[meta_end:]
    j = body.index(b"\x29\x00\x10\x10")
    big = body[:j] + b"\x29\x00\x10\x10OB\x00\x00" + struct.pack("<I", inflated)
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zipped = comp.compress(big)
    chunk = b"\x00" * (1 << 20)
    for _ in range(inflated >> 20):
        zipped += comp.compress(chunk)
    zipped += comp.compress(body[j + 12 + 16 :]) + comp.flush()
    meta = bytearray(head[:meta_end])
    uid = b"1.2.840.10008.1.2.1\x00"
    k = meta.index(uid)
    new_uid = DeflatedExplicitVRLittleEndian.encode() + (b"\x00" if len(DeflatedExplicitVRLittleEndian) % 2 else b"")
    meta[k - 2 : k + len(uid)] = struct.pack("<H", len(new_uid)) + new_uid
    # fix the group length (0002,0000) UL
    g = meta.index(b"\x02\x00\x00\x00UL\x04\x00")
    old = struct.unpack("<I", meta[g + 8 : g + 12])[0]
    meta[g + 8 : g + 12] = struct.pack("<I", old + len(new_uid) - len(uid))
    return bytes(meta) + zipped


def mutation_classes() -> dict[str, Callable[[int, np.random.Generator], bytes]]:
    """name -> make(seed, rng) -> file bytes. Every class is exercised by the tests."""

    def trunc(frac: float, make: Callable[[int], Dataset], to_raw: Callable[[Dataset], bytes] = _raw):
        return lambda s, r: (lambda d: d[: int(len(d) * frac)])(to_raw(make(s)))

    return {
        "valid": lambda s, r: to_bytes(_base(s)),
        "flip_header": lambda s, r: (lambda d: _flip(d, r, 132, _pixel_offset(d)))(to_bytes(_base(s))),
        "flip_pixels": lambda s, r: (lambda d: _flip(d, r, _pixel_offset(d) + 12, len(d)))(to_bytes(_base(s))),
        "flip_jpeg": lambda s, r: (lambda d: _flip(d, r, _pixel_offset(d) + 40, len(d), n=32))(_raw(_jpeg(s))),
        "flip_j2k": lambda s, r: (lambda d: _flip(d, r, _pixel_offset(d) + 40, len(d), n=16))(
            _raw(_compressed(s, JPEG2000Lossless))
        ),
        "flip_rle": lambda s, r: (lambda d: _flip(d, r, _pixel_offset(d) + 40, len(d), n=16))(
            _raw(_compressed(s, RLELossless))
        ),
        "truncate_header": lambda s, r: (lambda d: d[: int(r.integers(140, _pixel_offset(d)))])(to_bytes(_base(s))),
        "truncate_pixels": trunc(0.8, _base, to_bytes),
        "truncate_jpeg": trunc(0.5, _jpeg),
        "truncate_j2k": trunc(0.7, lambda s: _compressed(s, JPEG2000Lossless)),
        "truncate_rle": trunc(0.7, lambda s: _compressed(s, RLELossless)),
        "huge_rows_rle": lambda s, r: _set(_compressed(s, RLELossless), Rows=65535, Columns=65535),
        "huge_rows": lambda s, r: _set(_base(s), Rows=65535, Columns=65535),
        "zero_rows": lambda s, r: _set(_base(s), Rows=0),
        "negative_bits": lambda s, r: _with_element(
            to_bytes(_base(s)), b"\x28\x00\x01\x01", b"SS", struct.pack("<h", -12)
        ),
        "huge_bits": lambda s, r: _set(_base(s), BitsAllocated=64, BitsStored=64, HighBit=63),
        "zero_bits": lambda s, r: _set(_base(s), BitsStored=0),
        "samples_per_pixel": lambda s, r: _set(_base(s), SamplesPerPixel=int(r.choice([0, 3, 255]))),
        "wrong_vr_bits": lambda s, r: (
            lambda d: d.replace(b"\x28\x00\x00\x01US\x02\x00\x10\x00", b"\x28\x00\x00\x01US\x03\x00\x10\x00\x00", 1)
        )(to_bytes(_base(s))),
        "wrong_vr_rescale": lambda s, r: (lambda d: d.replace(b"\x28\x00\x53\x10DS", b"\x28\x00\x53\x10ZZ", 1))(
            to_bytes(_set_bytes(_base(s), RescaleSlope=1.0, RescaleIntercept=0.0))
        ),
        "wrong_vr_window": lambda s, r: (lambda d: d.replace(b"\x28\x00\x50\x10DS", b"\x28\x00\x50\x10QQ", 1))(
            to_bytes(_base(s))
        ),
        "modality_swallows": lambda s, r: _swallowing_modality(s),
        "photometric_swallows": lambda s, r: _swallowing_photometric(s),
        "rescale_overflow": lambda s, r: _set(_base(s), RescaleSlope=1e300),
        "rescale_zero": lambda s, r: _set(_base(s), RescaleSlope=0),
        "window_huge": lambda s, r: _set(_base(s), WindowWidth=1e39),
        "window_nan": lambda s, r: _set(_base(s), WindowWidth="NaN"),
        "voi_lut_bits": lambda s, r: _voi_lut(s, bits=int(r.choice([0, 9, 17, 32]))),
        "voi_lut_short": lambda s, r: _voi_lut(s, bits=16, n_data=10),
        "voi_lut_range": lambda s, r: _voi_lut(s, bits=8, value=300),
        "modality_lut_bad": lambda s, r: _modality_lut(s),
        "photometric_garbage": lambda s, r: _set(_base(s), PhotometricInterpretation=PLANTED_ID[:16]),
        "transfer_syntax_garbage": lambda s, r: (
            lambda d: d.replace(b"1.2.840.10008.1.2.1\x00", b"9.9.9.9.9.9.9.9.9.9", 1)
        )(to_bytes(_base(s))),
        "file_meta_garbage": lambda s, r: (lambda d: d[:132] + _flip(d[132:400], r, 0, 268, n=20) + d[400:])(
            to_bytes(_base(s))
        ),
        "preamble_garbage": lambda s, r: (lambda d: bytes(r.integers(0, 256, 128, dtype=np.uint8)) + d[128:])(
            to_bytes(_base(s))
        ),
        "no_magic": lambda s, r: (lambda d: d[:128] + b"DICX" + d[132:])(to_bytes(_base(s))),
        "empty": lambda s, r: b"",
        "deep_sequence": lambda s, r: _deep_sequence(s),
        "deflate_bomb": lambda s, r: _deflate_bomb(s),
        "long_patient_fields": lambda s, r: to_bytes(_long_fields(s)),
        "view_control_chars": lambda s, r: _set(_base(s), ViewPosition='PA\r\n,"x'),
        "constant_image": lambda s, r: to_bytes(
            make_dataset(
                np.full((64, 64), 1234, np.uint16), bits_stored=12, PatientName=PLANTED_NAME, PatientID=PLANTED_ID
            )
        ),
    }


def _set_bytes(ds: Dataset, **attrs: object) -> Dataset:
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def _long_fields(seed: int) -> Dataset:
    ds = _base(seed)
    ds.PatientName = PLANTED_NAME + "^Ünïcödé" * 8
    ds.PatientID = PLANTED_ID + "-" + "9" * 60
    ds.InstitutionName = "Hôpital " + "x" * 2000
    ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def _voi_lut(seed: int, bits: int, n_data: int = 4096, value: int = 100) -> bytes:
    ds = _base(seed)
    del ds.WindowCenter, ds.WindowWidth
    item = Dataset()
    item.LUTDescriptor = [4096, 0, bits]
    item.LUTData = struct.pack(f"<{n_data}H", *([value] * n_data))
    ds.VOILUTSequence = Sequence([item])
    return to_bytes(ds)


def _modality_lut(seed: int) -> bytes:
    ds = _base(seed)
    item = Dataset()
    item.LUTDescriptor = [16, 0, 16]
    item.ModalityLUTType = "US"
    item.LUTData = struct.pack("<4H", 1, 2, 3, 4)  # shorter than its descriptor
    ds.ModalityLUTSequence = Sequence([item])
    return to_bytes(ds)


def make_corpus(out: Path, n: int, seed: int = 0) -> dict[str, str]:
    """``n`` files cycling through every class (deterministic), with labels.csv; returns
    file -> class."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    classes = mutation_classes()
    names = list(classes)
    rng = np.random.default_rng(seed)
    made: dict[str, str] = {}
    cache: dict[str, bytes] = {}
    for i in range(n):
        name = names[i % len(names)]
        # Expensive bases (deflate bombs) are made once and reused.
        if name == "deflate_bomb":
            data = cache.setdefault(name, classes[name](0, rng))
        else:
            data = classes[name](seed * 100003 + i, rng)
        rel = f"{name}/{i:05d}.dcm"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
        made[rel] = name
    labels = ["file,label"] + [f"{rel},{'abnormal' if i % 2 else 'normal'}" for i, rel in enumerate(made)]
    (out / "labels.csv").write_text("\n".join(labels) + "\n")
    return made


if __name__ == "__main__":
    made = make_corpus(Path(sys.argv[1]), int(sys.argv[2]))
    print(f"{len(made)} files in {sys.argv[1]}")
