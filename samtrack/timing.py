"""Wall-clock time per pipeline stage (encoder, tracker, decoder, sampling, io) and peak memory."""
from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator


class Timings:
    """Accumulates seconds per named stage; cheap enough to leave on in every run."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start

    def reset(self) -> None:
        self.seconds.clear()

    def per_frame(self, n_frames: int) -> dict[str, float]:
        """Milliseconds per frame for each stage."""
        return {stage: 1000.0 * s / max(n_frames, 1) for stage, s in sorted(self.seconds.items())}


class PeakMemory:
    """Peak resident memory of this process while the block runs, sampled every 20 ms.

    ``ru_maxrss`` only ever grows over a process's life, so it cannot give one sequence's peak;
    sampling /proc does (Linux; elsewhere the process-wide maximum is reported).
    """

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "PeakMemory":
        self.start_mb = self.peak_mb = _rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, _rss_mb())

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_mb = max(self.peak_mb, _rss_mb())


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
