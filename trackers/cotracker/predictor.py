"""What the official CoTracker3 predictors do around the model: frames resized to the model's
384x512 and tracks scaled back, a support grid of extra points tracked beside the queries, a
backward pass for the frames before each query, visibility thresholds, and query frames forced
to the query.

``OfflinePredictor`` tracks a clip in one go. ``OnlineSession`` takes frames one at a time,
keeps at most one window of them, and hands back each frame's tracks once the sliding window has
moved past it: memory does not grow with the video.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from .modeling.cotracker3 import CoTrackerThree, OnlineState

# The official predictors' visibility rules: offline, the visibility probability alone; online,
# visibility times confidence.
OFFLINE_THRESHOLD = 0.9
ONLINE_THRESHOLD = 0.6
# The official predictors' defaults: a 6x6 grid on frame 0 offline, none online.
OFFLINE_SUPPORT_GRID = 6
ITERS = 6


def grid_points(size: int, extent: tuple[int, int]) -> torch.Tensor:
    """``[size * size, 2]`` (x, y) points covering ``extent = (H, W)`` row by row, a margin of
    ``W / 64`` from the border (one point: the centre)."""
    h, w = extent
    if size == 1:
        return torch.tensor([[w / 2, h / 2]])
    margin = w / 64
    ys = torch.linspace(margin, h - margin, size)
    xs = torch.linspace(margin, w - margin, size)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1).reshape(-1, 2)


def support_queries(size: int, every: int, n_frames: int, extent: tuple[int, int]) -> torch.Tensor:
    """``[M, 3]`` support-grid queries: a ``size x size`` grid on frame 0, and on every
    ``every``-th frame after it when ``every > 0`` (SAM-PT's variant)."""
    if size <= 0:
        return torch.zeros(0, 3)
    grid = grid_points(size, extent)
    frames = range(0, n_frames, every) if every > 0 else [0]
    return torch.cat([torch.cat([torch.full((len(grid), 1), float(t)), grid], dim=1) for t in frames])


@dataclass
class Tracked:
    """Tracks at the caller's frame size: ``coords [B, T, N, 2]``, probabilities ``vis``/``conf``
    ``[B, T, N]`` and the thresholded ``visible [B, T, N]``."""

    coords: torch.Tensor
    vis: torch.Tensor
    conf: torch.Tensor
    visible: torch.Tensor


class _Resizer:
    """Between the caller's frame size and the model's (corner pixels map onto corner pixels)."""

    def __init__(self, size: tuple[int, int], model_size: tuple[int, int]) -> None:
        (h, w), (mh, mw) = size, model_size
        self.model_size = model_size
        self.to_model = torch.tensor([(mw - 1) / max(w - 1, 1), (mh - 1) / max(h - 1, 1)])
        self.to_input = torch.tensor([(w - 1) / max(mw - 1, 1), (h - 1) / max(mh - 1, 1)])

    def frames(self, video: torch.Tensor) -> torch.Tensor:
        b, t = video.shape[:2]
        out = F.interpolate(video.flatten(0, 1).float(), self.model_size, mode="bilinear", align_corners=True)
        return out.unflatten(0, (b, t))

    def queries(self, queries: torch.Tensor) -> torch.Tensor:
        out = queries.clone().float()
        out[..., 1:] *= self.to_model.to(out.device)
        return out


class OfflinePredictor:
    """The official offline predictor's behaviour around a :class:`CoTrackerThree` (window 60).

    Args:
        support_grid: side of the support grid tracked with the queries (0: none).
        support_grid_every: also add the grid every this many frames (0: frame 0 only).
        visibility_threshold: a point is visible where its visibility probability exceeds this.
    """

    def __init__(
        self,
        model: CoTrackerThree,
        support_grid: int = OFFLINE_SUPPORT_GRID,
        support_grid_every: int = 0,
        visibility_threshold: float = OFFLINE_THRESHOLD,
        iters: int = ITERS,
    ) -> None:
        self.model = model
        self.support_grid = support_grid
        self.support_grid_every = support_grid_every
        self.visibility_threshold = visibility_threshold
        self.iters = iters

    @torch.inference_mode()
    def __call__(self, video: torch.Tensor, queries: torch.Tensor, backward: bool = True) -> Tracked:
        """Track ``queries [B, N, 3]`` (t, x, y in pixels of ``video``) through ``video
        [B, T, 3, H, W]`` (0..255); ``backward`` also tracks each query back from its frame."""
        b, t, _, h, w = video.shape
        n = queries.shape[1]
        resize = _Resizer((h, w), self.model.model_resolution)
        frames = resize.frames(video)
        q = resize.queries(queries)
        extra = support_queries(self.support_grid, self.support_grid_every, t, self.model.model_resolution)
        q = torch.cat([q, extra.to(q)[None].expand(b, -1, -1)], dim=1)

        out = self.model(frames, q, iters=self.iters)
        coords, vis, conf = out.coords, out.vis, out.conf
        if backward:
            flipped = q.clone()
            flipped[..., 0] = t - 1 - flipped[..., 0]
            back = self.model(frames.flip(1), flipped, iters=self.iters)
            before = torch.arange(t, device=q.device)[None, :, None] < q[:, None, :, 0]
            coords = torch.where(before[..., None], back.coords.flip(1), coords)
            vis = torch.where(before, back.vis.flip(1), vis)
            conf = torch.where(before, back.conf.flip(1), conf)

        coords, vis, conf, q = coords[:, :, :n], vis[:, :, :n], conf[:, :, :n], q[:, :n]
        visible = vis > self.visibility_threshold
        coords, visible = force_queries(coords, visible, q)
        return Tracked(coords * resize.to_input.to(coords.device), vis, conf, visible)


def force_queries(coords: torch.Tensor, visible: torch.Tensor, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """On its query frame a point is at its query and visible (as the official predictor sets)."""
    coords, visible = coords.clone(), visible.clone()
    for bi in range(len(queries)):
        frames = queries[bi, :, 0].long()
        points = torch.arange(queries.shape[1], device=queries.device)
        inside = frames < coords.shape[1]
        coords[bi, frames[inside], points[inside]] = queries[bi, inside, 1:]
        visible[bi, frames[inside], points[inside]] = True
    return coords, visible


class OnlineSession:
    """Streams a video through the online model (window 16, moving by 8).

    Push frames with :meth:`push`; each call yields the frames whose tracks became final, in
    order, as ``(frame index, Tracked with T = 1)``. :meth:`finish` yields the rest. At most one
    window of (resized) frames is held.

    Queries are fixed at the start; a query on a later frame starts being tracked on that frame
    (the online model tracks forward only).
    """

    def __init__(
        self,
        model: CoTrackerThree,
        queries: torch.Tensor,
        frame_size: tuple[int, int],
        support_grid: int = 0,
        visibility_threshold: float = ONLINE_THRESHOLD,
        iters: int = ITERS,
    ) -> None:
        self.model = model
        self.iters = iters
        self.visibility_threshold = visibility_threshold
        self.resize = _Resizer(frame_size, model.model_resolution)
        self.n = queries.shape[1]
        q = self.resize.queries(queries)
        extra = support_queries(support_grid, 0, 1, model.model_resolution).to(q)
        self.queries = torch.cat([q, extra[None].expand(len(q), -1, -1)], dim=1)
        self.state = OnlineState(self.queries)
        self.frames: list[torch.Tensor] = []  # resized frames from state.start on
        self.emitted = 0

    @property
    def buffered(self) -> int:
        return len(self.frames)

    @torch.inference_mode()
    def push(self, frame: torch.Tensor) -> Iterator[tuple[int, Tracked]]:
        """Add the next frame ``[B, 3, H, W]`` (0..255)."""
        self.frames.append(self.resize.frames(frame[:, None])[:, 0])
        if len(self.frames) == self.model.window_len:
            yield from self._window(final=False)

    @torch.inference_mode()
    def finish(self) -> Iterator[tuple[int, Tracked]]:
        """The video ended: track what is left and yield every remaining frame."""
        if len(self.frames) > self.model.window_len - self.model.step or self.state.start == 0:
            if self.frames:
                yield from self._window(final=True)
        elif self.state.overlap is not None:
            # The last full window already predicted these frames.
            coords, vis, conf = self.state.overlap
            yield from self._emit(coords * self.model.stride, torch.sigmoid(vis), torch.sigmoid(conf))
        self.frames = []

    def _window(self, final: bool) -> Iterator[tuple[int, Tracked]]:
        start = self.state.start
        out = self.model.online_step(self.state, torch.stack(self.frames, dim=1), iters=self.iters)
        keep = out.coords.shape[1] if final else self.model.step
        yield from self._emit(out.coords[:, :keep], out.vis[:, :keep], out.conf[:, :keep], first=start)
        self.frames = self.frames[self.model.step:]

    def _emit(self, coords: torch.Tensor, vis: torch.Tensor, conf: torch.Tensor, first: int | None = None) -> Iterator[tuple[int, Tracked]]:
        first = self.emitted if first is None else first
        for k in range(coords.shape[1]):
            index = first + k
            if index < self.emitted:
                continue
            c, v, f = coords[:, k : k + 1, : self.n], vis[:, k : k + 1, : self.n], conf[:, k : k + 1, : self.n]
            scaled = c * self.resize.to_input.to(c.device)
            yield index, Tracked(scaled, v, f, v * f > self.visibility_threshold)
            self.emitted = index + 1
