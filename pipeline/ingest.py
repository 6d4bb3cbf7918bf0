"""Ingest: walk the DICOM folder(s), decode in parallel, account for every file, pseudonymise,
resize, and stream the accepted images into the sharded image store.

Accounting (``reports/ingest.json``): every file found under ``dicom_dir`` (recursively, any
extension or none, hidden files included) is *seen* and ends up either *accepted* or *rejected*
with a reason, so ``accepted + rejected == seen`` always. Only the labels CSV itself is left out
when it lives inside the folder, and the report says so under ``excluded``.

Rules, in the order they are checked (the first that fails is the file's reason):

1. the file can be read and is DICOM Part 10 (``unreadable_file``, ``not_dicom``);
2. it has exactly one usable label: ``not_in_labels``, ``ambiguous_label`` (two different labels
   for one file), ``label_not_in_classes``;
3. the decoder's rules (:mod:`pipeline.dicom`: modality, photometric, frames, size, bit depth,
   transfer syntax, pixel data, VOI);
4. ``duplicate_sop_instance_uid``: an image already accepted (in file order, internal set
   first) has the same SOPInstanceUID; the later file is rejected.

Patients are pseudonymised in the worker: ``patient = sha256(salt + PatientID)[:16]``; the raw
PatientID never leaves the worker process and is never written. Files without a PatientID get
the pseudonym of their path (each such image is its own "patient"; counted in the report).

Parallelism: a process pool (``ingest.workers``, 0 = one per core) maps over the files in order
(``imap``, chunked); each worker reads, hashes, decodes and resizes one file and returns only the
small ``(size, size)`` float16 image and a few facts, and the parent appends them to the store
(:class:`pipeline.store.StoreWriter`), so memory does not grow with the number of files.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import dicom
from pipeline.common import CsvStream, get_logger, progress
from pipeline.contracts import IngestReport, write_contract
from pipeline.errors import StageError
from pipeline.params import REPO_ROOT, Params
from pipeline.store import StoreWriter, open_store

log = get_logger("ingest")

# Ingest-level rejection reasons (the decoder's are in pipeline.dicom.DECODE_REASONS).
NOT_IN_LABELS = "not_in_labels"
AMBIGUOUS_LABEL = "ambiguous_label"
LABEL_NOT_IN_CLASSES = "label_not_in_classes"
DUPLICATE_SOP_INSTANCE_UID = "duplicate_sop_instance_uid"
DECODE_ERROR = "decode_error"
DECODER_CRASHED = "decoder_crashed"
DECODE_TIMEOUT = "decode_timeout"

INGEST_REASONS: dict[str, str] = {
    NOT_IN_LABELS: "the file has no row in the labels CSV",
    AMBIGUOUS_LABEL: "the labels CSV gives the file two different labels",
    LABEL_NOT_IN_CLASSES: "the file's label is not one of data.classes",
    DUPLICATE_SOP_INSTANCE_UID: "an earlier accepted file has the same SOPInstanceUID",
    DECODE_ERROR: "an unexpected exception while reading or decoding the file (its type follows)",
    DECODER_CRASHED: "the file killed its worker process twice (a decoder crash or an out-of-memory kill)",
    DECODE_TIMEOUT: "reading and decoding the file took longer than ingest.file_timeout_s",
}
#: Every reason a file can be rejected with.
REASONS: dict[str, str] = {**dicom.DECODE_REASONS, **INGEST_REASONS}

#: Manifest columns, in order (DESIGN.md "Manifest").
MANIFEST_COLUMNS: tuple[str, ...] = (
    "row",
    "file",
    "source",
    "patient",
    "label",
    "sex",
    "age",
    "view",
    "modality",
    "rows",
    "columns",
    "bits_stored",
    "photometric",
    "transfer_syntax",
    "sha256",
)
#: Fixed column types, so the manifest is streamed in chunks with the bytes of one DataFrame.
MANIFEST_DTYPES: dict[str, str] = {c: "object" for c in MANIFEST_COLUMNS} | {
    "row": "int64",
    "age": "float64",
    "rows": "int64",
    "columns": "int64",
    "bits_stored": "int64",
}


class IngestError(StageError, RuntimeError):
    """Unusable input (missing folder or CSV, missing CSV columns, nothing accepted)."""


# ----------------------------------------------------------------------------- resizing


def _block_mean(img: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Means of consecutive blocks of ``k`` rows (axis 0) or columns (axis 1); a last, partial
    block (fewer than ``k``) is averaged on its own."""
    n = img.shape[axis]
    full = n // k
    if axis == 0:
        # Whole contiguous rows summed (the fast direction for a C-ordered image), accumulated in
        # float32 straight from the stored integers: exact (< 2^24) and no float copy of the image.
        out = img[: full * k].reshape(full, k, img.shape[1]).sum(axis=1, dtype=np.float32)
        rest = img[full * k :].mean(axis=0, keepdims=True, dtype=np.float32) if n > full * k else None
    else:
        # k strided adds: much faster than a reduction over a short last axis.
        out = img[:, 0 : full * k : k].astype(np.float32)
        for j in range(1, k):
            out += img[:, j : full * k : k]
        rest = img[:, full * k :].mean(axis=1, keepdims=True, dtype=np.float32) if n > full * k else None
    out *= np.float32(1.0 / k)
    if rest is not None:
        out = np.concatenate([out, rest], axis=axis)
    return out


def _area_weights(n_src: int, k: int, n_out: int) -> np.ndarray:
    """(n_out, ceil(n_src / k)) weights: output pixel o averages the source interval
    [o * n_src / n_out, (o + 1) * n_src / n_out) from blocks of ``k`` source pixels (the last one
    possibly shorter), each weighted by its exact overlap. Rows sum to 1."""
    edges = np.minimum(np.arange(0, n_src + k, k, dtype=np.float64), n_src)
    edges = edges[: int(np.searchsorted(edges, n_src)) + 1]
    lo_b, hi_b = edges[:-1][None, :], edges[1:][None, :]
    step = n_src / n_out
    lo_o = (np.arange(n_out, dtype=np.float64) * step)[:, None]
    overlap = np.clip(np.minimum(lo_o + step, hi_b) - np.maximum(lo_o, lo_b), 0.0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def area_resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D image (any real dtype) to ``shape`` by area averaging (anti-aliased);
    returns float32.

    Down-sampling: an integer-factor block mean (exact area averaging, a few ms on 2048 px),
    then exact fractional-overlap weights (two small matrix products) for the remaining factor
    < 2. Up-sampling: Pillow's bilinear filter. Every step is linear and maps a constant image to
    the same constant, which :func:`pipeline.dicom.read_dicom` relies on (``linear_op``). Same
    result as MONAI ``Resize(mode="area")`` (torch adaptive average pooling) to within a small
    fraction of a grey level (checked in the tests), without importing torch into the workers.
    """
    h, w = int(shape[0]), int(shape[1])
    if h < 1 or w < 1:
        raise ValueError(f"target shape must be positive, got {shape}")
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {img.shape}")
    H, W = img.shape
    if (h, w) == (H, W):
        return img.astype(np.float32)
    if H // h < 2 and W // w < 2:  # no block step: work in float32 from here
        img = img.astype(np.float32)
    if h > H or w > W:
        from PIL import Image

        pil = Image.fromarray(np.ascontiguousarray(img))  # float32 -> mode "F"
        return np.array(pil.resize((w, h), resample=Image.Resampling.BILINEAR), dtype=np.float32)
    kh, kw = H // h, W // w
    if kh > 1:
        img = _block_mean(img, kh, axis=0)
    if kw > 1:
        img = _block_mean(img, kw, axis=1)
    if img.shape != (h, w):
        img = _area_weights(H, kh, h) @ img @ _area_weights(W, kw, w).T
    return img


def fit_shape(rows: int, columns: int, size: int, fit: str) -> tuple[int, int]:
    """The (h, w) an image is resized to before padding (``pad``) or after cropping (``crop``)."""
    if fit == "crop":
        return size, size
    longest = max(rows, columns)
    return max(1, round(rows * size / longest)), max(1, round(columns * size / longest))


class SquareFit:
    """The linear part of fitting an image into ``size x size``: for ``crop``, cut the centred
    square; then area-resize (aspect ratio kept). Padding (black) comes after normalisation,
    see :func:`pad_square`. A class (not a closure) so that it pickles into worker processes."""

    def __init__(self, size: int, fit: str) -> None:
        if fit not in ("pad", "crop"):
            raise ValueError(f"fit must be 'pad' or 'crop', got {fit!r}")
        self.size, self.fit = int(size), fit

    def __call__(self, image: np.ndarray) -> np.ndarray:
        rows, cols = image.shape
        if self.fit == "crop":
            side = min(rows, cols)
            top, left = (rows - side) // 2, (cols - side) // 2
            image = image[top : top + side, left : left + side]
        return area_resize(image, fit_shape(rows, cols, self.size, self.fit))


def pad_square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre ``image`` (at most ``size`` on each side) on a black ``size x size`` canvas."""
    h, w = image.shape
    if h > size or w > size:
        raise ValueError(f"image {image.shape} larger than {size}")
    if (h, w) == (size, size):
        return image
    out = np.zeros((size, size), dtype=image.dtype)
    top, left = (size - h) // 2, (size - w) // 2
    out[top : top + h, left : left + w] = image
    return out


def fit_square(image: np.ndarray, size: int, fit: str = "pad") -> np.ndarray:
    """A normalised image -> ``size x size`` float32: keep the aspect ratio, then pad or crop."""
    return pad_square(SquareFit(size, fit)(np.asarray(image, dtype=np.float32)), size)


# ----------------------------------------------------------------------------- labels and files


def pseudonym(salt: str, patient_id: str) -> str:
    """First 16 hex digits of sha256(salt + PatientID): stable per patient, not reversible
    without the salt."""
    return hashlib.sha256((salt + patient_id).encode("utf-8")).hexdigest()[:16]


def _norm_rel(path: str) -> str:
    p = str(path).strip().replace("\\", "/")
    p = posixpath.normpath(p) if p else p
    return p[2:] if p.startswith("./") else p


@dataclass
class Labels:
    """The labels CSV as ingest uses it: file (relative, normalised) -> label."""

    labels: dict[str, str]
    ambiguous: dict[str, list[str]] = field(default_factory=dict)
    duplicate_rows: int = 0
    empty_file_rows: list[int] = field(default_factory=list)  # 1-based CSV line numbers


def read_labels(csv_path: str | Path) -> Labels:
    """Read a labels CSV with columns ``file`` and ``label`` (others are ignored).

    Raises :class:`IngestError` naming the CSV and the missing column(s). Identical repeated
    rows count once (``duplicate_rows``); a file with two different labels is ``ambiguous``.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise IngestError(f"labels CSV {csv_path} not found")
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise IngestError(f"labels CSV {csv_path} cannot be read: {err}") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in ("file", "label") if c not in df.columns]
    if missing:
        raise IngestError(
            f"labels CSV {csv_path} lacks the required column(s) {missing}; "
            f"it has {list(df.columns)} (needed: file = path relative to dicom_dir, label)"
        )
    labels: dict[str, str] = {}
    seen_pairs: set[tuple[str, str]] = set()
    ambiguous: dict[str, set[str]] = {}
    out = Labels(labels={})
    for i, (file, label) in enumerate(zip(df["file"], df["label"], strict=False), start=2):
        rel, lab = _norm_rel(file), str(label).strip()
        if not rel:
            out.empty_file_rows.append(i)
            continue
        if (rel, lab) in seen_pairs:
            out.duplicate_rows += 1
            continue
        seen_pairs.add((rel, lab))
        if rel in labels:
            ambiguous.setdefault(rel, {labels[rel]}).add(lab)
        else:
            labels[rel] = lab
    out.labels = labels
    out.ambiguous = {k: sorted(v) for k, v in ambiguous.items()}
    return out


def list_files(root: str | Path, exclude: Iterable[str | Path] = ()) -> tuple[list[str], list[str]]:
    """Every file under ``root`` (recursive, symlinked folders followed once, nothing skipped),
    as sorted relative POSIX paths; and the excluded ones (given as paths) that were found."""
    root = Path(root)
    excluded_real = {os.path.realpath(p) for p in exclude}
    files: list[str] = []
    excluded: list[str] = []
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:  # a symlink loop or a folder reached twice
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames.sort()
        for name in filenames:
            full = os.path.join(dirpath, name)
            rel = Path(os.path.relpath(full, root)).as_posix()
            if os.path.realpath(full) in excluded_real:
                excluded.append(rel)
            else:
                files.append(rel)
    return sorted(files), sorted(excluded)


# ----------------------------------------------------------------------------- the worker


@dataclass(frozen=True)
class WorkerConfig:
    size: int
    fit: str
    options: dicom.DecodeOptions
    salt: str
    timeout_s: float | None = None


@dataclass(frozen=True)
class Task:
    index: int
    source: str  # internal | the external set's name
    path: str  # absolute
    rel: str  # relative to its dicom_dir
    rejection: str | None  # a label rule already failed (checked after the DICOM preamble)


@dataclass(frozen=True)
class Outcome:
    """What a worker sends back: small, no raw identifiers."""

    index: int
    rejection: str | None
    image: np.ndarray | None = None  # (size, size) float16
    facts: dict[str, Any] | None = None
    detail: str = ""  # for the log file only: where an exception came from (no values)


_CONFIG: WorkerConfig | None = None


def _init_worker(config: WorkerConfig) -> None:
    global _CONFIG
    _CONFIG = config
    _one_thread()
    # C/Rust decoders write their own messages (panics, codestream warnings) straight to the
    # process's stderr: discard them in workers; each file's outcome is recorded by ingest.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def _one_thread() -> None:
    """One BLAS/OpenMP thread per worker: the parallelism is the process pool. (The small
    matrix products of area_resize otherwise spin up a thread team per image, which costs
    10-100x the product itself on a busy machine.)"""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _not_regular(path: str) -> str | None:
    if os.path.isfile(path):
        return None
    return "broken link" if os.path.islink(path) else "not a regular file"


def process_file(task: Task, config: WorkerConfig | None = None) -> Outcome:
    """Read, hash, decode, resize one file (runs in a worker process). Never raises: any
    exception becomes the rejection ``decode_error: <ExceptionType>`` (type only: an exception's
    message can quote header values), with the traceback's locations for the log file."""
    try:
        return _process_file(task, config)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:  # noqa: BLE001 - one file never stops the stage (Rust decoders'
        # panics derive from BaseException)
        return Outcome(task.index, f"{DECODE_ERROR}: {type(err).__name__}", detail=_where(err))


def _where(err: BaseException) -> str:
    """file:line:function of each traceback frame (no message, no local values)."""
    import traceback

    frames = traceback.extract_tb(err.__traceback__)
    return " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno}:{f.name}" for f in reversed(frames[-6:]))


def _process_file(task: Task, config: WorkerConfig | None = None) -> Outcome:
    cfg = config or _CONFIG
    assert cfg is not None, "worker not initialised"
    bad = _not_regular(task.path)
    if bad:
        return Outcome(task.index, f"{dicom.UNREADABLE_FILE}: {bad}")
    try:
        if task.rejection is not None:
            # Only the preamble is needed to tell "not DICOM" from a label problem.
            with open(task.path, "rb") as fh:
                head = fh.read(132)
            is_dicom = len(head) == 132 and head[128:132] == b"DICM"
            return Outcome(task.index, task.rejection if is_dicom else dicom.NOT_DICOM)
        with open(task.path, "rb") as fh:
            data = fh.read()
    except OSError as err:
        return Outcome(task.index, f"{dicom.UNREADABLE_FILE}: {type(err).__name__}")
    result = dicom.read_dicom(data, cfg.options, linear_op=SquareFit(cfg.size, cfg.fit))
    if isinstance(result, dicom.Rejection):
        return Outcome(task.index, str(result))
    h = result.header
    missing_id = h.patient_id is None
    patient = pseudonym(cfg.salt, h.patient_id if h.patient_id is not None else f"file:{task.source}/{task.rel}")
    image = pad_square(result.image, cfg.size).astype(np.float16)
    facts = {
        "patient": patient,
        "patient_missing": missing_id,
        "sex": h.sex,
        "age": None if h.age is None else round(h.age, 3),
        "view": h.view,
        "modality": h.modality,
        "rows": h.rows,
        "columns": h.columns,
        "bits_stored": h.bits_stored,
        "photometric": h.photometric,
        "transfer_syntax": dicom._uid(h.transfer_syntax),
        "sha256": hashlib.sha256(data).hexdigest(),
        "sop_instance_uid": h.sop_instance_uid,
        "intensity": result.intensity,
    }
    return Outcome(task.index, None, image, facts)


def _tasks(accounts: list[_Account], classes: set[str]) -> Iterator[tuple[Task, str | None]]:
    """Every file of every set, in order, as a worker task and its label (None if rejected)."""
    index = 0
    for acc in accounts:
        for rel in acc.files:
            rejection, label = _label_rejection(rel, acc.labels, classes)
            yield Task(index, acc.spec.name, str(acc.spec.dicom_dir / rel), rel, rejection), label
            index += 1


def _run_tasks(tasks: Iterable[Task], config: WorkerConfig, workers: int) -> Iterator[Outcome]:
    """Outcomes in task order, each file decoded in a worker process (pipeline.isolation): a file
    that crashes its worker twice is ``decoder_crashed``, one that runs past
    ``ingest.file_timeout_s`` is ``decode_timeout``; no other file's result is lost."""
    from pipeline.isolation import Crashed, TimedOut, run_isolated

    results = run_isolated(
        tasks, process_file, workers=workers, timeout_s=config.timeout_s, initializer=_init_worker, initargs=(config,)
    )
    for index, out in enumerate(results):  # in task order: task i is the i-th result
        if isinstance(out, Crashed):
            yield Outcome(index, DECODER_CRASHED, detail=f"exit code {out.exitcode}, {out.attempts} attempts")
        elif isinstance(out, TimedOut):
            yield Outcome(index, DECODE_TIMEOUT, detail=f"stopped after {out.seconds:g} s")
        else:
            yield out


# ----------------------------------------------------------------------------- accounting


@dataclass
class SourceSpec:
    name: str  # internal | the external set's name
    dicom_dir: Path
    labels_csv: Path
    shown_dir: str  # as written in params (the report shows this, not the absolute path)
    shown_csv: str


@dataclass
class _Account:
    spec: SourceSpec
    files: list[str]
    excluded: list[str]
    labels: Labels
    labels_without_file: list[str]
    rejected_files: list[dict[str, str]] = field(default_factory=list)
    accepted: int = 0
    per_class: Counter = field(default_factory=Counter)
    patients: set = field(default_factory=set)
    patients_missing_id: int = 0
    intensity: Counter = field(default_factory=Counter)
    transfer_syntax: Counter = field(default_factory=Counter)

    def reject(self, rel: str, reason: str) -> None:
        self.rejected_files.append({"file": rel, "reason": reason})

    def report(self) -> dict[str, Any]:
        reasons = Counter(r["reason"].split(":", 1)[0] for r in self.rejected_files)
        seen = len(self.files)
        assert self.accepted + len(self.rejected_files) == seen, "ingest accounting is off"
        return {
            "dicom_dir": self.spec.shown_dir,
            "labels_csv": self.spec.shown_csv,
            "seen": seen,
            "accepted": self.accepted,
            "rejected": len(self.rejected_files),
            "reasons": dict(sorted(reasons.items())),
            "rejected_files": self.rejected_files,
            "labels_without_file": self.labels_without_file,
            "excluded": self.excluded,
            "per_class": dict(sorted(self.per_class.items())),
            "patients": len(self.patients),
            "patients_missing_id": self.patients_missing_id,
            "labels_duplicate_rows": self.labels.duplicate_rows,
            "labels_rows_without_file_name": self.labels.empty_file_rows,
            "intensity": dict(sorted(self.intensity.items())),
            "transfer_syntaxes": dict(sorted(self.transfer_syntax.items())),
        }


def _label_rejection(rel: str, labels: Labels, classes: set[str]) -> tuple[str | None, str | None]:
    if rel in labels.ambiguous:
        return f"{AMBIGUOUS_LABEL}: {' | '.join(labels.ambiguous[rel])}", None
    label = labels.labels.get(rel)
    if label is None:
        return NOT_IN_LABELS, None
    if label not in classes:
        return f"{LABEL_NOT_IN_CLASSES}: {label!r}", None
    return None, label


def _prepare(spec: SourceSpec) -> _Account:
    if not spec.dicom_dir.is_dir():
        raise IngestError(f"{spec.name} dicom_dir {spec.shown_dir} ({spec.dicom_dir}) is not a folder")
    labels = read_labels(spec.labels_csv)
    files, excluded = list_files(spec.dicom_dir, exclude=[spec.labels_csv])
    present = set(files)
    without = sorted(f for f in set(labels.labels) | set(labels.ambiguous) if f not in present)
    return _Account(spec, files, excluded, labels, without)


def sources_from_params(params: Params, root: Path = REPO_ROOT) -> list[SourceSpec]:
    """The development set ``internal`` first, then every external set (pipeline.sources)."""
    from pipeline.sources import configured_sets

    specs = []
    for s in configured_sets(params):
        folder, csv = s.resolved(root)
        specs.append(SourceSpec(s.name, folder, csv, s.dicom_dir, s.labels_csv))
    return specs


def resolve_workers(workers: int) -> int:
    """``ingest.workers``: 0 = one per usable CPU core."""
    if workers > 0:
        return workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


def ingest(
    params: Params,
    *,
    store_path: str | Path,
    manifest_path: str | Path,
    report_path: str | Path,
    root: Path = REPO_ROOT,
    workers: int | None = None,
) -> dict[str, Any]:
    """Run ingest end to end; writes the store, the manifest and the report; returns the report.

    Raises :class:`IngestError` for unusable input: a missing folder or labels CSV, a CSV
    without ``file``/``label``, or no accepted internal image (the report is still written).
    """
    start = time.perf_counter()
    ing = params.ingest
    classes = set(params.data.classes)
    accounts = [_prepare(spec) for spec in sources_from_params(params, root)]
    n_workers = resolve_workers(ing.workers if workers is None else workers)

    n_files = sum(len(a.files) for a in accounts)
    by_name = {a.spec.name: a for a in accounts}
    config = WorkerConfig(
        size=ing.size,
        fit=ing.fit,
        options=dicom.DecodeOptions(
            apply_voi_lut=ing.apply_voi_lut,
            modalities=tuple(ing.modalities),
            min_size=ing.min_size,
            max_pixels=ing.max_pixels,
        ),
        salt=ing.pseudonym_salt,
        timeout_s=ing.file_timeout_s,
    )
    n_workers = max(1, min(n_workers, n_files))
    log.info(
        "%d files (%s), %d worker(s)",
        n_files,
        ", ".join(f"{a.spec.name}: {len(a.files)}" for a in accounts),
        n_workers,
    )

    details: list[tuple[str, str, str, str]] = []  # (set, file, reason, where) for the log file
    first_sop: dict[str, str] = {}
    # The manifest is streamed to disk like the images: the parent keeps no per-image row.
    with (
        StoreWriter(store_path, ing.size, capacity=n_files) as writer,
        CsvStream(manifest_path, MANIFEST_COLUMNS, MANIFEST_DTYPES) as manifest,
    ):
        # Tasks are made as the workers take them, and results come back in the same order.
        outcomes = _run_tasks((t for t, _ in _tasks(accounts, classes)), config, n_workers)
        for (task, label), out in progress(
            zip(_tasks(accounts, classes), outcomes, strict=True), total=n_files, desc="ingest"
        ):
            acc, rel = by_name[task.source], task.rel
            assert out.index == task.index
            if out.rejection is not None:
                acc.reject(rel, out.rejection)
                details.append((acc.spec.name, rel, out.rejection, out.detail))
                continue
            assert out.facts is not None and out.image is not None and label is not None
            facts = out.facts
            sop = facts.pop("sop_instance_uid")
            where = f"{acc.spec.name}/{rel}"
            if sop is not None and sop in first_sop:
                acc.reject(rel, f"{DUPLICATE_SOP_INSTANCE_UID}: same as {first_sop[sop]}")
                continue
            if sop is not None:
                first_sop[sop] = where
            writer.append(out.image)
            acc.accepted += 1
            acc.per_class[label] += 1
            acc.patients.add(facts["patient"])
            acc.patients_missing_id += bool(facts.pop("patient_missing"))
            acc.intensity[facts.pop("intensity")] += 1
            acc.transfer_syntax[_syntax_name(facts["transfer_syntax"])] += 1
            manifest.append({"row": manifest.count, "file": rel, "source": acc.spec.name, "label": label, **facts})
        internal = accounts[0]
        if internal.accepted == 0:
            report = _report(accounts, ing, n_workers, start, manifest.count, store_path)
            write_contract(report_path, IngestReport, report)
            raise IngestError(
                f"no usable image in {internal.spec.shown_dir}: {internal.report()['reasons']} "
                f"(details in {report_path})"
            )

    report = _report(accounts, ing, n_workers, start, manifest.count, store_path)
    # Nothing lost: every accepted file is one manifest row and one stored image.
    accepted = sum(a.accepted for a in accounts)
    n_stored = len(open_store(store_path))
    if not accepted == manifest.count == n_stored:
        raise IngestError(
            f"accounting is off: {accepted} accepted, {manifest.count} manifest rows, {n_stored} stored images"
        )
    write_contract(report_path, IngestReport, report)
    _write_log(Path(report_path).with_suffix(".log"), details)
    summary = Counter(r.split(":", 1)[0] for _, _, r, _ in details)
    if summary:
        log.info(
            "rejected by reason: %s (one line per file in %s)",
            dict(sorted(summary.items())),
            Path(report_path).with_suffix(".log").name,
        )
    return report


def _write_log(path: Path, details: list[tuple[str, str, str, str]]) -> None:
    """One line per rejected file: set, file, reason, and where an exception came from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("# set\tfile\treason\twhere (exceptions: traceback locations, no values)\n")
        for name, rel, reason, where in details:
            fh.write(f"{name}\t{rel!r}\t{reason}\t{where}\n")


def _syntax_name(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name if uid else ""
    return name or uid or "unknown"


def _report(
    accounts: list[_Account], ing: Any, workers: int, start: float, n_rows: int, store_path: str | Path
) -> dict[str, Any]:
    seconds = time.perf_counter() - start
    seen = sum(len(a.files) for a in accounts)
    report = accounts[0].report()
    # Every external set under its name; the same pseudonym in two sets is the same PatientID.
    report["external"] = {}
    for acc in accounts[1:]:
        block = acc.report()
        block["patients_also_internal"] = len(accounts[0].patients & acc.patients)
        report["external"][acc.spec.name] = block
    report["store"] = {"rows": n_rows, "size": ing.size, "dtype": "float16"}
    report["settings"] = {
        "size": ing.size,
        "fit": ing.fit,
        "apply_voi_lut": ing.apply_voi_lut,
        "min_size": ing.min_size,
        "modalities": list(ing.modalities),
    }
    report["timing"] = {
        "seconds": round(seconds, 3),
        "files_per_s": round(seen / seconds, 2) if seconds > 0 else None,
        "workers": workers,
    }
    return report


__all__ = [
    "INGEST_REASONS",
    "IngestError",
    "Labels",
    "MANIFEST_COLUMNS",
    "REASONS",
    "SquareFit",
    "area_resize",
    "fit_shape",
    "fit_square",
    "ingest",
    "list_files",
    "pad_square",
    "process_file",
    "pseudonym",
    "read_labels",
    "resolve_workers",
    "sources_from_params",
]
