"""Decoding options measured in the ablation but off in the presets: the area guard
(``decode.max_growth``) and the previous frame's logits as mask prompt (``decode.mask_memory``)."""
from __future__ import annotations

import numpy as np
import pytest

from samtrack.api import VideoPredictor
from samtrack.config import load_config
from samtrack.segmenters import MaskPrediction
from samtrack.trackers import Tracks

from .fakes import COLOURS, ArrayVideo, BlobSegmenter

H, W = 60, 80


class StayTracker:
    """Points stay where they are and stay visible (the object does not move)."""

    name = "stay"

    def track(self, frames, queries) -> Tracks:
        points = np.repeat(queries[None, :, 1:], len(frames), axis=0).astype(np.float32)
        return Tracks(points=points, visible=np.ones(points.shape[:2], bool))


def square_with_bar(t: int) -> np.ndarray:
    """A red square; on frames 3 and 4 a long red bar touches it, so its blob is 5x larger."""
    frame = np.full((H, W, 3), 30, np.uint8)
    frame[20:36, 10:26] = COLOURS[1]
    if t in (3, 4):
        frame[36:40, 0:80] = COLOURS[1]
    return frame


@pytest.mark.parametrize("max_growth", [2.0, 0.0])
def test_area_guard_rejects_a_mask_that_grows_onto_a_lookalike(max_growth):
    clip = ArrayVideo([square_with_bar(t) for t in range(7)])
    config = load_config("fast", ["reinit.every=1", "sampling.n_positive=4", f"decode.max_growth={max_growth}"])
    predictor = VideoPredictor(config, BlobSegmenter(), StayTracker())
    state = predictor.init_state(clip)
    square = np.zeros((H, W), bool)
    square[20:36, 10:26] = True
    predictor.add_new_mask(state, 0, 1, square)
    areas = [r.mask(1).sum() for r in predictor.propagate_in_video(state)]
    assert areas[:3] == [256] * 3 and areas[5:] == [256] * 2
    if max_growth:
        assert areas[3:5] == [256, 256]  # the last accepted mask, moved with the (still) points
    else:
        assert areas[3:5] == [256 + 320] * 2


def test_a_run_of_rejections_is_taken_as_real_growth():
    frames = [square_with_bar(0)] * 2 + [square_with_bar(3)] * 8  # the bar stays from frame 2 on
    predictor = VideoPredictor(load_config("fast", ["reinit.every=1", "sampling.n_positive=4", "decode.max_growth=2"]),
                               BlobSegmenter(), StayTracker())
    state = predictor.init_state(ArrayVideo(frames))
    predictor.add_new_mask(state, 0, 1, np.all(frames[0] == COLOURS[1], axis=-1))
    areas = [r.mask(1).sum() for r in predictor.propagate_in_video(state)]
    assert areas[2:7] == [256] * 5 and areas[7:] == [576] * 3  # 5 rejections, then accepted


class LowResSpy(BlobSegmenter):
    """Records each decode's mask prompt; returns low-res logits that name the call."""

    def __init__(self) -> None:
        self.calls: list[float | None] = []

    def decode(self, embedding, points=None, labels=None, box=None, mask_input=None) -> MaskPrediction:
        self.calls.append(None if mask_input is None else float(mask_input[0, 0]))
        plain = super().decode(embedding, points, labels, box, mask_input)
        return MaskPrediction(logits=plain.logits, iou=plain.iou, low_res_logits=np.full((256, 256), len(self.calls), np.float32))


@pytest.mark.parametrize("memory", [True, False])
def test_mask_memory_prompts_each_frame_with_the_last_frames_logits(memory):
    segmenter = LowResSpy()
    clip = ArrayVideo([square_with_bar(0)] * 4)
    config = load_config("fast", ["reinit.every=1", "sampling.n_positive=2", "sampling.n_negative=1",
                                  f"decode.mask_memory={str(memory).lower()}"])
    predictor = VideoPredictor(config, segmenter, StayTracker())
    state = predictor.init_state(clip)
    predictor.add_new_points_or_box(state, 0, 1, points=[[15, 25], [50, 50]], labels=[1, 0])
    segmenter.calls.clear()
    list(predictor.propagate_in_video(state))
    if memory:
        # Frame 0 (the clicks): two passes; every later frame: one pass prompted with the
        # previous frame's logits (those of call 2, 3, 4 of this run).
        assert segmenter.calls == [None, 1.0, 2.0, 3.0, 4.0]
    else:
        assert segmenter.calls == [None, 1.0, None, 3.0, None, 5.0, None, 7.0]


def test_a_growth_limit_that_would_reject_every_mask_is_a_config_error():
    from samtrack.errors import ConfigError

    with pytest.raises(ConfigError, match="decode.max_growth must be 0"):
        load_config("samtrack", ["decode.max_growth=0.5"])
