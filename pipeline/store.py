"""The compact image store: ONE ``.npy`` file ``(N, S, S)`` float16 in [0, 1].

Why a single ``.npy``: every later stage memory-maps it (``open_store``), so reading one image
costs one page-aligned slice, no decoding and no per-file overhead, and the format needs nothing
but numpy to read. float16 halves the size of float32 and keeps ~3 significant digits, more
than an 8-bit display image carries.

Writing is streamed (:class:`StoreWriter`): rows are appended to the file as they arrive, so
memory does not grow with the number of images. The row count is only known at the end (some
files are rejected), so the header is first written for the *capacity* (an upper bound, e.g. the
number of candidate files) and rewritten in place for the final count, padded to the same length;
the file is then truncated. It is written under a temporary name and renamed at the end, so an
interrupted run never leaves a half-written store behind under the real name.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np

DTYPE = np.dtype("<f2")
_MAGIC = b"\x93NUMPY\x01\x00"  # format version 1.0: header length fits in 2 bytes


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


class StoreWriter:
    """Append ``(S, S)`` images to a new store file without holding them in memory.

    >>> with StoreWriter(path, size=128, capacity=len(files)) as w:   # doctest: +SKIP
    ...     w.append(image)
    >>> w.count                                                      # doctest: +SKIP

    ``capacity`` is an upper bound of the number of rows (appending more raises). The file is
    complete only after :meth:`close` (called by ``with``); on an exception inside the ``with``
    block the temporary file is removed and nothing is written under ``path``.
    """

    def __init__(self, path: str | Path, size: int, capacity: int) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.path = Path(path)
        self.size = int(size)
        self.capacity = int(capacity)
        self.count = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".partial")
        self._head = _header((self.capacity, self.size, self.size))
        self._fh: BinaryIO | None = open(self._tmp, "wb")  # noqa: SIM115 - closed in close()/abort()
        self._fh.write(self._head)

    def append(self, image: np.ndarray) -> int:
        """Write one image (any float dtype, values in [0, 1]); returns its row index."""
        if self._fh is None:
            raise RuntimeError("store writer is closed")
        if self.count >= self.capacity:
            raise ValueError(f"store capacity {self.capacity} exceeded")
        arr = np.asarray(image)
        if arr.shape != (self.size, self.size):
            raise ValueError(f"expected an image of shape {(self.size, self.size)}, got {arr.shape}")
        self._fh.write(np.ascontiguousarray(arr, dtype=DTYPE).tobytes())
        self.count += 1
        return self.count - 1

    def close(self) -> Path:
        """Fix the header for the real row count, truncate, and move the file into place."""
        if self._fh is None:
            return self.path
        fh, self._fh = self._fh, None
        fh.flush()
        # Same header length as reserved: the data already written stays where it is.
        fh.seek(0)
        fh.write(_header((self.count, self.size, self.size), length=len(self._head)))
        fh.truncate(len(self._head) + self.count * self.size * self.size * DTYPE.itemsize)
        fh.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Discard the partial file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._tmp.unlink(missing_ok=True)

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


def open_store(path: str | Path) -> np.ndarray:
    """The store as a read-only memory map ``(N, S, S)`` float16; checks the layout."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image store {path} not found; run the ingest stage first")
    arr = np.load(path, mmap_mode="r")
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2] or arr.dtype != DTYPE:
        raise ValueError(f"{path} is not an image store: expected (N, S, S) float16, got {arr.shape} {arr.dtype}")
    return arr


__all__ = ["DTYPE", "StoreWriter", "open_store"]
