"""Training batches: which rows, in which order, read and augmented by one loader thread.

Every batch is a pure function of (seed, epoch, rows): the order of an epoch comes from
``epoch_seed(seed, epoch)`` and each batch's augmentation from its rows, so an interrupted run that
resumes retraces the uninterrupted one, and the thread changes timing only, never the data.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch


def _aug_seed(seed: int, epoch: int, rows: np.ndarray) -> int:
    # Tagged entropy keeps on-the-fly views distinct from the materialised copies of
    # pipeline.augment.view_seed(seed, row, copy), while fixed by (seed, epoch, the batch's rows
    # in order); the batch order is itself fixed by (seed, epoch), so a resumed run matches.
    entropy = [int(seed), int(epoch), 0x7A11, *(int(r) for r in rows)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(epoch), 0xE90C]).generate_state(1)[0])


def load_batch(images: np.ndarray, rows: np.ndarray, transform: Any, seed: int, epoch: int) -> np.ndarray:
    """(B, S, S) float32 images of ``rows``, augmented when ``transform`` is given."""
    batch = np.asarray(images[np.asarray(rows)], dtype=np.float32)
    if transform is not None:
        from pipeline.augment import augment_batch

        batch = augment_batch(transform, batch, _aug_seed(seed, epoch, np.asarray(rows)))
    return batch


def _single_thread() -> None:
    # torch's intra-op thread count is per calling thread: the loader thread runs its small
    # per-image ops on one core and leaves the model's thread pool alone.
    torch.set_num_threads(1)


def iter_batches(
    images: np.ndarray,
    batches: list[np.ndarray],
    transform: Any,
    seed: int,
    epoch: int,
    ahead: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(rows, images)`` per batch, read and augmented by one loader thread.

    The loader thread runs torch with one intra-op thread: MONAI's small per-image ops gain
    nothing from more, and on a loaded machine a multi-threaded OpenMP region per tiny op is
    many times slower (measured: 2.5 ms vs 24 ms per image with two busy cores). ``ahead`` > 0
    prepares that many batches while the model steps (useful when the model runs on a GPU and
    the CPU is free); ``ahead`` = 0 waits for each batch, so on CPU the loader never competes
    with the model for cores. Each batch is a pure function of (seed, epoch, rows): the thread
    changes timing only, never the data. Only the loader thread uses ``transform``.
    """
    pending: deque = deque()
    todo = iter(batches)
    with ThreadPoolExecutor(max_workers=1, initializer=_single_thread) as pool:

        def submit() -> None:
            rows = next(todo, None)
            if rows is not None:
                job = pool.submit(load_batch, images, rows, transform, seed, epoch)
                pending.append((rows, job))

        for _ in range(max(ahead, 1)):
            submit()
        while pending:
            rows, job = pending.popleft()
            batch = job.result()
            if ahead > 0:
                submit()
            yield rows, batch
            if ahead == 0:
                submit()


def loader_ahead(device: torch.device) -> int:
    """Batches to prepare in advance: none on CPU (the cores are the model's), two otherwise."""
    return 0 if device.type == "cpu" else 2


def make_batches(rows: np.ndarray, batch_size: int) -> list[np.ndarray]:
    # Near-equal batches of at most batch_size: never a trailing batch of one image (BatchNorm in
    # train mode cannot normalise a single 1x1 map) and no image dropped.
    n_batches = max(1, math.ceil(len(rows) / batch_size))
    return np.array_split(rows, n_batches)
