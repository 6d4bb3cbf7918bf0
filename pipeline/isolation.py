"""Run one function over many tasks in worker processes so that no task can stop the run.

:func:`run_isolated` is a small supervisor over ``multiprocessing`` workers, one pipe each:

- a Python exception inside the function is the function's business (it should return a value
  saying so); the supervisor never sees it;
- a worker that *dies* while running a task (a C decoder's segfault, an out-of-memory kill,
  ``os._exit``) loses only that task: no other task's result is lost, the task is retried once in
  a fresh process, and if it kills that one too it comes back as :class:`Crashed`;
- a task that runs longer than ``timeout_s`` is stopped by killing its worker and comes back as
  :class:`TimedOut`; a fresh worker takes its place.

Results come back in task order. Tasks are drawn from their iterable lazily and at most
``window`` are held ahead of the first result not yet returned, so memory stays bounded by the
window, never by the number of tasks.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

#: A task that killed its worker this many times is given up (the first death is retried once).
MAX_ATTEMPTS = 2
#: Tasks queued per worker: one running, one waiting in its pipe.
DEPTH = 2


@dataclass(frozen=True)
class Crashed:
    """The task killed its worker process ``attempts`` times (exit code of the last one)."""

    attempts: int
    exitcode: int | None


@dataclass(frozen=True)
class TimedOut:
    """The task ran past the time limit; its worker was killed."""

    seconds: float


def _worker_main(
    conn: Connection, func: Callable[[Any], Any], init: Callable[..., None] | None, initargs: tuple[Any, ...]
) -> None:
    if init is not None:
        init(*initargs)
    while True:
        try:
            item = conn.recv()
        except EOFError:
            return
        if item is None:
            return
        index, task = item
        conn.send((index, func(task)))


class _Worker:
    def __init__(
        self, ctx: Any, func: Callable[[Any], Any], init: Callable[..., None] | None, initargs: tuple[Any, ...]
    ) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, func, init, initargs), daemon=True)
        self.process.start()
        child.close()
        # Tasks sent and not answered, in order: the first is running, the next waits in the pipe
        # (a queue of two keeps the worker busy while the parent handles a result).
        self.inflight: deque[int] = deque()
        self.started = 0.0  # when the running task started (approximately: sent, or previous result)

    @property
    def busy(self) -> int | None:
        return self.inflight[0] if self.inflight else None

    def send(self, index: int, task: Any) -> None:
        if not self.inflight:
            self.started = time.monotonic()
        self.inflight.append(index)
        self.conn.send((index, task))

    def answered(self) -> None:
        self.inflight.popleft()
        self.started = time.monotonic()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send(None)
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.conn.close()


def run_isolated(
    tasks: Iterable[Any],
    func: Callable[[Any], Any],
    *,
    workers: int,
    timeout_s: float | None = None,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
    window: int | None = None,
) -> Iterator[Any]:
    """``func(task)`` for every task, in order; a crashed or timed-out task yields
    :class:`Crashed` / :class:`TimedOut` instead of a result. ``func`` must be picklable
    (a module-level function) and should catch its own exceptions.

    ``tasks`` is consumed lazily (it may be a generator): only the tasks within ``window`` of the
    next result due are held, so memory does not grow with the number of tasks. ``workers``
    processes are started (pass at most the number of tasks)."""
    source = iter(tasks)
    items: dict[int, Any] = {}  # drawn and not yet returned
    attempts: dict[int, int] = {}
    pending: deque[int] = deque()  # drawn, not yet dispatched (retries go first)
    drawn = 0
    exhausted = False

    def draw(limit: int) -> None:
        """Take fresh tasks from ``source`` up to index ``limit`` (exclusive)."""
        nonlocal drawn, exhausted
        while not exhausted and drawn < limit:
            try:
                items[drawn] = next(source)
            except StopIteration:
                exhausted = True
                return
            attempts[drawn] = 0
            pending.append(drawn)
            drawn += 1

    draw(1)
    if not items:
        return
    ctx = mp.get_context()
    n_workers = max(1, workers)
    window = window or max(8, 16 * n_workers)
    pool = [_Worker(ctx, func, initializer, initargs) for _ in range(n_workers)]
    done: dict[int, Any] = {}
    next_out = 0
    try:
        while True:
            draw(next_out + window)
            if exhausted and next_out >= drawn:
                break
            # Dispatch (up to DEPTH tasks a worker), within the window ahead of the next result due.
            for w in pool:
                while len(w.inflight) < DEPTH and pending and pending[0] < next_out + window:
                    i = pending.popleft()
                    attempts[i] += 1
                    w.send(i, items[i])
            busy = [w for w in pool if w.busy is not None]
            limit = None
            if timeout_s is not None and busy:
                limit = max(0.0, min(w.started for w in busy) + timeout_s - time.monotonic())
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=limit)
            for k, w in enumerate(pool):
                if w.busy is None:
                    continue
                i = w.inflight[0]
                if w.conn in ready:
                    try:
                        index, result = w.conn.recv()
                    except (EOFError, OSError):
                        index = None
                    if index == i:
                        done[i] = result
                        w.answered()
                        continue
                if w.conn in ready or w.process.sentinel in ready:  # died while running task i
                    w.process.join(timeout=5)
                    code = w.process.exitcode
                    w.kill()
                    waiting = list(w.inflight)[1:]  # sent but never started: not their fault
                    for j in reversed(waiting):
                        attempts[j] -= 1
                        pending.appendleft(j)
                    if attempts[i] < MAX_ATTEMPTS:
                        pending.appendleft(i)
                    else:
                        done[i] = Crashed(attempts[i], code)
                    pool[k] = _Worker(ctx, func, initializer, initargs)
                elif timeout_s is not None and time.monotonic() - w.started > timeout_s:
                    w.kill()
                    done[i] = TimedOut(round(time.monotonic() - w.started, 3))
                    for j in reversed(list(w.inflight)[1:]):
                        attempts[j] -= 1
                        pending.appendleft(j)
                    pool[k] = _Worker(ctx, func, initializer, initargs)
            while next_out in done:
                items.pop(next_out)
                attempts.pop(next_out)
                yield done.pop(next_out)
                next_out += 1
    finally:
        for w in pool:
            w.stop()


__all__ = ["Crashed", "MAX_ATTEMPTS", "TimedOut", "run_isolated"]
