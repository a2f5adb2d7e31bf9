"""CoTracker3 as a :class:`~samtrack.trackers.PointTracker`: ``cotracker3`` (offline, one pass
over the window plus one backward) and ``cotracker3-online`` (streamed through a 16-frame
sliding window, at most one window of frames held).

Our PyTorch implementation (:mod:`samtrack.trackers.cotracker`) of Meta's model, loading the
official checkpoints (CC BY-NC 4.0: non-commercial use only). Needs ``samtrack[torch]``; a GPU
makes it practical (on 2 CPU cores it runs at about a frame per second, see ``samtrack bench``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from samtrack.config import CoTrackerConfig, TrackerConfig

from . import register
from .base import Tracks, check_queries


class CoTracker3Tracker:
    """Tracks query points with a loaded CoTracker3 model.

    A query on a later frame of the window is tracked both ways: offline by a second pass over
    the time-reversed window (as the official predictor's ``backward_tracking``); online by
    streaming the reversed clip as well. Points are visible where the official rule of the mode
    says (see :class:`CoTrackerConfig`), and on their query frame. ``confidence`` is visibility
    x confidence, the two probabilities the model predicts (1 on the query frame).
    """

    redetects = True

    def __init__(self, model, online: bool, config: CoTrackerConfig, device: str = "cpu") -> None:
        from .cotracker import predictor

        self.model = model.to(device)
        self.device = device
        self.online = online
        self.name = "cotracker3-online" if online else "cotracker3"
        self.config = config
        self.iters = config.iters
        if online:
            self.support_grid = 0 if config.support_grid is None else config.support_grid
            self.threshold = predictor.ONLINE_THRESHOLD if config.visibility_threshold is None else config.visibility_threshold
        else:
            self.support_grid = predictor.OFFLINE_SUPPORT_GRID if config.support_grid is None else config.support_grid
            self.threshold = predictor.OFFLINE_THRESHOLD if config.visibility_threshold is None else config.visibility_threshold

    def track(self, frames: Sequence[np.ndarray], queries: np.ndarray) -> Tracks:
        if len(frames) == 0:
            raise ValueError("frames must hold at least one frame")
        queries, query_t = check_queries(queries, len(frames))
        t, n = len(frames), len(queries)
        if n == 0:
            return Tracks(np.zeros((t, 0, 2), np.float32), np.zeros((t, 0), bool), np.zeros((t, 0), np.float32))
        if self.online:
            coords, visible, score = self._online(frames, queries)
        else:
            coords, visible, score = self._offline(frames, queries)
        columns = np.arange(n)
        coords[query_t, columns] = queries[:, 1:]
        visible[query_t, columns] = True
        score[query_t, columns] = 1.0
        return Tracks(coords.astype(np.float32), visible, score.astype(np.float32))

    # ------------------------------------------------------------------ modes
    def _offline(self, frames: Sequence[np.ndarray], queries: np.ndarray):
        import torch

        from .cotracker.predictor import OfflinePredictor

        predictor = OfflinePredictor(self.model, self.support_grid, self.config.support_grid_every, self.threshold, self.iters)
        video = torch.from_numpy(np.stack(frames)).to(self.device).permute(0, 3, 1, 2)[None]
        q = torch.from_numpy(queries).to(self.device)[None]
        out = predictor(video, q, backward=bool((queries[:, 0] > 0).any()))
        return _numpy(out.coords), _numpy(out.visible), _numpy(out.vis * out.conf)

    def _online(self, frames: Sequence[np.ndarray], queries: np.ndarray):
        coords, visible, score = self._stream(frames, queries)
        if (queries[:, 0] > 0).any():
            # Back from each query: the clip streamed in reverse, as the offline predictor's
            # backward pass (so reversing the clip swaps the two passes exactly).
            flipped = queries.copy()
            flipped[:, 0] = len(frames) - 1 - flipped[:, 0]
            back = self._stream(frames[::-1], flipped)
            before = np.arange(len(frames))[:, None] < queries[None, :, 0]
            for now, then in zip((coords, visible, score), back):
                now[before] = then[::-1][before]
        return coords, visible, score

    def _stream(self, frames: Sequence[np.ndarray], queries: np.ndarray):
        import torch

        from .cotracker.predictor import OnlineSession

        h, w = frames[0].shape[:2]
        q = torch.from_numpy(queries).to(self.device)[None]
        session = OnlineSession(self.model, q, (h, w), self.support_grid, self.threshold, self.iters)
        t, n = len(frames), len(queries)
        coords = np.zeros((t, n, 2), np.float32)
        visible = np.zeros((t, n), bool)
        score = np.zeros((t, n), np.float32)

        def keep(results) -> None:
            for index, out in results:
                coords[index] = _numpy(out.coords)[0]
                visible[index] = _numpy(out.visible)[0]
                score[index] = _numpy(out.vis * out.conf)[0]

        for frame in frames:
            keep(session.push(torch.tensor(frame, device=self.device).permute(2, 0, 1)[None]))
        keep(session.finish())
        return coords, visible, score


def _numpy(tensor) -> np.ndarray:
    """The first (only) video of a batch as numpy."""
    return tensor[0].detach().cpu().numpy()


def _load(config: TrackerConfig, online: bool, log) -> CoTracker3Tracker:
    from samtrack.torch_models import checkpoint_choice, pick_device, require_torch

    require_torch("the cotracker3 trackers")
    from .cotracker.build import build_cotracker, cached_checkpoint

    c = config.cotracker
    name = f"cotracker3-{'online' if online else 'offline'}{'-kubric' if c.weights == 'kubric' else ''}"
    device = pick_device(c.device, key="tracker.cotracker.device")
    path, source = checkpoint_choice(c.checkpoint, lambda: cached_checkpoint(name, log=log), name, "scaled_offline.pth")
    model = build_cotracker(name, path)
    log(f"tracker {'cotracker3-online' if online else 'cotracker3'}: {source} on {device} (CC BY-NC 4.0 weights)")
    return CoTracker3Tracker(model, online, c, device)


@register("cotracker3")
def _offline(config: TrackerConfig, log) -> CoTracker3Tracker:
    return _load(config, online=False, log=log)


@register("cotracker3-online")
def _online(config: TrackerConfig, log) -> CoTracker3Tracker:
    return _load(config, online=True, log=log)
