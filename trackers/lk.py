"""Pyramidal Lucas-Kanade point tracker (OpenCV) with a forward-backward consistency check.

Weight-free and fast on a CPU: every frame step costs two ``cv2.calcOpticalFlowPyrLK`` calls
(forward, then backward to check the forward result) for all the points that are being tracked
through that step.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from samtrack.config import LKConfig, TrackerConfig

from . import register
from .base import Tracks, check_queries


class LucasKanadeTracker:
    """Frame-to-frame pyramidal Lucas-Kanade tracking, lost points stay lost.

    Each point is tracked forward from its query frame to the last frame and backward from its
    query frame to frame 0. Every step ``t -> t±1`` is checked by tracking the result back to
    frame ``t``; the point is lost at frame ``t±1`` when

    * OpenCV reports failure (status 0, e.g. a textureless window), or
    * the round trip misses the starting position by more than ``config.fb_threshold`` pixels
      (input pixels, whatever ``longest_side`` is), or
    * the tracked position leaves the frame.

    A lost point is invisible for the rest of that direction's sweep, because a frame-to-frame
    tracker has nothing to re-detect it with. Its position there stays at its last tracked
    position (the one closest in time to the query frame), so that it is still finite and near
    where it was last seen.

    ``confidence`` is ``exp(-e / fb_threshold)`` where ``e`` is the forward-backward error of the
    step that reached the frame: 1 on the query frame, about 0.37 at the loss threshold, and 0
    once lost.
    """

    name = "lk"
    redetects = False

    def __init__(self, config: LKConfig | None = None) -> None:
        self.config = config if config is not None else LKConfig()
        c = self.config
        self._lk_params = dict(
            winSize=(c.win_size, c.win_size),
            maxLevel=c.max_level,
            criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, c.max_iters, c.epsilon),
        )

    def track(self, frames: Sequence[np.ndarray], queries: np.ndarray) -> Tracks:
        """Track ``queries`` through ``frames``.

        Args:
            frames: ``T >= 1`` RGB uint8 frames ``[H, W, 3]``, all the same size, in time order.
            queries: float32 ``[N, 3]`` rows ``(t, x, y)``; ``t`` an integer-valued frame index,
                ``(x, y)`` in pixels of that frame. ``N`` may be 0.

        Returns:
            ``Tracks`` with float32 points ``[T, N, 2]`` in input pixels, visible ``[T, N]`` and
            confidence ``[T, N]`` (see the class docstring).
        """
        if len(frames) == 0:
            raise ValueError("frames must hold at least one frame")
        queries, query_t = check_queries(queries, len(frames))
        num_frames, num_points = len(frames), len(queries)

        points = np.zeros((num_frames, num_points, 2), np.float32)
        visible = np.zeros((num_frames, num_points), bool)
        confidence = np.zeros((num_frames, num_points), np.float32)
        columns = np.arange(num_points)
        points[query_t, columns] = queries[:, 1:]
        visible[query_t, columns] = True
        confidence[query_t, columns] = 1.0
        if num_points == 0 or num_frames == 1:
            return Tracks(points, visible, confidence)

        grays, scale = self._prepare(frames)
        size = np.array(grays[0].shape[::-1], np.float32)

        # One sweep per direction; a point joins a sweep on its query frame, so every step is a
        # single LK call (and its check) for all points on it, whatever their query frames.
        for step in (1, -1):
            order = range(num_frames) if step == 1 else range(num_frames - 1, -1, -1)
            started = np.zeros(num_points, bool)  # query frame already passed in this sweep
            alive = np.zeros(num_points, bool)
            pos = np.zeros((num_points, 2), np.float32)  # tracking-scale positions
            for t in order[:-1]:
                joining = query_t == t
                started |= joining
                alive |= joining
                pos[joining] = _to_small(queries[joining, 1:], scale)
                ids = np.flatnonzero(alive)
                err = np.zeros(num_points, np.float32)
                if ids.size:
                    new_pos, ok, fb_err = self._step(grays[t], grays[t + step], pos[ids], size, scale)
                    # Lost points keep their last tracked position.
                    pos[ids[ok]] = new_pos[ok]
                    alive[ids[~ok]] = False
                    err[ids] = fb_err
                nxt = t + step
                points[nxt, started] = _to_input(pos[started], scale)
                visible[nxt, started] = alive[started]
                confidence[nxt, started] = np.where(
                    alive[started], np.exp(-err[started] / self.config.fb_threshold), 0.0
                )
        return Tracks(points, visible, confidence)

    def _prepare(self, frames: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """Grayscale (and downscale) every frame once; returns them and the (sx, sy) scale."""
        height, width = frames[0].shape[:2]
        longest = self.config.longest_side
        factor = longest / max(height, width) if 0 < longest < max(height, width) else 1.0
        small = (max(1, round(width * factor)), max(1, round(height * factor)))
        grays = []
        for frame in frames:
            if frame.shape[:2] != (height, width):
                raise ValueError(f"all frames must be {height}x{width}, got {frame.shape[:2]}")
            gray = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
            if small != (width, height):
                gray = cv2.resize(gray, small, interpolation=cv2.INTER_AREA)
            grays.append(gray)
        return grays, np.array([small[0] / width, small[1] / height], np.float32)

    def _step(
        self, prev: np.ndarray, nxt: np.ndarray, pos: np.ndarray, size: np.ndarray, scale: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Track ``pos`` ``[K, 2]`` from ``prev`` to ``nxt`` and check it by tracking back.

        Returns the new positions ``[K, 2]``, whether each point survived ``[K]`` and the
        forward-backward error ``[K]`` in input pixels.
        """
        start = pos.reshape(-1, 1, 2)
        fwd, fwd_ok, _ = cv2.calcOpticalFlowPyrLK(prev, nxt, start, None, **self._lk_params)
        back, back_ok, _ = cv2.calcOpticalFlowPyrLK(nxt, prev, fwd, None, **self._lk_params)
        fwd, back = fwd.reshape(-1, 2), back.reshape(-1, 2)
        fb_err = np.linalg.norm((back - pos) / scale, axis=1)
        inside = np.all((fwd >= 0) & (fwd <= size - 1), axis=1)
        ok = (
            fwd_ok.ravel().astype(bool)
            & back_ok.ravel().astype(bool)
            & (fb_err <= self.config.fb_threshold)
            & inside
        )
        return fwd, ok, fb_err.astype(np.float32)


# cv2.resize maps pixel centres onto pixel centres, so it is (x + 0.5) that scales, not x.
def _to_small(xy: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return (xy + 0.5) * scale - 0.5


def _to_input(xy: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return (xy + 0.5) / scale - 0.5


@register("lk")
def _build(config: TrackerConfig, log) -> LucasKanadeTracker:
    return LucasKanadeTracker(config.lk)
