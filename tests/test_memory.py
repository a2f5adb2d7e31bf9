"""The pipeline keeps no per-frame state: a 1,000-frame video takes no more memory than a 100-frame one.

Python-side allocations (numpy arrays included) are measured with tracemalloc while every frame's
result is consumed and dropped, as a caller streaming masks to disk does. The real-model numbers
(peak RSS of `samtrack run` at 200 and 2,000 frames) come from `python -m samtrack.eval.memory`.
"""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from samtrack.api import VideoPredictor
from samtrack.config import load_config
from samtrack.segmenters import ImageEmbedding
from samtrack.video import VideoInfo

from .fakes import COLOURS, BlobSegmenter, ColourTracker

H, W, SIZE = 48, 64, 12


class BouncingVideo:
    """A square bouncing left and right for any number of frames, drawn when read."""

    def __init__(self, n: int) -> None:
        self.info = VideoInfo(path=Path("bouncing.mp4"), n_frames=n, fps=25.0, height=H, width=W)

    def __len__(self) -> int:
        return self.info.n_frames

    def read(self, index: int) -> np.ndarray:
        span = W - SIZE - 8
        x = 4 + abs((2 * index) % (2 * span) - span)
        frame = np.full((H, W, 3), 30, np.uint8)
        frame[18 : 18 + SIZE, x : x + SIZE] = COLOURS[1]
        return frame

    def truth(self, index: int) -> np.ndarray:
        return np.all(self.read(index) == COLOURS[1], axis=-1)

    def close(self) -> None:
        pass


class GridBlobSegmenter(BlobSegmenter):
    """BlobSegmenter whose embedding is a ``[1, 3, H, W]`` grid, so re-detection runs on it too."""

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        grid = image.transpose(2, 0, 1)[None].astype(np.float32)
        return ImageEmbedding(features=grid, original_size=image.shape[:2], input_size=image.shape[:2])

    def decode(self, embedding, points=None, labels=None, box=None, mask_input=None):
        image = embedding.features[0].transpose(1, 2, 0).astype(np.uint8)
        plain = ImageEmbedding(features=image, original_size=embedding.original_size, input_size=embedding.input_size)
        return super().decode(plain, points, labels, box=box, mask_input=mask_input)


def traced_peak(n_frames: int, preset: str) -> int:
    """Peak traced bytes while streaming every frame of an ``n_frames`` video, with the object
    given mid-video so that the backward pass (spilled to disk) runs as well."""
    video = BouncingVideo(n_frames)
    predictor = VideoPredictor(load_config(preset, ["sampling.n_positive=4"]), GridBlobSegmenter(), ColourTracker())
    state = predictor.init_state(video)
    middle = n_frames // 2
    predictor.add_new_mask(state, middle, 1, video.truth(middle))
    tracemalloc.start()
    try:
        count, good = 0, 0
        for result in predictor.segment_video(state):
            count += 1
            good += bool(np.array_equal(result.mask(1), video.truth(result.frame_index)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The run must really have tracked the object, or a cheap failure would pass as lean.
    assert count == n_frames and good >= 0.95 * n_frames
    return peak


# samtrack: a 2-frame window and re-detection; sam_pt: 16-frame windows and points never re-sampled.
@pytest.mark.parametrize("preset", ["samtrack", "sam_pt"])
def test_memory_does_not_grow_with_video_length(preset):
    traced_peak(20, preset)  # first-use imports and caches are not the pipeline's state
    short, long = traced_peak(100, preset), traced_peak(1000, preset)
    # Frame-index bookkeeping grows by a few dozen bytes a frame; keeping any per-frame array
    # (a 48x64 label map is 3 KB) would add megabytes.
    assert long < short + 128 * 1024, f"100 frames: {short / 1024:.0f} KiB peak, 1000 frames: {long / 1024:.0f} KiB"
