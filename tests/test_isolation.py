"""run_isolated: a task that kills or hangs its worker loses no other task's result."""

from __future__ import annotations

import os
import time

from pipeline.isolation import Crashed, TimedOut, run_isolated

CALLS_FILE = "calls.txt"


def _work(task: tuple[str, int, str]) -> int:
    kind, x, log = task
    with open(log, "a") as fh:
        fh.write(f"{x}\n")
    if kind == "crash":
        os._exit(3)
    if kind == "hang":
        time.sleep(60)
    with open(log) as fh:
        runs = sum(1 for ln in fh if ln.strip() == str(x))
    if kind == "crash_once" and runs == 1:
        os._exit(4)
    return x * x


def test_results_in_order_and_failures_isolated(tmp_path) -> None:
    log = str(tmp_path / CALLS_FILE)
    kinds = ["ok"] * 20
    kinds[3], kinds[11], kinds[15] = "crash", "hang", "crash_once"
    tasks = [(k, i, log) for i, k in enumerate(kinds)]
    start = time.monotonic()
    out = list(run_isolated(tasks, _work, workers=2, timeout_s=2.0, window=4))
    assert time.monotonic() - start < 30
    assert len(out) == 20
    assert out[3] == Crashed(attempts=2, exitcode=3)  # retried once in a fresh process
    assert isinstance(out[11], TimedOut) and out[11].seconds >= 2.0
    assert out[15] == 225  # died once, the retry succeeded
    assert [o for i, o in enumerate(out) if i not in (3, 11, 15)] == [i * i for i in range(20) if i not in (3, 11, 15)]
    with open(log) as fh:
        calls = [int(x) for x in fh.read().split()]
    assert calls.count(3) == 2 and calls.count(15) == 2 and calls.count(0) == 1


def test_one_worker_and_empty_input(tmp_path) -> None:
    log = str(tmp_path / CALLS_FILE)
    assert list(run_isolated([], _work, workers=1)) == []
    out = list(run_isolated([("ok", 2, log), ("crash", 5, log), ("ok", 3, log)], _work, workers=1))
    assert out[0] == 4 and isinstance(out[1], Crashed) and out[2] == 9


def test_tasks_are_drawn_lazily_within_the_window(tmp_path) -> None:
    """A generator of tasks is consumed as results are returned: never more than the window ahead
    (memory bounded by the window, not by the number of tasks)."""
    log = str(tmp_path / CALLS_FILE)
    drawn: list[int] = []

    def tasks():
        for i in range(40):
            drawn.append(i)
            yield ("ok", i, log)

    got = []
    for k, out in enumerate(run_isolated(tasks(), _work, workers=2, window=4)):
        got.append(out)
        assert len(drawn) <= k + 1 + 4  # results returned so far + the window
    assert got == [i * i for i in range(40)]
