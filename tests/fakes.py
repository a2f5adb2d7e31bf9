"""Exact stand-ins for the segmenter and the point tracker, for clips of flat coloured squares.

The segmenter returns the coloured blob under the positive points, the tracker follows each
square by its colour and reports a point visible only while it lies on that colour; so a test
built on them fails for the loop's mistakes, not a model's. Frames may have any size.
"""
from __future__ import annotations

import cv2
import numpy as np

from samtrack.segmenters import ImageEmbedding, MaskPrediction
from samtrack.segmenters.base import DecodeOneByOne
from samtrack.trackers import Tracks

COLOURS = {1: (255, 0, 0), 2: (0, 0, 255)}


class BlobSegmenter(DecodeOneByOne):
    """Returns the connected same-colour blob under the positive points (or the box centre)."""

    name = "blob"

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        return ImageEmbedding(features=image, original_size=image.shape[:2], input_size=image.shape[:2])

    def decode(self, embedding, points=None, labels=None, box=None, mask_input=None) -> MaskPrediction:
        image = embedding.features
        seeds = [] if points is None else [p for p, l in zip(points, labels) if l == 1]
        if box is not None and not seeds:
            seeds = [((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)]
        mask = np.zeros(image.shape[:2], bool)
        for x, y in seeds:
            colour = image[int(y), int(x)]
            if tuple(colour) not in COLOURS.values():
                continue
            same = np.all(image == colour, axis=-1).astype(np.uint8)
            _, labels_cc = cv2.connectedComponents(same)
            mask |= labels_cc == labels_cc[int(y), int(x)]
        logits = np.where(mask, 5.0, -5.0).astype(np.float32)
        return MaskPrediction(logits=logits, iou=0.95, low_res_logits=np.zeros((256, 256), np.float32))


class ColourTracker:
    """Moves each point with the square whose colour it starts on (found in every frame, so the
    window's direction does not matter); visible while on that colour, and lost for good after."""

    name = "colour"
    redetects = False

    def track(self, frames, queries) -> Tracks:
        n = len(queries)
        points = np.zeros((len(frames), n, 2), np.float32)
        visible = np.zeros((len(frames), n), bool)
        for j, (t, x, y) in enumerate(queries):
            t = int(t)
            colour = tuple(frames[t][int(y), int(x)])
            origin = _top_left(frames[t], colour)
            for step in (1, -1):
                lost = False
                for k in range(t, len(frames) if step == 1 else -1, step):
                    corner = _top_left(frames[k], colour)
                    if colour in COLOURS.values() and corner is not None and origin is not None:
                        points[k, j] = (x - origin[0] + corner[0], y - origin[1] + corner[1])
                    else:
                        points[k, j] = points[k - step, j] if k != t else (x, y)
                    px, py = points[k, j]
                    height, width = frames[k].shape[:2]
                    on_colour = 0 <= px < width and 0 <= py < height and tuple(frames[k][int(py), int(px)]) == colour
                    lost = lost or not on_colour
                    visible[k, j] = k == t or (on_colour if self.redetects else not lost)
        return Tracks(points=points, visible=visible)


class RedetectingColourTracker(ColourTracker):
    """A :class:`ColourTracker` that, like a learned tracker, reports a point visible again as
    soon as it lies on its colour after an occlusion."""

    name = "colour-redetect"
    redetects = True


def _top_left(frame: np.ndarray, colour: tuple) -> tuple[int, int] | None:
    ys, xs = np.nonzero(np.all(frame == colour, axis=-1))
    return (xs.min(), ys.min()) if len(xs) else None


class ArrayVideo:
    """A :class:`~samtrack.video.VideoReader` over frames held in memory."""

    def __init__(self, frames: list[np.ndarray], fps: float = 24.0) -> None:
        from pathlib import Path

        from samtrack.video import VideoInfo

        self.frames = frames
        height, width = frames[0].shape[:2]
        self.info = VideoInfo(path=Path("clip.mp4"), n_frames=len(frames), fps=fps, height=height, width=width)

    def __len__(self) -> int:
        return len(self.frames)

    def read(self, index: int) -> np.ndarray:
        return self.frames[index]

    def close(self) -> None:
        pass


def dead_pid() -> int:
    """The pid of a process that has ended (for leftovers of a killed run)."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def left_by_killed_run(folder) -> None:
    """Make ``folder`` look like a killed samtrack run's working folder: samtrack's mark with a
    process that is gone."""
    import json
    import os
    import socket

    from samtrack.outputs import OWNER_FILE

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, OWNER_FILE), "w") as f:
        json.dump({"pid": dead_pid(), "host": socket.gethostname()}, f)


def colour_clip(folder, n: int = 6):
    """``folder/frames/`` of ``n`` 60x40 PNG frames with object 1's colour square moving right
    3 px a frame, and ``folder/mask.png``, its first-frame mask; returns both paths."""
    from pathlib import Path

    from PIL import Image

    folder = Path(folder)
    frames = folder / "frames"
    frames.mkdir()
    for t in range(n):
        frame = np.full((40, 60, 3), 30, np.uint8)
        frame[10:22, 5 + 3 * t : 17 + 3 * t] = COLOURS[1]
        Image.fromarray(frame).save(frames / f"{t:05d}.png")
    mask = np.zeros((40, 60), np.uint8)
    mask[10:22, 5:17] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    return frames, folder / "mask.png"
