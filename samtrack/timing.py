"""Wall-clock time per pipeline stage (encoder, tracker, decoder, sampling, io)."""
from __future__ import annotations

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

    def merge(self, other: "Timings") -> None:
        for stage, seconds in other.seconds.items():
            self.seconds[stage] += seconds

    def per_frame(self, n_frames: int) -> dict[str, float]:
        """Milliseconds per frame for each stage."""
        return {stage: 1000.0 * s / max(n_frames, 1) for stage, s in sorted(self.seconds.items())}
