"""Small helpers shared by every module: JSON I/O, hashing, seeding, progress, logging."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def get_logger(name: str) -> logging.Logger:
    logging.basicConfig(
        level=os.environ.get("CXR_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    return logging.getLogger(name)


def _jsonable(obj: Any) -> Any:
    """Numpy scalars/arrays to Python; NaN and inf to null (JSON has neither)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically (temp file + rename), indented, NaN-free."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_jsonable(data), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (when imported) for reproducible CPU runs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)


def show_progress() -> bool:
    """Progress bars on a terminal only: quiet in CI logs and under DVC's piped output."""
    return sys.stderr.isatty() and not os.environ.get("CI")


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
    from tqdm.auto import tqdm

    return iter(tqdm(iterable, total=total, desc=desc, disable=not show_progress(), leave=False))


def write_csv(df: Any, path: str | Path, **to_csv: Any) -> Path:
    """Write a DataFrame as CSV, atomically, every text field quoted (``csv.QUOTE_NONNUMERIC``) so
    that commas, quotes, ``\\r``, ``\\n`` and non-ASCII text round-trip through ``pandas.read_csv``."""
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n", encoding="utf-8", **to_csv)
    os.replace(tmp, path)
    return path


class CsvStream:
    """Write rows (dicts) to a CSV as they arrive, ``chunk`` rows at a time, so memory does not
    grow with the row count; the file appears under ``path`` only at :meth:`close`.

    ``dtypes`` fixes each column's type (every chunk is cast the same way), so the bytes equal
    ``write_csv(pd.DataFrame(all_rows, columns=columns).astype(dtypes), path)``.
    """

    def __init__(self, path: str | Path, columns: Iterable[str], dtypes: dict[str, str], chunk: int = 4096) -> None:
        import pandas as pd

        self.path = Path(path)
        self.columns = list(columns)
        self.dtypes = dtypes
        self.chunk = chunk
        self.count = 0
        self._rows: list[dict[str, Any]] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._fh: Any = open(self._tmp, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed in close()/abort()
        self._write(pd.DataFrame(columns=self.columns), header=True)

    def _write(self, df: Any, header: bool) -> None:
        import csv

        df.astype(self.dtypes).to_csv(
            self._fh, index=False, header=header, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n"
        )

    def append(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        self.count += 1
        if len(self._rows) >= self.chunk:
            self._flush()

    def _flush(self) -> None:
        import pandas as pd

        if self._rows:
            self._write(pd.DataFrame(self._rows, columns=self.columns), header=False)
            self._rows = []

    def close(self) -> Path:
        if self._fh is not None:
            self._flush()
            self._fh.close()
            self._fh = None
            os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> CsvStream:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
