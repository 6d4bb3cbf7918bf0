"""Training batches: which rows, in which order, read by loader threads and augmented on the device.

Every batch is a pure function of (seed, epoch, rows): the order of an epoch comes from
``epoch_seed(seed, epoch)`` and each batch's augmentation from its rows, so an interrupted run that
resumes retraces the uninterrupted one, and the thread changes timing only, never the data.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.store import Images


def _aug_seed(seed: int, epoch: int, rows: np.ndarray) -> int:
    # Tagged entropy keeps on-the-fly views distinct from the materialised copies of
    # pipeline.augment.view_seed(seed, row, copy), while fixed by (seed, epoch, the batch's rows
    # in order); the batch order is itself fixed by (seed, epoch), so a resumed run matches.
    entropy = [int(seed), int(epoch), 0x7A11, *(int(r) for r in rows)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(epoch), 0xE90C]).generate_state(1)[0])


@dataclass(frozen=True)
class Batch:
    """One training batch as the loader thread prepared it: the rows, their images as a
    ``(B, 1, S, S)`` float32 CPU tensor (page-locked when bound for a GPU) and, when augmenting,
    the random parameters of its views (:class:`pipeline.augment.Draw`, drawn on the CPU)."""

    rows: np.ndarray
    images: torch.Tensor
    draw: Any = None

    def on(self, device: torch.device, transform: Any = None) -> torch.Tensor:
        """The batch's images on ``device``, augmented there by ``transform`` (the one whose
        parameters were drawn). Copies are asynchronous from page-locked memory: no host sync."""
        x = self.images.to(device, non_blocking=True)
        if self.draw is None:
            return x
        return transform.apply(x, self.draw.to(device, non_blocking=True))


def load_batch(images: Images, rows: np.ndarray, transform: Any, seed: int, epoch: int, pin: bool = False) -> Batch:
    """Read ``rows`` (float16 store -> float32) and, with ``transform``, draw their views'
    parameters; ``pin`` page-locks the tensors for an asynchronous copy to a GPU."""
    rows = np.asarray(rows)
    contiguous = len(rows) > 0 and bool(np.all(np.diff(rows) == 1))
    # A run of rows reads as a slice (a view of one shard: one copy instead of two).
    picked = images[int(rows[0]) : int(rows[-1]) + 1] if contiguous else images[rows]
    x = torch.from_numpy(np.asarray(picked, dtype=np.float32)).unsqueeze(1)
    draw = None
    if transform is not None:
        draw = transform.draw(len(rows), x.shape[2], x.shape[3], _aug_seed(seed, epoch, rows))
    if pin:
        x = x.pin_memory()
        draw = draw.pin_memory() if draw is not None else None
    return Batch(rows, x, draw)


def _single_thread() -> None:
    # torch's intra-op thread count is per calling thread: the loader threads run their small
    # ops on one core each and leave the model's thread pool alone.
    torch.set_num_threads(1)


@dataclass(frozen=True)
class LoaderSettings:
    """How far the loader reads ahead, with how many threads, into page-locked memory or not."""

    ahead: int = 0
    workers: int = 1
    pin: bool = False


def loader_settings(device: torch.device) -> LoaderSettings:
    """On CPU the cores are the model's: read each batch when it is due (no read-ahead). On a GPU
    (or MPS) the CPU is free during a step: two threads keep four batches ready, in page-locked
    memory for CUDA, so the copy to the device runs asynchronously with the step."""
    if device.type == "cpu":
        return LoaderSettings()
    return LoaderSettings(ahead=4, workers=2, pin=device.type == "cuda")


def iter_batches(
    images: Images,
    batches: list[np.ndarray],
    transform: Any,
    seed: int,
    epoch: int,
    settings: LoaderSettings = LoaderSettings(),
) -> Iterator[Batch]:
    """Yield a :class:`Batch` per entry of ``batches``, in order, read by loader threads.

    The loader reads the store (float16 -> float32), draws the augmentation parameters and
    page-locks; the augmentation itself runs on the training device (:meth:`Batch.on`).
    ``settings.ahead`` > 0 has ``settings.workers`` threads prepare that many batches while the
    model steps (each thread runs torch with one intra-op thread: on a loaded machine a
    multi-threaded OpenMP region per small op is many times slower); 0 reads each batch in the
    calling thread when it is due, so on CPU the loader never competes with the model for cores.
    Each batch is a pure function of (seed, epoch, rows): the threads change timing only, never
    the data.
    """
    ahead = settings.ahead
    if ahead == 0:  # read each batch when it is due, in this thread: nothing to overlap with
        for rows in batches:
            yield load_batch(images, rows, transform, seed, epoch, settings.pin)
        return
    pending: deque = deque()
    todo = iter(batches)
    with ThreadPoolExecutor(max_workers=max(1, settings.workers), initializer=_single_thread) as pool:

        def submit() -> None:
            rows = next(todo, None)
            if rows is not None:
                pending.append(pool.submit(load_batch, images, rows, transform, seed, epoch, settings.pin))

        for _ in range(ahead):
            submit()
        while pending:
            batch = pending.popleft().result()
            submit()
            yield batch


def make_batches(rows: np.ndarray, batch_size: int) -> list[np.ndarray]:
    # Near-equal batches of at most batch_size: never a trailing batch of one image (BatchNorm in
    # train mode cannot normalise a single 1x1 map) and no image dropped.
    n_batches = max(1, math.ceil(len(rows) / batch_size))
    return np.array_split(rows, n_batches)


def iter_images(
    images: Images, rows: np.ndarray, batch_size: int, device: torch.device
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Un-augmented ``(rows, images on device)`` batches of ``rows`` in order (inference: frozen
    features, predictions), read ahead by the loader threads on a GPU (:func:`loader_settings`)."""
    rows = np.asarray(rows, dtype=np.int64)
    chunks = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    for batch in iter_batches(images, chunks, None, 0, 0, loader_settings(device)):
        yield batch.rows, batch.on(device)
