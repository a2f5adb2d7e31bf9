"""The writer thread: calls run in order, a failure reaches the caller and stops what follows,
and the queue is bounded."""
from __future__ import annotations

import threading
import time

import pytest

from samtrack.background import InOrderWorker


def test_calls_run_in_order_on_one_other_thread() -> None:
    seen: list[tuple[int, str]] = []
    with InOrderWorker(max_pending=3) as worker:
        for i in range(50):
            worker.submit(lambda i: (time.sleep(0.001 * (i % 3)), seen.append((i, threading.current_thread().name))), i)
    assert [i for i, _ in seen] == list(range(50))
    names = {name for _, name in seen}
    assert len(names) == 1 and threading.current_thread().name not in names


def test_a_failure_is_raised_to_the_caller_and_later_calls_never_run() -> None:
    ran: list[int] = []

    def write(i: int) -> None:
        if i == 3:
            raise OSError(28, "No space left on device")
        ran.append(i)

    worker = InOrderWorker(max_pending=2)
    with pytest.raises(OSError, match="No space"):
        for i in range(20):
            worker.submit(write, i)
        worker.close()
    worker.abort()
    assert ran == [0, 1, 2]


def test_submit_blocks_while_the_queue_is_full() -> None:
    release = threading.Event()
    worker = InOrderWorker(max_pending=2)
    worker.submit(release.wait)
    worker.submit(lambda: None)
    third = threading.Thread(target=worker.submit, args=(lambda: None,))
    third.start()
    third.join(0.2)
    assert third.is_alive()  # two calls are pending: the third waits for the first
    release.set()
    third.join(5)
    assert not third.is_alive()
    worker.close()


def test_leaving_with_an_error_drops_what_has_not_started() -> None:
    ran: list[int] = []
    started = threading.Event()
    release = threading.Event()

    def first() -> None:
        started.set()
        release.wait(5)

    with pytest.raises(KeyboardInterrupt):
        with InOrderWorker(max_pending=10) as worker:
            worker.submit(first)
            for i in range(5):
                worker.submit(ran.append, i)
            started.wait(5)
            threading.Timer(0.1, release.set).start()
            raise KeyboardInterrupt
    assert ran == []


def test_max_pending_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_pending"):
        InOrderWorker(max_pending=0)
