"""The image store: a folder of ``.npy`` shards ``(n_i, S, S)`` float16 in [0, 1] plus ``store.json``.

This module is the only one that knows the on-disk format: writers use :class:`StoreWriter` (or
:func:`write_store`), readers :func:`open_store`, which returns an :class:`ImageStore` that
indexes like the ``(N, S, S)`` array it stands for (``store[i]``, ``store[a:b]``,
``store[rows]``, ``len``, ``shape``, ``np.asarray``).

Layout (format ``npy-shards``, version 1)::

    images/
      store.json           {"format", "version", "dtype", "size", "rows", "shard_rows",
                            "shards": [{"file", "start", "rows"}, ...]}   (contract: StoreIndex)
      shard-00000.npy      rows [0, shard_rows)           plain numpy .npy files
      shard-00001.npy      rows [shard_rows, 2 shard_rows) ...

Why shards: DVC hashes, caches, pushes and pulls each file of an output folder as one object, so
a store of 100,000 images is a few dozen objects of ~128 MiB (:data:`SHARD_BYTES`) instead of one
10 GB object that must be re-uploaded whole, and a remote transfers them in parallel.

Why ``.npy`` shards and not zarr v3 with its sharding codec (measured, BENCHMARKS.md "Store
format"): both give a few large DVC objects, but the trainer reads random batches
(``images[rows]``) and zarr 3.1 decodes every inner chunk through its asyncio pipeline, ~1.3 ms
per image (43 ms per random batch of 32 at 128 px) against 0.24 ms per batch for memory-mapped
``.npy`` shards: zarr alone would cap a data loader at ~750 images/s, below what one GPU trains.
``.npy`` is numpy's own documented format (NEP 1), readable with nothing but numpy, and every
shard is memory-mapped, so reading costs page-aligned slices, no decoding, and memory stays flat
(pages are the OS's cache, not the process's heap). Compression would not pay either: zstd on
float16 radiographs saved 21% (blosc+bitshuffle 38%) at 2-3x the write time and 4-7x the read
time of one image. The format is named and versioned in ``store.json``; another one (e.g. zarr
for object-storage streaming) would be a second branch in :func:`open_store` and
:class:`StoreWriter`, and no other module would change.

Writing is streamed: each image is appended to the open shard file as it arrives (memory: one
image), a full shard is closed and the next one opened. Each shard's ``.npy`` header is first
written for ``shard_rows`` rows and rewritten in place for the real count when the shard closes
(same header length, then truncated), so the row count need not be known in advance. Everything
is written into ``<name>.partial/`` and renamed into place at the end: an interrupted run never
leaves a half-written store under the real name.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, TypeAlias

import numpy as np

from pipeline.contracts import StoreIndex, read_contract, write_contract

DTYPE = np.dtype("<f2")
FORMAT = "npy-shards"
VERSION = 1
INDEX_FILE = "store.json"
SHARD_BYTES = 128 * 2**20  # target size of one shard: 4096 images at 128 px, 1337 at 224 px
MAX_SHARD_ROWS = 4096
_MAGIC = b"\x93NUMPY\x01\x00"  # format version 1.0: header length fits in 2 bytes


def shard_rows_for(size: int) -> int:
    """Images per shard for ``size`` px images: ~:data:`SHARD_BYTES`, at most 4096, at least 1."""
    return int(max(1, min(MAX_SHARD_ROWS, SHARD_BYTES // (size * size * DTYPE.itemsize))))


def _header(shape: tuple[int, ...], length: int | None = None) -> bytes:
    """An npy v1.0 header for a C-ordered float16 array, padded to ``length`` bytes.

    Without ``length`` the total is rounded up to a multiple of 64 (numpy's alignment), so the
    data starts aligned for memory mapping.
    """
    text = repr({"descr": DTYPE.str, "fortran_order": False, "shape": tuple(shape)})
    base = len(_MAGIC) + 2 + len(text) + 1  # + trailing newline
    if length is None:
        length = -(-base // 64) * 64
    if base > length:
        raise ValueError(f"npy header for shape {shape} needs {base} bytes, only {length} reserved")
    body = (text + " " * (length - base) + "\n").encode("latin1")
    return _MAGIC + (len(body)).to_bytes(2, "little") + body


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}.npy"


class StoreWriter:
    """Append ``(S, S)`` images to a new store without holding them in memory.

    >>> with StoreWriter(path, size=128) as w:   # doctest: +SKIP
    ...     w.append(image)
    >>> w.count                                  # doctest: +SKIP

    ``capacity``, when given, is an upper bound of the number of rows (appending more raises).
    ``shard_rows`` defaults to :func:`shard_rows_for`. The store is complete only after
    :meth:`close` (called by ``with``); on an exception inside the ``with`` block the partial
    folder is removed and nothing is written under ``path``.
    """

    def __init__(self, path: str | Path, size: int, capacity: int | None = None, shard_rows: int | None = None) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if capacity is not None and capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        if shard_rows is not None and shard_rows < 1:
            raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
        self.path = Path(path)
        self.size = int(size)
        self.capacity = capacity
        self.shard_rows = shard_rows_for(self.size) if shard_rows is None else int(shard_rows)
        self.count = 0
        self._shards: list[dict[str, Any]] = []
        self._tmp = self.path.with_name(self.path.name + ".partial")
        if self._tmp.exists():  # left by an interrupted run
            shutil.rmtree(self._tmp)
        self._tmp.mkdir(parents=True)
        self._head = _header((self.shard_rows, self.size, self.size))
        self._fh: BinaryIO | None = None
        self._in_shard = 0
        self._closed = False

    def append(self, image: np.ndarray) -> int:
        """Write one image (any float dtype, values in [0, 1]); returns its row index."""
        if self._closed:
            raise RuntimeError("store writer is closed")
        if self.capacity is not None and self.count >= self.capacity:
            raise ValueError(f"store capacity {self.capacity} exceeded")
        arr = np.asarray(image)
        if arr.shape != (self.size, self.size):
            raise ValueError(f"expected an image of shape {(self.size, self.size)}, got {arr.shape}")
        if self._fh is None:
            name = _shard_name(len(self._shards))
            self._shards.append({"file": name, "start": self.count, "rows": 0})
            self._fh = open(self._tmp / name, "wb")  # noqa: SIM115 - closed in _close_shard()/abort()
            self._fh.write(self._head)
        self._fh.write(np.ascontiguousarray(arr, dtype=DTYPE).tobytes())
        self._in_shard += 1
        self.count += 1
        if self._in_shard == self.shard_rows:
            self._close_shard()
        return self.count - 1

    def _close_shard(self) -> None:
        """Fix the open shard's header for its real row count (same length) and truncate it."""
        fh, self._fh = self._fh, None
        if fh is None:
            return
        n = self._in_shard
        fh.flush()
        fh.seek(0)
        fh.write(_header((n, self.size, self.size), length=len(self._head)))
        fh.truncate(len(self._head) + n * self.size * self.size * DTYPE.itemsize)
        fh.close()
        self._shards[-1]["rows"] = n
        self._in_shard = 0

    def close(self) -> Path:
        """Close the last shard, write ``store.json`` and move the folder into place."""
        if self._closed:
            return self.path
        self._close_shard()
        self._closed = True
        index = {
            "format": FORMAT,
            "version": VERSION,
            "dtype": DTYPE.str,
            "size": self.size,
            "rows": self.count,
            "shard_rows": self.shard_rows,
            "shards": self._shards,
        }
        write_contract(self._tmp / INDEX_FILE, StoreIndex, index)
        old = self.path.with_name(self.path.name + ".old")
        if old.exists() or old.is_symlink():
            _remove(old)
        if self.path.exists() or self.path.is_symlink():
            os.replace(self.path, old)
        os.replace(self._tmp, self.path)
        if old.exists() or old.is_symlink():
            _remove(old)
        return self.path

    def abort(self) -> None:
        """Discard the partial store."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._closed = True
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()


class ImageStore:
    """A read-only store that indexes like a ``(N, S, S)`` float16 array.

    ``store[i]`` and ``store[a:b]`` within one shard are read-only memory-mapped views; any other
    selection (a list or array of rows, in any order, or a boolean mask; a slice across shards)
    is gathered into a new array, shard by shard. Pickling reopens the store by path (a worker
    process never receives a copy of the images).
    """

    def __init__(self, path: Path, index: StoreIndex) -> None:
        self.path = path
        self.index = index
        self._parts: list[np.ndarray] = []
        starts = []
        for sh in index.shards:
            part = np.load(path / sh.file, mmap_mode="r")
            if part.shape != (sh.rows, index.size, index.size) or part.dtype != DTYPE:
                raise ValueError(
                    f"{path / sh.file}: expected ({sh.rows}, {index.size}, {index.size}) float16, "
                    f"got {part.shape} {part.dtype}; rerun the stage that wrote {path}"
                )
            self._parts.append(part)
            starts.append(sh.start)
        self._starts = np.asarray(starts, dtype=np.int64)
        self.shape: tuple[int, int, int] = (index.rows, index.size, index.size)

    dtype = DTYPE
    ndim = 3

    @property
    def n_shards(self) -> int:
        return len(self._parts)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * DTYPE.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ImageStore({str(self.path)!r}, shape={self.shape}, shards={self.n_shards})"

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return open_store, (str(self.path),)

    def __iter__(self) -> Iterator[np.ndarray]:
        for part in self._parts:
            yield from part

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = np.empty(self.shape, dtype=DTYPE)
        for part, start in zip(self._parts, self._starts.tolist(), strict=True):
            out[start : start + len(part)] = part
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            if not key:
                return np.asarray(self)
            head = self[key[0]]
            rest = key[1:]
            return head[rest] if isinstance(key[0], int | np.integer) else head[(slice(None), *rest)]
        if isinstance(key, int | np.integer):
            i = int(key)
            n = len(self)
            if not -n <= i < n:
                raise IndexError(f"row {i} out of range for a store of {n} images")
            i %= n
            s = int(np.searchsorted(self._starts, i, side="right")) - 1
            return self._parts[s][i - int(self._starts[s])]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1 and stop > start:
                s = int(np.searchsorted(self._starts, start, side="right")) - 1
                first = int(self._starts[s])
                if stop - first <= len(self._parts[s]):
                    return self._parts[s][start - first : stop - first]
            return self._gather(np.arange(start, stop, step, dtype=np.int64))
        return self._gather(self._rows(key))

    def _rows(self, key: Any) -> np.ndarray:
        rows = np.asarray(key)
        if rows.dtype == bool:
            if rows.shape != (len(self),):
                raise IndexError(f"boolean mask of shape {rows.shape} for a store of {len(self)} images")
            return np.flatnonzero(rows)
        if rows.size == 0:
            return np.zeros(0, dtype=np.int64)
        if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
            raise IndexError(f"store rows must be an int, a slice or 1-d integers, got {rows.dtype} {rows.shape}")
        n = len(self)
        if rows.min() < -n or rows.max() >= n:
            raise IndexError(f"rows out of range for a store of {n} images")
        return np.where(rows < 0, rows + n, rows).astype(np.int64, copy=False)

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self.shape[1:]), dtype=DTYPE)
        if not len(rows):
            return out
        shard = np.searchsorted(self._starts, rows, side="right") - 1
        for s in np.unique(shard).tolist():
            pick = shard == s
            out[pick] = self._parts[s][rows[pick] - self._starts[s]]
        return out


#: What the modelling code accepts as images: the store, or an in-memory array of the same shape.
Images: TypeAlias = ImageStore | np.ndarray


def open_store(path: str | Path) -> ImageStore:
    """The store at ``path`` (a folder), read-only and memory-mapped; checks the layout."""
    path = Path(path)
    if path.is_file():
        raise ValueError(
            f"{path} is a single file, not an image store folder (a store from an older version "
            "of the pipeline?); rerun the ingest stage (dvc repro ingest)"
        )
    if not (path / INDEX_FILE).is_file():
        raise FileNotFoundError(f"image store {path} not found (no {INDEX_FILE}); run the ingest stage first")
    index = read_contract(path / INDEX_FILE, StoreIndex)
    expected = 0
    for sh in index.shards:
        if sh.start != expected:
            raise ValueError(f"{path / INDEX_FILE}: shard {sh.file} starts at {sh.start}, expected {expected}")
        expected += sh.rows
    if expected != index.rows:
        raise ValueError(f"{path / INDEX_FILE}: shards hold {expected} rows, the index says {index.rows}")
    return ImageStore(path, index)


def write_store(path: str | Path, images: Any, shard_rows: int | None = None) -> Path:
    """Write an ``(N, S, S)`` array-like as a store (streamed image by image)."""
    arr = np.asarray(images) if not isinstance(images, ImageStore) else images
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
        raise ValueError(f"images must be (N, S, S), got shape {arr.shape}")
    with StoreWriter(path, size=arr.shape[1], shard_rows=shard_rows) as w:
        for image in arr:
            w.append(image)
    return w.path


def store_exists(path: str | Path) -> bool:
    """Whether a complete store is at ``path``."""
    return (Path(path) / INDEX_FILE).is_file()


__all__ = [
    "DTYPE",
    "FORMAT",
    "INDEX_FILE",
    "ImageStore",
    "Images",
    "StoreWriter",
    "open_store",
    "shard_rows_for",
    "store_exists",
    "write_store",
]
