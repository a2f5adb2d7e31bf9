"""The point-tracker protocol: what every tracker plugin takes and returns."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

import numpy as np


@dataclass
class Tracks:
    """Point tracks over a window of ``T`` frames for ``N`` query points.

    Attributes:
        points: float32 ``[T, N, 2]``, (x, y) in pixels of the frames given to the tracker.
        visible: bool ``[T, N]``; False where the point is occluded or was lost.
        confidence: optional float32 ``[T, N]`` in [0, 1], the tracker's own score for how
            sure it is that the point is visible (1 = surely visible). ``None`` when the
            tracker has none.
    """

    points: np.ndarray
    visible: np.ndarray
    confidence: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.points.ndim != 3 or self.points.shape[-1] != 2:
            raise ValueError(f"points must be [T, N, 2], got {self.points.shape}")
        if self.visible.shape != self.points.shape[:2]:
            raise ValueError(f"visible must be [T, N] = {self.points.shape[:2]}, got {self.visible.shape}")
        if self.confidence is not None and self.confidence.shape != self.visible.shape:
            raise ValueError(f"confidence must be [T, N], got {self.confidence.shape}")


@runtime_checkable
class PointTracker(Protocol):
    """Tracks query points through a window of frames.

    Implementations must accept queries on any frame of the window and track them both
    forward and backward from there. A point reported invisible on some frame may be reported
    visible again later only if the tracker can actually re-detect it (learned trackers);
    frame-to-frame trackers keep a lost point lost.
    """

    name: str
    # Whether a point reported invisible can be reported visible again (the tracker re-detects
    # it); the pipeline then keeps querying points it lost a short while ago.
    redetects: bool

    def track(self, frames: Sequence[np.ndarray], queries: np.ndarray) -> Tracks:
        """Track ``queries`` through ``frames``.

        Args:
            frames: ``T`` RGB uint8 frames ``[H, W, 3]``, all the same size, in time order.
            queries: float32 ``[N, 3]`` rows ``(t, x, y)``: ``t`` is an index into ``frames``
                (integer-valued), ``(x, y)`` is in pixels of that frame.

        Returns:
            ``Tracks`` with ``T`` rows. On its query frame a point is at its query position and
            visible.
        """
        ...


def check_queries(queries: np.ndarray, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """``queries`` as float32 ``[N, 3]`` and their integer frame indices; a ValueError when the
    shape is wrong or a frame index is not an integer in ``[0, num_frames)``."""
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != 3:
        raise ValueError(f"queries must be [N, 3] rows (t, x, y), got {queries.shape}")
    query_t = queries[:, 0].astype(np.int64)
    if np.any(query_t != queries[:, 0]) or np.any((query_t < 0) | (query_t >= num_frames)):
        raise ValueError(f"query frame indices must be integers in [0, {num_frames})")
    return queries, query_t
