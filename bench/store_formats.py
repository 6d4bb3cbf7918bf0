"""Store format comparison behind pipeline/store.py's choice (not part of ``make bench``).

Writes the same N synthetic (S, S) float16 images five ways and times the access patterns the
pipeline uses: a random batch of 32 rows (the trainer: ``images[rows]``), sequential blocks of
256 rows copied out (features), single rows (augment). Formats: one ``.npy`` (the old store),
``.npy`` shards memory-mapped (the current store, through ``pipeline.store``), and zarr v3 with
the sharding codec (one image per inner chunk, ``shard_rows`` per shard) uncompressed, zstd
level 1, and blosc-zstd with bitshuffle.

zarr is not a project dependency; the run recorded in BENCHMARKS.md used a throwaway venv with
``zarr==3.1.6`` (the last release for Python 3.11) beside the project's packages::

    python -m bench.store_formats --n 8192 --size 128 --shard-rows 2048
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.store import open_store, write_store


def _images(n: int, size: int) -> np.ndarray:
    """Smooth chest-like content plus noise (compressibility like a resized radiograph)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    smooth = 0.5 + 0.3 * np.sin(6 * xx) * np.cos(4 * yy)
    noise = rng.random((64, size, size))
    return np.clip(smooth + 0.05 * noise[np.arange(n) % 64], 0, 1).astype(np.float16)


def _du(p: Path) -> int:
    return p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _files(p: Path) -> int:
    return 1 if p.is_file() else sum(f.is_file() for f in p.rglob("*"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--shard-rows", type=int, default=2048)
    a = ap.parse_args(argv)
    import zarr
    from zarr.codecs import BloscCodec, ZstdCodec

    ref = _images(a.n, a.size)
    root = Path(tempfile.mkdtemp(prefix="store-formats-"))
    writers: dict[str, Any] = {}

    def w_npy() -> Any:
        np.save(root / "one.npy", ref)
        return np.load(root / "one.npy", mmap_mode="r")

    def w_shards() -> Any:
        return open_store(write_store(root / "shards", ref, shard_rows=a.shard_rows))

    def w_zarr(name: str, compressors: Any) -> Any:
        def f() -> Any:
            arr = zarr.create_array(
                root / name,
                shape=ref.shape,
                dtype="float16",
                chunks=(1, a.size, a.size),
                shards=(a.shard_rows, a.size, a.size),
                compressors=compressors,
                fill_value=0,
            )
            for start in range(0, a.n, a.shard_rows):  # one whole shard per write
                arr[start : start + a.shard_rows] = ref[start : start + a.shard_rows]
            return zarr.open_array(root / name, mode="r")

        return f

    writers = {
        "npy_single": w_npy,
        "npy_shards": w_shards,
        "zarr_raw": w_zarr("raw.zarr", None),
        "zarr_zstd1": w_zarr("zstd.zarr", [ZstdCodec(level=1)]),
        "zarr_blosc": w_zarr("blosc.zarr", [BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle", typesize=2)]),
    }
    paths = {"npy_single": "one.npy", "npy_shards": "shards", "zarr_raw": "raw.zarr"}
    paths |= {"zarr_zstd1": "zstd.zarr", "zarr_blosc": "blosc.zarr"}
    rng = np.random.default_rng(1)
    batches = [rng.choice(a.n, 32, replace=False) for _ in range(100)]
    singles = rng.integers(0, a.n, 300)
    out: dict[str, Any] = {"n": a.n, "size": a.size, "shard_rows": a.shard_rows, "zarr": zarr.__version__}
    try:
        for name, write in writers.items():
            t = time.perf_counter()
            reader = write()
            write_s = time.perf_counter() - t
            get = reader.oindex.__getitem__ if name.startswith("zarr") else reader.__getitem__
            assert np.array_equal(np.asarray(get(batches[0])), ref[batches[0]])
            t = time.perf_counter()
            for b in batches:
                np.asarray(get(b))
            batch_ms = 1e3 * (time.perf_counter() - t) / len(batches)
            t = time.perf_counter()
            for s in range(0, a.n, 256):
                np.array(reader[s : s + 256])
            block_ms = 1e3 * (time.perf_counter() - t) / len(range(0, a.n, 256))
            t = time.perf_counter()
            for i in singles:
                np.array(reader[int(i)])
            single_ms = 1e3 * (time.perf_counter() - t) / len(singles)
            out[name] = {
                "write_s": round(write_s, 2),
                "mib": round(_du(root / paths[name]) / 2**20, 1),
                "files": _files(root / paths[name]),
                "random_batch32_ms": round(batch_ms, 3),
                "block256_copy_ms": round(block_ms, 3),
                "single_ms": round(single_ms, 4),
            }
            print(name, out[name], flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("CXR_LOG_LEVEL", "WARNING")
    raise SystemExit(main())
