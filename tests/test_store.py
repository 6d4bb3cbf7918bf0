"""pipeline.store: the sharded image store (a folder of .npy shards + store.json), written
streamed, read random-access like the (N, S, S) array it stands for."""

from __future__ import annotations

import json
import pickle
import tracemalloc

import numpy as np
import pytest

from pipeline.contracts import ContractError
from pipeline.store import (
    INDEX_FILE,
    ImageStore,
    StoreWriter,
    open_store,
    shard_rows_for,
    store_exists,
    write_store,
)


def _images(n: int, size: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size)).astype(np.float16)


@pytest.fixture
def seven(tmp_path) -> tuple[ImageStore, np.ndarray]:
    ref = _images(7)
    return open_store(write_store(tmp_path / "s", ref, shard_rows=3)), ref


def test_writer_shards_and_index(tmp_path) -> None:
    path = tmp_path / "s"
    with StoreWriter(path, size=8, shard_rows=3) as w:
        for i in range(7):
            assert w.append(np.full((8, 8), i / 10, np.float32)) == i
    index = json.loads((path / INDEX_FILE).read_text())
    assert index == {
        "format": "npy-shards",
        "version": 1,
        "dtype": "<f2",
        "size": 8,
        "rows": 7,
        "shard_rows": 3,
        "shards": [
            {"file": "shard-00000.npy", "start": 0, "rows": 3},
            {"file": "shard-00001.npy", "start": 3, "rows": 3},
            {"file": "shard-00002.npy", "start": 6, "rows": 1},
        ],
    }
    shards = ["shard-00000.npy", "shard-00001.npy", "shard-00002.npy"]
    assert sorted(p.name for p in path.iterdir()) == [*shards, INDEX_FILE]
    # Each shard is a plain .npy, its header fixed to the real count and the file truncated.
    last = np.load(path / "shard-00002.npy")
    assert last.shape == (1, 8, 8) and last.dtype == np.float16 and np.allclose(last, 0.6, atol=1e-3)
    assert (path / "shard-00002.npy").stat().st_size == 128 + 1 * 8 * 8 * 2
    store = open_store(path)
    assert store.shape == (7, 8, 8) and len(store) == 7 and store.n_shards == 3 and store.dtype == np.float16
    assert np.allclose(np.asarray(store)[:, 0, 0], np.arange(7) / 10, atol=1e-3)
    assert not (tmp_path / "s.partial").exists()


def test_random_access_equals_the_array(seven) -> None:
    store, ref = seven
    np.testing.assert_array_equal(store[4], ref[4])
    np.testing.assert_array_equal(store[-1], ref[-1])
    np.testing.assert_array_equal(store[np.int64(6)], ref[6])
    np.testing.assert_array_equal(store[3:6], ref[3:6])  # inside one shard: a view
    assert isinstance(store[3:6], np.memmap)
    np.testing.assert_array_equal(store[1:7], ref[1:7])  # across shards: gathered
    np.testing.assert_array_equal(store[::2], ref[::2])
    np.testing.assert_array_equal(store[5:2], ref[5:2])
    rows = np.array([6, 0, 4, 4, 2, -2])  # any order, repeats, negative
    np.testing.assert_array_equal(store[rows], ref[rows])
    np.testing.assert_array_equal(store[[5, 1]], ref[[5, 1]])
    mask = np.array([True, False, True, False, False, True, True])
    np.testing.assert_array_equal(store[mask], ref[mask])
    np.testing.assert_array_equal(store[rows, 2:4], ref[rows, 2:4])
    np.testing.assert_array_equal(store[5, 1], ref[5, 1])
    assert store[np.array([], dtype=np.int64)].shape == (0, 8, 8)
    np.testing.assert_array_equal(np.stack(list(store)), ref)
    np.testing.assert_array_equal(np.asarray(store, dtype=np.float32), ref.astype(np.float32))
    rng = np.random.default_rng(1)
    for _ in range(20):
        pick = rng.integers(0, 7, size=rng.integers(1, 10))
        np.testing.assert_array_equal(store[pick], ref[pick])


def test_reads_are_read_only_and_bounds_checked(seven) -> None:
    store, _ = seven
    with pytest.raises(ValueError, match="read-only"):
        store[0][0, 0] = 1
    for bad in (7, -8, np.array([0, 7]), np.array([-8])):
        with pytest.raises(IndexError, match="out of range"):
            store[bad]
    with pytest.raises(IndexError, match="boolean mask"):
        store[np.array([True, False])]
    with pytest.raises(IndexError, match="1-d integers"):
        store[np.array([0.5])]


def test_pickle_reopens_by_path(seven) -> None:
    store, ref = seven
    blob = pickle.dumps(store)
    assert len(blob) < 1000  # the path, never the images
    clone = pickle.loads(blob)
    assert isinstance(clone, ImageStore) and clone.path == store.path
    np.testing.assert_array_equal(clone[[6, 1]], ref[[6, 1]])


def test_empty_store(tmp_path) -> None:
    with StoreWriter(tmp_path / "e", size=4):
        pass
    store = open_store(tmp_path / "e")
    assert store.shape == (0, 4, 4) and store.n_shards == 0 and np.asarray(store).shape == (0, 4, 4)
    assert store[np.array([], dtype=np.int64)].shape == (0, 4, 4) and store[0:3].shape == (0, 4, 4)


def test_writer_errors_abort_and_leave_nothing(tmp_path) -> None:
    path = tmp_path / "s"
    with pytest.raises(ValueError, match="capacity 1 exceeded"), StoreWriter(path, size=4, capacity=1) as w:
        w.append(np.zeros((4, 4)))
        w.append(np.zeros((4, 4)))
    assert not list(tmp_path.iterdir())  # aborted: no store, no partial folder
    with pytest.raises(ValueError, match="shape"), StoreWriter(path, size=4) as w:
        w.append(np.zeros((5, 4)))
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="shard_rows"):
        StoreWriter(path, size=4, shard_rows=0)


def test_rewrite_replaces_the_store_and_a_stale_partial_is_discarded(tmp_path) -> None:
    path = tmp_path / "s"
    write_store(path, _images(5), shard_rows=2)
    (tmp_path / "s.partial").mkdir()  # as left by a killed run
    (tmp_path / "s.partial" / "shard-00007.npy").write_bytes(b"junk")
    new = _images(2, seed=3)
    write_store(path, new, shard_rows=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    assert sorted(p.name for p in path.iterdir()) == ["shard-00000.npy", INDEX_FILE]
    np.testing.assert_array_equal(np.asarray(open_store(path)), new)


def test_header_survives_shrinking_digit_count(tmp_path) -> None:
    # The header is reserved for shard_rows rows, more digits than the final count.
    with StoreWriter(tmp_path / "s", size=2, shard_rows=10**9) as w:
        w.append(np.ones((2, 2)))
    assert open_store(tmp_path / "s").shape == (1, 2, 2)


def test_open_store_rejects_what_is_not_a_store(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="run the ingest stage"):
        open_store(tmp_path / "absent")
    assert not store_exists(tmp_path / "absent")
    np.save(tmp_path / "old.npy", _images(2))
    with pytest.raises(ValueError, match="single file"):
        open_store(tmp_path / "old.npy")
    path = write_store(tmp_path / "s", _images(5), shard_rows=2)
    assert store_exists(path)
    index = json.loads((path / INDEX_FILE).read_text())
    index["rows"] = 6
    (path / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(ValueError, match="shards hold 5 rows, the index says 6"):
        open_store(path)
    index["rows"] = 5
    index["shards"][1]["start"] = 3
    (path / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(ValueError, match="starts at 3, expected 2"):
        open_store(path)
    index["shards"][1]["start"] = 2
    index["shards"][1]["rows"] = 1  # the index disagrees with the shard file (2 rows)
    index["shards"][2].update(start=3, rows=2)
    (path / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"shard-00001.npy: expected \(1, 8, 8\)"):
        open_store(path)
    index["format"] = "zarr"
    (path / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(ContractError, match="StoreIndex"):
        open_store(path)


def test_writing_holds_one_image_not_a_shard(tmp_path) -> None:
    """Streaming: peak Python heap while writing stays at a few images, whatever the count and
    the shard size (a writer that buffered a 4096-image shard would hold 32 MiB here)."""
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)  # 8 KiB as float16
    peaks = []
    for n in (200, 2000):
        tracemalloc.start()
        with StoreWriter(tmp_path / f"s{n}", size=64) as w:
            for _ in range(n):
                w.append(image)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert open_store(tmp_path / f"s{n}").n_shards == 1
    assert max(peaks) < 512 * 1024, peaks


def test_shard_size_targets_about_128_mib() -> None:
    assert shard_rows_for(128) == 4096  # 128 MiB
    assert shard_rows_for(224) == 1337  # ~128 MiB
    assert shard_rows_for(1024) == 64
    assert shard_rows_for(20000) == 1
