"""One DICOM file -> a normalised float32 image in [0, 1] (bone bright) + header facts, or a
:class:`Rejection` with a stable reason.

Decoding follows the DICOM display pipeline in order:

1. stored values (``BitsStored`` honoured: unused high bits are masked and signed values
   sign-extended, 8 to 16 bits stored, signed or unsigned),
2. the Modality LUT (``RescaleSlope``/``RescaleIntercept`` or a Modality LUT Sequence;
   ``pydicom.pixels.apply_modality_lut``),
3. the VOI LUT or window when the file has one and ``apply_voi_lut`` is on
   (``pydicom.pixels.apply_voi_lut``; its output range, i.e. the window bounds or the LUT's
   entries, is mapped to [0, 1]); otherwise a min-max of the modality values over the image's
   actual pixel range,
4. MONOCHROME1 inverted, so bone is bright in every stored image.

Pixel data is decoded by pydicom 3 and its plugins (pylibjpeg-libjpeg, -openjpeg, -rle, pyjpegls):
implicit/explicit VR little endian, deflated, JPEG baseline/extended/lossless, JPEG-LS,
JPEG 2000, RLE. MONAI's ``PydicomReader`` is deliberately not used: it transposes the image and
ignores MONOCHROME1 and the VOI LUT.

Speed: the common case (native little-endian pixels, linear rescale, no VOI or a LINEAR
window) is computed in closed form on a zero-copy view of the file bytes (the formulas are those
of pydicom's ``apply_modality_lut``/``apply_windowing``; tests check equality against pydicom),
because the generic path (float64 copies and masks in pydicom) costs several times the decode
itself on a 2048 x 2048 radiograph. Everything else (Modality/VOI LUT sequences, SIGMOID
windows, big endian, compressed syntaxes, unexpected high bits) goes through pydicom's own
functions, applied once per distinct stored value as a lookup table.

Patient identifiers: :class:`HeaderFacts` carries the raw ``PatientID`` only so that ingest can
hash it in memory; it is excluded from ``repr`` and must never be written anywhere.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

# Stable rejection reasons (reports/ingest.json counts them; a detail may follow after ": ").
NOT_DICOM = "not_dicom"
UNREADABLE_FILE = "unreadable_file"
CORRUPT_HEADER = "corrupt_header"
NO_PIXEL_DATA = "no_pixel_data"
MODALITY_NOT_RADIOGRAPH = "modality_not_radiograph"
PHOTOMETRIC_NOT_GREY = "photometric_not_grey"
MULTI_FRAME = "multi_frame"
TOO_SMALL = "too_small"
UNSUPPORTED_BIT_DEPTH = "unsupported_bit_depth"
UNSUPPORTED_TRANSFER_SYNTAX = "unsupported_transfer_syntax"
CORRUPT_PIXEL_DATA = "corrupt_pixel_data"
INVALID_VOI_LUT = "invalid_voi_lut"
BLANK_IMAGE = "blank_image"
TOO_LARGE = "too_large"
TRUNCATED_PIXEL_DATA = "truncated_pixel_data"
INVALID_RESCALE = "invalid_rescale"
INVALID_WINDOW = "invalid_window"
NON_FINITE_IMAGE = "non_finite_image"

#: Every reason this module can return, with what it means (the README/tests use this table).
DECODE_REASONS: dict[str, str] = {
    NOT_DICOM: "no DICOM Part 10 preamble ('DICM' at byte 128): not a DICOM file",
    UNREADABLE_FILE: "the file could not be read (I/O error, broken link)",
    CORRUPT_HEADER: "DICOM preamble present but the header cannot be parsed",
    NO_PIXEL_DATA: "no (7FE0,0010) Pixel Data (a report, structured report, ...)",
    MODALITY_NOT_RADIOGRAPH: "Modality not in ingest.modalities",
    PHOTOMETRIC_NOT_GREY: "PALETTE COLOR or another colour image (RGB/YBR only if all channels are equal)",
    MULTI_FRAME: "more than one frame",
    TOO_SMALL: "shorter side below ingest.min_size",
    UNSUPPORTED_BIT_DEPTH: "BitsAllocated not 8/16, BitsStored not 8..16, or float pixel data",
    UNSUPPORTED_TRANSFER_SYNTAX: "no installed decoder handles the transfer syntax",
    CORRUPT_PIXEL_DATA: "the pixel data cannot be decoded (truncated, bad codestream, wrong shape)",
    INVALID_VOI_LUT: "the VOI LUT is invalid (bad descriptor or data); set ingest.apply_voi_lut: false to ignore it",
    BLANK_IMAGE: "every pixel has the same value after the VOI/normalisation",
    TOO_LARGE: "Rows x Columns x SamplesPerPixel x frames above ingest.max_pixels, or a deflated "
    "data set that inflates past the limit (decided before decoding)",
    TRUNCATED_PIXEL_DATA: "fewer pixel bytes than declared, or a JPEG / JPEG 2000 codestream without its "
    "end marker, or a decoder warning about missing data",
    INVALID_RESCALE: "RescaleSlope/RescaleIntercept zero, non-finite, or overflowing float32 over the pixel range",
    INVALID_WINDOW: "WindowCenter/WindowWidth invalid (width < 1, non-finite, overflowing float32)",
    NON_FINITE_IMAGE: "the decoded image holds NaN or infinity (a guard: earlier rules should catch it)",
}

#: DICOM defined terms (PS3.3 C.7.3.1.1.1, C.7.6.3.1.2): only these are ever quoted in a reason;
#: any other value shows as <invalid> (a malformed element can swallow names and IDs).
MODALITY_TERMS = frozenset(
    [
        "AR",
        "ASMT",
        "AU",
        "BDUS",
        "BI",
        "BMD",
        "CR",
        "CT",
        "CTPROTOCOL",
        "DG",
        "DOC",
        "DX",
        "ECG",
        "EPS",
        "ES",
        "FID",
        "GM",
        "HC",
        "HD",
        "IO",
        "IOL",
        "IVOCT",
        "IVUS",
        "KER",
        "KO",
        "LEN",
        "LS",
        "MG",
        "MR",
        "M3D",
        "NM",
        "OAM",
        "OCT",
        "OP",
        "OPM",
        "OPT",
        "OPTBSV",
        "OPTENF",
        "OPV",
        "OSS",
        "OT",
        "PLAN",
        "POS",
        "PR",
        "PT",
        "PX",
        "REG",
        "RESP",
        "RF",
        "RG",
        "RTDOSE",
        "RTIMAGE",
        "RTINTENT",
        "RTPLAN",
        "RTRAD",
        "RTRECORD",
        "RTSEGANN",
        "RTSTRUCT",
        "RWV",
        "SEG",
        "SM",
        "SMR",
        "SR",
        "SRF",
        "STAIN",
        "TEXTUREMAP",
        "TG",
        "US",
        "VA",
        "XA",
        "XAPROTOCOL",
        "XC",
        "DR",
    ]
)
PHOTOMETRIC_TERMS = frozenset(
    (
        "MONOCHROME1",
        "MONOCHROME2",
        "PALETTE COLOR",
        "RGB",
        "HSV",
        "ARGB",
        "CMYK",
        "YBR_FULL",
        "YBR_FULL_422",
        "YBR_PARTIAL_422",
        "YBR_PARTIAL_420",
        "YBR_ICT",
        "YBR_RCT",
        "XYB",
    )
)
VIEW_TERMS = frozenset(["AP", "PA", "LL", "RL", "RLD", "LLD", "RLO", "LLO", "LAT", "LATERAL", "AP_LLD", "PA_LLD"])
#: float32 range: modality or window values beyond it overflow the float32 image.
_F32_MAX = float(np.finfo(np.float32).max) / 16


def coded(value: str, terms: frozenset[str]) -> str:
    """A coded header value as it may appear in an output: itself when a defined term, else
    ``<invalid>`` (never raw header bytes); empty stays ``missing``."""
    if not value:
        return "missing"
    return value if value in terms else "<invalid>"


# pydicom's warnings about non-conformant values quote the values, which can be names or IDs:
# keep them out of logs (privacy); the outcome of each file is recorded by ingest instead.
# Its decoder errors are logged with tracebacks at ERROR level: ingest summarises them instead.
logging.getLogger("pydicom").setLevel(logging.CRITICAL)

DEFAULT_MODALITIES: tuple[str, ...] = ("CR", "DX", "RG", "DR")
_GREY = ("MONOCHROME1", "MONOCHROME2")
# Colour encodings accepted only when every channel carries the same grey image.
_MAYBE_GREY = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "YBR_PARTIAL_420")
# DICOM AS is nnnD/W/M/Y; a bare number (seen in real files, e.g. the SIIM sample's "62") is
# read as years.
_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY]?)\s*$", re.IGNORECASE)
_AGE_UNIT_YEARS = {"Y": 1.0, "M": 1.0 / 12.0, "W": 7.0 / 365.25, "D": 1.0 / 365.25}


@dataclass(frozen=True)
class Rejection:
    """Why a file was not accepted: a stable ``reason`` and an optional free-text ``detail``."""

    reason: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


@dataclass(frozen=True)
class HeaderFacts:
    """What ingest needs from the header. ``patient_id`` is raw: hash it, never write it."""

    patient_id: str | None = field(repr=False)
    sex: str  # M / F / O / U (unknown)
    age: float | None  # years
    view: str  # ViewPosition (PA, AP, LL, ...) or ""
    modality: str
    rows: int
    columns: int
    bits_stored: int
    photometric: str
    transfer_syntax: str
    sop_instance_uid: str | None


@dataclass(frozen=True)
class DecodedImage:
    """A decoded radiograph: ``image`` float32 in [0, 1], bone bright, and its header facts.

    ``intensity`` says how values were mapped to [0, 1]: ``window`` or ``voi_lut`` (the file's
    VOI), or ``minmax`` (no VOI, or ``apply_voi_lut`` off).
    """

    image: np.ndarray
    header: HeaderFacts
    intensity: str


@dataclass(frozen=True)
class DecodeOptions:
    """Acceptance rules and the VOI switch (ingest builds this from ``params.ingest``)."""

    apply_voi_lut: bool = True
    modalities: tuple[str, ...] | None = DEFAULT_MODALITIES  # None: any modality
    min_size: int = 1
    max_pixels: int = 6000 * 6000  # samples: Rows x Columns x SamplesPerPixel x frames


# A linear operator on 2-D float32 images (e.g. an area resize), applied before the final
# affine normalisation; see :func:`read_dicom`.
LinearOp = Callable[[np.ndarray], np.ndarray]


def parse_age(value: object) -> float | None:
    """DICOM Age String (``062Y``, ``006M``, ``010W``, ``003D``; a bare ``62`` = years) -> years;
    None if absent or invalid."""
    if value is None:
        return None
    m = _AGE.match(str(value))
    if not m:
        return None
    return int(m.group(1)) * _AGE_UNIT_YEARS[m.group(2).upper() or "Y"]


def normalise_sex(value: object) -> str:
    """PatientSex -> M / F / O, anything else (absent, empty, invalid) -> U."""
    s = str(value or "").strip().upper()
    return s if s in ("M", "F", "O") else "U"


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0] if len(value) else ""
    return str(value).strip()


def header_facts(ds: Dataset) -> HeaderFacts:
    """Read the header facts (raises on a malformed header; the caller maps that to a reason)."""
    tsyntax = ds.file_meta.get("TransferSyntaxUID", "") if hasattr(ds, "file_meta") else ""
    patient = _text(ds, "PatientID")
    view = _text(ds, "ViewPosition").upper()
    return HeaderFacts(
        patient_id=patient or None,
        sex=normalise_sex(ds.get("PatientSex")),
        age=parse_age(ds.get("PatientAge")),
        view=view if view in VIEW_TERMS else "",  # anything else: unknown (never raw text)
        modality=_text(ds, "Modality").upper(),
        rows=int(ds.get("Rows") or 0),
        columns=int(ds.get("Columns") or 0),
        bits_stored=int(ds.get("BitsStored") or 0),
        photometric=_text(ds, "PhotometricInterpretation").upper(),
        transfer_syntax=str(tsyntax),
        sop_instance_uid=_text(ds, "SOPInstanceUID") or None,
    )


def _check_header(ds: Dataset, h: HeaderFacts, opts: DecodeOptions) -> Rejection | None:
    """Cheap header-only rules, in a fixed order (the first failing rule is the reason)."""
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            return Rejection(UNSUPPORTED_BIT_DEPTH, "float pixel data")
        if "Rows" in ds and "Columns" in ds and "BitsAllocated" in ds:
            # An image header whose pixel data is gone: a file cut short, not a non-image object.
            return Rejection(TRUNCATED_PIXEL_DATA, "image header without its pixel data")
        return Rejection(NO_PIXEL_DATA)
    if opts.modalities is not None and h.modality not in {m.upper() for m in opts.modalities}:
        return Rejection(MODALITY_NOT_RADIOGRAPH, coded(h.modality, MODALITY_TERMS))
    frames = ds.get("NumberOfFrames")
    n_frames = 1 if frames in (None, "") else int(frames)
    if h.photometric not in _GREY + _MAYBE_GREY:
        return Rejection(PHOTOMETRIC_NOT_GREY, coded(h.photometric, PHOTOMETRIC_TERMS))
    if h.rows < 1 or h.columns < 1:
        return Rejection(CORRUPT_HEADER, f"Rows/Columns {h.rows}x{h.columns}")
    samples = int(ds.get("SamplesPerPixel") or 1)
    declared = h.rows * h.columns * max(samples, 1) * max(n_frames, 1)
    if declared > opts.max_pixels:  # before any pixel is decoded or allocated
        return Rejection(TOO_LARGE, f"{h.rows}x{h.columns}x{samples}x{n_frames} > {opts.max_pixels} samples")
    if n_frames > 1:
        return Rejection(MULTI_FRAME, f"{n_frames} frames")
    if min(h.rows, h.columns) < opts.min_size:
        return Rejection(TOO_SMALL, f"{h.rows}x{h.columns} < {opts.min_size}")
    allocated = int(ds.get("BitsAllocated") or 0)
    if allocated not in (8, 16) or not 8 <= h.bits_stored <= allocated:
        return Rejection(UNSUPPORTED_BIT_DEPTH, f"BitsAllocated {allocated}, BitsStored {h.bits_stored}")
    return None


def _native_pixels(ds: Dataset, data: bytes | None) -> np.ndarray | None:
    """Zero-copy view of native little-endian grey pixels, or None to let pydicom decode.

    Used only when the stored values are already valid for ``BitsStored`` (no stray high bits,
    signed values sign-extended): then the view equals pydicom's ``pixel_array``.
    """
    tsyntax = ds.file_meta.get("TransferSyntaxUID")
    if (
        tsyntax is None
        or tsyntax.is_encapsulated
        or not tsyntax.is_little_endian
        or int(ds.get("SamplesPerPixel", 1)) != 1
    ):
        return None
    allocated = int(ds.BitsAllocated)
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    dtype = np.dtype(("<i" if signed else "<u") + str(allocated // 8))
    rows, cols = int(ds.Rows), int(ds.Columns)
    count = rows * cols
    raw = ds.get_item("PixelData", keep_deferred=True)
    if raw is not None and getattr(raw, "value", None) is None and data is not None and not tsyntax.is_deflated:
        # Deferred element (a RawDataElement): the value sits in the file bytes at value_tell.
        length, tell = int(getattr(raw, "length")), int(getattr(raw, "value_tell"))  # noqa: B009
        if length < count * dtype.itemsize or tell + count * dtype.itemsize > len(data):
            raise _Truncated(f"{min(length, len(data) - tell)} of {count * dtype.itemsize} bytes")
        arr = np.frombuffer(data, dtype=dtype, count=count, offset=tell)
    else:
        buf = ds.PixelData
        if len(buf) < count * dtype.itemsize:
            raise _Truncated(f"{len(buf)} of {count * dtype.itemsize} bytes")
        arr = np.frombuffer(buf, dtype=dtype, count=count)
    arr = arr.reshape(rows, cols)
    bits = int(ds.BitsStored)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if arr.min() < lo or arr.max() > hi:
        return None  # stray high bits: pydicom masks / sign-extends them
    return arr


class _Truncated(ValueError):
    """Fewer pixel bytes than the header declares."""


# JPEG (baseline, extended, lossless, JPEG-LS) and JPEG 2000 codestreams end with FFD9 (EOI / EOC).
_JPEG_FAMILY = (
    "1.2.840.10008.1.2.4.5",
    "1.2.840.10008.1.2.4.7",
    "1.2.840.10008.1.2.4.8",
    "1.2.840.10008.1.2.4.9",
    "1.2.840.10008.1.2.4.20",
)
_DECODER_TRUNCATION = re.compile(
    r"truncat|premature|not enough|insufficient|end of (the )?(file|data|stream)"
    r"|corrupt|missing .*marker",
    re.IGNORECASE,
)


def _check_codestream(ds: Dataset, h: HeaderFacts) -> Rejection | None:
    """A JPEG / JPEG 2000 frame must end with its end marker (FFD9), trailing padding aside."""
    if not str(h.transfer_syntax).startswith(_JPEG_FAMILY):
        return None
    from pydicom.encaps import generate_frames

    for frame in generate_frames(ds.PixelData, number_of_frames=1):
        if bytes(frame).rstrip(b"\x00")[-2:] != b"\xff\xd9":
            return Rejection(TRUNCATED_PIXEL_DATA, "codestream without its end marker")
    return None


def _decode_pixels(ds: Dataset, data: bytes | None, h: HeaderFacts) -> np.ndarray | Rejection:
    """The stored values as a 2-D integer array (one grey channel). Exception messages are never
    quoted (they can carry header values): the reason names the exception type."""
    try:
        tsyntax = ds.file_meta.get("TransferSyntaxUID")
        if tsyntax is not None and tsyntax.is_encapsulated:
            bad = _check_codestream(ds, h)
            if bad is not None:
                return bad
        arr = _native_pixels(ds, data)
        if arr is None:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                arr = ds.pixel_array
            if any(_DECODER_TRUNCATION.search(str(w.message)) for w in caught):
                return Rejection(TRUNCATED_PIXEL_DATA, "decoder warning")
    except _Truncated as err:
        return Rejection(TRUNCATED_PIXEL_DATA, str(err))
    except NotImplementedError as err:
        return Rejection(UNSUPPORTED_TRANSFER_SYNTAX, _short(err, _uid(h.transfer_syntax), message=False))
    except Exception as err:  # noqa: BLE001 - any decoder failure is a corrupt file, recorded
        missing = "missing" in str(err) and "plugin" in str(err)
        reason = UNSUPPORTED_TRANSFER_SYNTAX if missing else CORRUPT_PIXEL_DATA
        return Rejection(reason, _short(err, message=False))
    if h.photometric in _MAYBE_GREY:
        # pydicom returns RGB (YBR converted); accept only a grey image stored in colour.
        if arr.ndim != 3 or arr.shape[-1] != 3:
            return Rejection(CORRUPT_PIXEL_DATA, f"{h.photometric} pixel array of shape {arr.shape}")
        ch = arr.astype(np.int32)
        # YBR -> RGB conversion of a grey JPEG rounds chroma to +-1; plain RGB must be exact.
        tol = 0 if h.photometric == "RGB" else 1
        if np.abs(ch[..., 1] - ch[..., 0]).max() > tol or np.abs(ch[..., 2] - ch[..., 0]).max() > tol:
            return Rejection(PHOTOMETRIC_NOT_GREY, f"{h.photometric} with colour")
        arr = np.ascontiguousarray(arr[..., 0])
    if arr.shape != (h.rows, h.columns):
        return Rejection(CORRUPT_PIXEL_DATA, f"pixel array shape {arr.shape}, header {h.rows}x{h.columns}")
    return arr


_TAG = re.compile(r"\([0-9A-Fa-f]{4},\s*[0-9A-Fa-f]{4}\)")


def _uid(value: str) -> str:
    """A UID as it may appear in an output: digits and dots only, else <invalid>."""
    return value if re.fullmatch(r"[0-9.]{1,64}", value or "") else "<invalid>"


def _short(err: BaseException, prefix: str = "", message: bool = True) -> str:
    """A one-line reason detail. ``message=False`` (header errors) keeps only the exception type
    and the tag it names: a header parser's message can quote the value (a name, an ID)."""
    if message:
        msg = " ".join(str(err).split())[:160]
    else:
        tag = _TAG.search(str(err))
        msg = f"at tag {tag.group(0)}" if tag else ""
    text = f"{type(err).__name__}: {msg}" if msg else type(err).__name__
    return f"{prefix} ({text})" if prefix else text


def _window(ds: Dataset) -> tuple[float, float, str]:
    """First (center, width, function) of the VOI window; raises ValueError when invalid."""

    def first(keyword: str) -> float:
        elem = ds[keyword]
        value = elem.value[0] if elem.VM > 1 else elem.value
        return float(value)

    center, width = first("WindowCenter"), first("WindowWidth")
    func = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    if func == "LINEAR" and width < 1:
        raise ValueError(f"WindowWidth {width:g} < 1 for a LINEAR window")
    if func in ("LINEAR_EXACT", "SIGMOID") and width <= 0:
        raise ValueError(f"WindowWidth {width:g} <= 0 for a {func} window")
    if func not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        raise ValueError(f"unsupported VOILUTFunction {func!r}")
    if not (np.isfinite(center) and np.isfinite(width)) or max(abs(center), abs(width)) > _F32_MAX:
        raise ValueError("non-finite window, or beyond float32")
    return center, width, func


def _window_output_range(ds: Dataset) -> tuple[float, float]:
    """(y_min, y_max) that ``pydicom.pixels.apply_windowing`` maps a window onto (same rules)."""
    if ds.get("ModalityLUTSequence"):
        y_min, y_max = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        y_min, y_max = 0.0, float(2 ** int(ds.BitsStored) - 1)
    else:
        y_min, y_max = float(-(2 ** (int(ds.BitsStored) - 1))), float(2 ** (int(ds.BitsStored) - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        y_min, y_max = y_min * float(slope) + float(intercept), y_max * float(slope) + float(intercept)
    return y_min, y_max


def _rescale(ds: Dataset) -> tuple[float, float]:
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    s = 1.0 if slope in (None, "") else float(slope)
    i = 0.0 if intercept in (None, "") else float(intercept)
    if not np.isfinite(s) or not np.isfinite(i) or s == 0 or max(abs(s) * 65536 + abs(i), abs(i)) > _F32_MAX:
        raise ValueError("rescale slope/intercept zero, non-finite or beyond float32")
    return s, i


def _voi_kind(ds: Dataset, h: HeaderFacts, opts: DecodeOptions) -> str:
    if not opts.apply_voi_lut or h.photometric not in _GREY:
        return "minmax"
    if ds.get("VOILUTSequence"):
        return "voi_lut"  # pydicom's apply_voi_lut prefers the LUT over a window
    if "WindowCenter" in ds and "WindowWidth" in ds:
        return "window"
    return "minmax"


def _apply_linear(
    arr: np.ndarray, amin: int, amax: int, lo: float, hi: float, invert: bool, op: LinearOp | None
) -> np.ndarray:
    """``(clip(arr, lo, hi) - lo) / (hi - lo)`` (or ``1 - that``) in float32, ``op`` applied
    to the clipped values before the affine part (they commute: ``op`` is linear and
    preserves constants, like an area resize).

    With integer bounds (the usual LINEAR window with an even width, or min-max) the clip is
    exact in the stored integer type, and ``op`` reduces the integers directly: no
    full-resolution float copy is made."""
    clip_lo, clip_hi = lo > amin, hi < amax  # a window narrower than the data
    if float(lo).is_integer() and float(hi).is_integer():
        x = arr
        if clip_lo or clip_hi:
            x = np.clip(arr, int(max(lo, amin)), int(min(hi, amax)))
    else:
        x = arr.astype(np.float32)
        if clip_lo or clip_hi:
            np.clip(x, np.float32(lo), np.float32(hi), out=x)
    f = op(x) if op is not None else x
    f = np.array(f, dtype=np.float32, copy=f.dtype != np.float32 or not f.flags.writeable)
    lo32, span = np.float32(lo), np.float32(np.float32(hi) - np.float32(lo))
    if invert:
        f = np.subtract(np.float32(hi), f, out=f)
    else:
        f -= lo32
    f /= span
    # Guards float rounding only; values are in [0, 1] by construction.
    return np.clip(f, 0.0, 1.0, out=f)


def _normalise(
    ds: Dataset, arr: np.ndarray, h: HeaderFacts, opts: DecodeOptions, op: LinearOp | None
) -> tuple[np.ndarray, str] | Rejection:
    kind = _voi_kind(ds, h, opts)
    amin, amax = int(arr.min()), int(arr.max())
    mono1 = h.photometric == "MONOCHROME1"
    try:
        linear_modality = not ds.get("ModalityLUTSequence")
        slope, intercept = _rescale(ds) if linear_modality else (1.0, 0.0)
    except Exception as err:  # noqa: BLE001 - a wrong VR or value: recorded, never raised
        return Rejection(INVALID_RESCALE, _short(err, message=False))
    try:
        window = _window(ds) if kind == "window" else None
    except Exception as err:  # noqa: BLE001
        return Rejection(INVALID_WINDOW, _short(err, message=False))

    if linear_modality and (kind == "minmax" or (window is not None and window[2] != "SIGMOID")):
        # Closed form: modality m = slope * x + intercept is linear, so the min-max or LINEAR window
        # becomes a clip of the stored values x followed by an affine map.
        if kind == "minmax":
            lo, hi = float(amin), float(amax)
        else:
            c, w, func = window  # type: ignore[misc]
            if func == "LINEAR":  # PS3.3 C.11.2.1.2.1, as pydicom.apply_windowing
                m_lo, m_hi = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
            else:  # LINEAR_EXACT, C.11.2.1.3.2
                m_lo, m_hi = c - w / 2, c + w / 2
            x_a, x_b = (m_lo - intercept) / slope, (m_hi - intercept) / slope
            lo, hi = min(x_a, x_b), max(x_a, x_b)
            # Entirely outside the window: one constant value.
            if amax <= lo or amin >= hi:
                return Rejection(BLANK_IMAGE, f"window {c:g}/{w:g} outside the pixel range")
        if hi <= lo:
            return Rejection(BLANK_IMAGE, f"all pixels = {amin}")
        # A negative slope reverses the modality scale; MONOCHROME1 reverses the display.
        invert = (slope < 0) != mono1
        return _apply_linear(arr, amin, amax, lo, hi, invert, op), kind

    # Generic path: pydicom's own LUT functions, evaluated once per stored value in range.
    from pydicom.pixels import apply_modality_lut, apply_voi, apply_voi_lut

    values = np.arange(amin, amax + 1, dtype=np.int64)
    try:
        with np.errstate(over="ignore"):
            m = np.asarray(apply_modality_lut(values, ds))
            if m.dtype.kind == "f" and np.array_equal(m, np.round(m)):
                m = m.astype(np.int64)  # a VOI LUT indexes by integer input values
            if kind == "minmax":
                present = m if linear_modality else m[np.bincount(np.subtract(arr, amin, dtype=np.int64).ravel()) > 0]
                y_lo, y_hi = float(present.min()), float(present.max())
                table = m
            elif kind == "window":
                table = np.asarray(apply_voi_lut(m, ds, index=0, prefer_lut=True), dtype=np.float64)
                y_lo, y_hi = _window_output_range(ds)
            else:  # VOI LUT: its output range is the range of its entries
                item = ds.VOILUTSequence[0]
                n_entries, first = int(item.LUTDescriptor[0]) or 65536, int(item.LUTDescriptor[1])
                table = np.asarray(apply_voi_lut(m, ds, index=0, prefer_lut=True), dtype=np.float64)
                entries = np.asarray(
                    apply_voi(np.arange(first, first + n_entries, dtype=np.int64), ds, index=0),
                    dtype=np.float64,
                )
                y_lo, y_hi = float(entries.min()), float(entries.max())
    except Exception as err:  # noqa: BLE001 - bad LUT descriptors/data (struct, overflow, ...)
        return Rejection(INVALID_VOI_LUT, _short(err, message=False))
    if y_hi == y_lo:
        return Rejection(BLANK_IMAGE, f"{kind} output range is a single value")
    table = (table - y_lo) / (y_hi - y_lo)
    if mono1:
        table = 1.0 - table
    table = np.clip(table, 0.0, 1.0).astype(np.float32)
    if table.min() == table.max():
        return Rejection(BLANK_IMAGE, f"{kind} maps every pixel to {float(table[0]):g}")
    out = table[np.subtract(arr, amin, dtype=np.int64 if arr.dtype.itemsize > 2 else np.int32)]
    if op is not None:
        out = np.clip(np.asarray(op(out), dtype=np.float32), 0.0, 1.0)
    return out, kind


_DEFLATED = b"1.2.840.10008.1.2.1.99"


def _deflate_bomb(data: bytes, max_bytes: int) -> Rejection | None:
    """A deflated data set (PS3.5 A.5) is inflated by pydicom without a limit: inflate it here
    first, up to ``max_bytes``, and reject a larger one before pydicom tries."""
    import zlib

    if _DEFLATED not in data[132:2048]:
        return None
    from pydicom.filereader import _read_file_meta_info

    fp = io.BytesIO(data)
    fp.seek(132)
    try:
        meta = _read_file_meta_info(fp)
    except Exception as err:  # noqa: BLE001
        return Rejection(CORRUPT_HEADER, _short(err, message=False))
    if str(meta.get("TransferSyntaxUID", "")) != _DEFLATED.decode():
        return None
    # Inflate in 1 MiB steps, counting and discarding: memory stays flat whatever the ratio.
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending, total = memoryview(data)[fp.tell() :], 0
    try:
        while pending:
            total += len(inflater.decompress(pending, 1 << 20))
            if total > max_bytes:
                return Rejection(TOO_LARGE, f"deflated data set inflates past {max_bytes} bytes")
            pending = memoryview(inflater.unconsumed_tail) if inflater.unconsumed_tail else pending[len(pending) :]
            if inflater.eof:
                break
    except zlib.error as err:
        return Rejection(CORRUPT_HEADER, _short(err, message=False))
    return None


def _dataset(
    source: str | Path | bytes | Dataset, max_bytes: int = 2 * 6000 * 6000 + (64 << 20)
) -> tuple[Dataset, bytes | None] | Rejection:
    if isinstance(source, Dataset):
        return source, None
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as err:
            return Rejection(UNREADABLE_FILE, type(err).__name__)
    # DICOM Part 10: 128-byte preamble + b"DICM". Checked here (pydicom's own test with
    # force=False) so that any other file is rejected quickly and explicitly.
    if len(data) < 132 or data[128:132] != b"DICM":
        return Rejection(NOT_DICOM)
    bomb = _deflate_bomb(data, max_bytes)
    if bomb is not None:
        return bomb
    try:
        # defer_size: large values (the pixel data) are not copied; _native_pixels reads them
        # straight from `data`. Compressed/deflated/big-endian files are re-read in full.
        ds = pydicom.dcmread(io.BytesIO(data), defer_size=4096)
        tsyntax = ds.file_meta.get("TransferSyntaxUID")
        if tsyntax is None or tsyntax.is_encapsulated or tsyntax.is_deflated or not tsyntax.is_little_endian:
            ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as err:  # noqa: BLE001 - malformed header, recorded
        return Rejection(CORRUPT_HEADER, _short(err, message=False))
    return ds, data


def read_dicom(
    source: str | Path | bytes | Dataset,
    options: DecodeOptions = DecodeOptions(),
    *,
    linear_op: LinearOp | None = None,
) -> DecodedImage | Rejection:
    """Decode one DICOM file (path, its bytes, or a parsed dataset) or say why not.

    ``linear_op`` (optional) is a linear, constant-preserving image operator such as an area
    resize (:func:`pipeline.ingest.area_resize`). It is applied to the windowed stored values
    *before* the final affine map to [0, 1]; that equals applying it to the normalised image,
    but costs two full-resolution passes less. The returned image is then ``linear_op``'s output.
    """
    with warnings.catch_warnings():
        # pydicom warns about non-conformant values it can still read; the outcome (accepted or
        # a named rejection) is what ingest records.
        warnings.simplefilter("ignore")
        return _read(source, options, linear_op)


def _read(
    source: str | Path | bytes | Dataset, options: DecodeOptions, linear_op: LinearOp | None
) -> DecodedImage | Rejection:
    # A deflated data set may hold at most the largest allowed image (16-bit) plus 64 MiB of header.
    got = _dataset(source, max_bytes=2 * options.max_pixels + (64 << 20))
    if isinstance(got, Rejection):
        return got
    ds, data = got
    if "PixelData" not in ds and data is not None and b"\xe0\x7f\x10\x00" in data[132:]:
        # The Pixel Data tag is in the file but pydicom could not read its value: cut short.
        return Rejection(TRUNCATED_PIXEL_DATA, "pixel data element cut short")
    try:
        h = header_facts(ds)
    except Exception as err:  # noqa: BLE001 - malformed header values, recorded
        return Rejection(CORRUPT_HEADER, _short(err, message=False))
    try:
        rejected = _check_header(ds, h, options)
    except Exception as err:  # noqa: BLE001 - wrong VRs / lengths in the header, recorded
        return Rejection(CORRUPT_HEADER, _short(err, message=False))
    if rejected is not None:
        return rejected
    arr = _decode_pixels(ds, data, h)
    if isinstance(arr, Rejection):
        return arr
    result = _normalise(ds, arr, h, options, linear_op)
    if isinstance(result, Rejection):
        return result
    image, kind = result
    # Only sane images leave the decoder: finite, in [0, 1], with some contrast.
    if not np.isfinite(image).all():
        return Rejection(NON_FINITE_IMAGE)
    if image.size == 0 or float(image.max()) - float(image.min()) < 1e-6:
        return Rejection(BLANK_IMAGE, "no contrast after decoding")
    if float(image.min()) < 0.0 or float(image.max()) > 1.0:
        return Rejection(NON_FINITE_IMAGE, "values outside [0, 1]")
    return DecodedImage(image=image, header=h, intensity=kind)


__all__ = [
    "DECODE_REASONS",
    "DEFAULT_MODALITIES",
    "DecodeOptions",
    "DecodedImage",
    "HeaderFacts",
    "LinearOp",
    "Rejection",
    "header_facts",
    "normalise_sex",
    "parse_age",
    "read_dicom",
]
