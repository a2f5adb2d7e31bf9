"""Work taken off the pipeline's critical path: calls run in order on one thread of their own.

The pipeline keeps both cores busy only in the encoder and the decoder; between them (sampling,
re-detection, the merge) one core idles. Writing a frame's results (PNG compression, overlay
drawing and H.264 encoding, exports: about 20 ms per 480p frame) releases the GIL, so run on
this thread it fills that idle core instead of adding to the frame's time.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, Callable


class InOrderWorker:
    """Runs submitted calls one at a time, in submission order, on a single thread.

    Args:
        max_pending: calls that may wait unfinished; :meth:`submit` blocks beyond that, so a
            slow disk holds the pipeline back rather than letting frames pile up in memory.
        name: the thread's name (seen in profilers and tracebacks).

    A call that raises stops the worker: its exception is raised by the next :meth:`submit` or
    by :meth:`close`, and the calls after it never run. Leaving a ``with`` block closes the
    worker, waiting for every call (or, when the block raised, dropping those not started).
    """

    def __init__(self, max_pending: int = 4, name: str = "samtrack-writer") -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: deque[Future] = deque()
        self._failed = False

    def __enter__(self) -> "InOrderWorker":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``; first wait for the oldest calls while ``max_pending`` wait."""
        self._collect(block_while_over=self.max_pending - 1)
        self._pending.append(self._executor.submit(self._run, fn, args))

    def close(self) -> None:
        """Wait for every queued call; raise the first failure."""
        try:
            self._collect(block_while_over=0)
        except BaseException:
            self.abort()
            raise
        self._executor.shutdown(wait=True)

    def abort(self) -> None:
        """Drop the calls not started and wait for the running one (its failure is ignored)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()

    def _run(self, fn: Callable[..., Any], args: tuple) -> None:
        # A frame's files depend on the ones before (a video's frames, in order): after a
        # failure, nothing more is written.
        if self._failed:
            return
        try:
            fn(*args)
        except BaseException:
            self._failed = True
            raise

    def _collect(self, block_while_over: int) -> None:
        # Finished calls are collected oldest first, so a failure surfaces in order.
        while self._pending and (self._pending[0].done() or len(self._pending) > block_while_over):
            self._pending.popleft().result()
