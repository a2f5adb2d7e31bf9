"""Dense optical flow between consecutive frames (OpenCV's DIS), and what it moves: masks,
SAM's low-res logits and points.

LK follows a handful of points; a whole mask falls off the object when they drift. DIS gives a
displacement for every pixel at a few ms per 480p frame and needs no weights. The flow is
computed from the current frame back to the previous one, so that warping a previous-frame map
onto the current frame is one ``cv2.remap``; the forward flow is computed too, and a pixel
whose round trip (current -> previous -> current) misses by more than ``fb_threshold`` pixels is
marked unreliable (occluded, or the flow is wrong there).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .config import FlowConfig

if TYPE_CHECKING:
    from .segmenters import ImageEmbedding

PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


@dataclass
class FramePairFlow:
    """The flow between a previous frame and the current one, at the current frame's size.

    Attributes:
        backward: float32 ``[H, W, 2]``: for each pixel of the current frame, its (dx, dy) to
            where it was on the previous frame.
        forward: float32 ``[H, W, 2]``: for each pixel of the previous frame, its (dx, dy) to
            the current frame.
        reliable: bool ``[H, W]`` on the current frame: the round trip closes.
    """

    backward: np.ndarray
    forward: np.ndarray
    reliable: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        return self.backward.shape[:2]

    def warp_mask(self, mask: np.ndarray, close: int = 5) -> np.ndarray:
        """bool ``[H, W]``: a previous-frame mask moved onto the current frame.

        Each mask pixel is moved by the forward flow (what leaves the frame is lost), and the
        result closed with a ``close x close`` square to fill the gaps where the object
        stretches. Not a backward remap: background that the object uncovers has the
        background's backward flow, which points at where the object was, so a remap drags a
        ghost of the object behind it.
        """
        height, width = mask.shape
        ys, xs = np.nonzero(mask)
        step = self.forward[ys, xs]
        x = np.rint(xs + step[:, 0]).astype(np.intp)
        y = np.rint(ys + step[:, 1]).astype(np.intp)
        inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
        moved = np.zeros((height, width), np.uint8)
        moved[y[inside], x[inside]] = 1
        if close > 1:
            moved = cv2.morphologyEx(moved, cv2.MORPH_CLOSE, np.ones((close, close), np.uint8))
        return moved > 0

    def warp_low_res(self, low_res: np.ndarray, input_size: tuple[int, int], fill: float = 0.0) -> np.ndarray:
        """SAM's low-res logits of the previous frame (``[4gh, 4gw]``, covering the padded
        encoder input at 1/4) moved onto the current frame.

        ``input_size`` is the frame's ``(h, w)`` inside the encoder's padding. The flow is
        sampled at each low-res cell's place in the frame and scaled to low-res units; cells
        whose flow is unreliable get ``fill`` (0: SAM reads it as "unsure"), the padding keeps
        its values.
        """
        height, width = self.size
        lh, lw = low_res.shape
        # Low-res cells covering the frame (the rest is padding).
        ch, cw = min(lh, -(-input_size[0] // 4)), min(lw, -(-input_size[1] // 4))
        sx, sy = input_size[1] / width / 4, input_size[0] / height / 4  # low-res cells per frame pixel
        flow = cv2.resize(self.backward, (cw, ch), interpolation=cv2.INTER_LINEAR)
        reliable = cv2.resize(self.reliable.astype(np.float32), (cw, ch), interpolation=cv2.INTER_AREA) > 0.5
        gx, gy = _grid((ch, cw))
        map_x, map_y = gx + flow[..., 0] * sx, gy + flow[..., 1] * sy
        src = np.ascontiguousarray(low_res.astype(np.float32))
        moved = cv2.remap(src, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out = src.copy()
        out[:ch, :cw] = np.where(reliable, moved, fill)
        return out

    def move_points(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Previous-frame points ``[N, 2]`` (x, y) moved by the forward flow, and bool ``[N]``:
        whether each landed inside the frame where the flow is reliable."""
        height, width = self.size
        if not len(xy):
            return xy.astype(np.float32), np.zeros(0, bool)
        cx = np.clip(np.rint(xy[:, 0]).astype(int), 0, width - 1)
        cy = np.clip(np.rint(xy[:, 1]).astype(int), 0, height - 1)
        moved = (xy + self.forward[cy, cx]).astype(np.float32)
        mx, my = np.rint(moved[:, 0]).astype(int), np.rint(moved[:, 1]).astype(int)
        inside = (mx >= 0) & (mx < width) & (my >= 0) & (my < height)
        ok = inside.copy()
        ok[inside] = self.reliable[my[inside], mx[inside]]
        return moved, ok


class DenseFlow:
    """DIS optical flow with a forward-backward check, on frames shrunk to ``longest_side``."""

    def __init__(self, config: FlowConfig) -> None:
        self.config = config
        self._dis = cv2.DISOpticalFlow_create(PRESETS[config.preset])

    def __call__(self, previous: np.ndarray, current: np.ndarray) -> FramePairFlow:
        """The flow between two RGB uint8 ``[H, W, 3]`` frames of one size."""
        height, width = current.shape[:2]
        a, b = _gray(previous, self.config.longest_side), _gray(current, self.config.longest_side)
        backward = self._dis.calc(b, a, None)
        forward = self._dis.calc(a, b, None)
        scale = width / a.shape[1]
        # Checked where it was computed: the same test, on fewer pixels.
        reliable = consistent(backward, forward, self.config.fb_threshold / scale)
        if a.shape[:2] != (height, width):
            backward = cv2.resize(backward, (width, height), interpolation=cv2.INTER_LINEAR) * np.float32(scale)
            forward = cv2.resize(forward, (width, height), interpolation=cv2.INTER_LINEAR) * np.float32(scale)
            reliable = cv2.resize(reliable.view(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).view(bool)
        return FramePairFlow(backward=backward, forward=forward, reliable=reliable)


def consistent(backward: np.ndarray, forward: np.ndarray, threshold: float) -> np.ndarray:
    """bool ``[H, W]``: current-frame pixels whose backward flow, followed by the forward flow
    from where it lands, returns within ``threshold`` pixels."""
    gx, gy = _grid(backward.shape[:2])
    fwd = cv2.remap(forward, gx + backward[..., 0], gy + backward[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    fwd += backward
    return (fwd[..., 0] ** 2 + fwd[..., 1] ** 2) <= threshold**2


_GRIDS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _grid(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel x and y coordinates of an ``(h, w)`` frame, float32, made once per size."""
    grid = _GRIDS.get(size)
    if grid is None:
        height, width = size
        grid = _GRIDS[size] = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return grid


def mask_to_low_res(mask: np.ndarray, input_size: tuple[int, int], shape: tuple[int, int], value: float = 10.0) -> np.ndarray:
    """A bool ``[H, W]`` mask as SAM low-res logits of ``shape`` (``[4gh, 4gw]``): ``+value``
    inside, ``-value`` outside and in the padding, for a frame resized to ``input_size``."""
    lh, lw = shape
    ch, cw = min(lh, -(-input_size[0] // 4)), min(lw, -(-input_size[1] // 4))
    small = cv2.resize(mask.astype(np.float32), (cw, ch), interpolation=cv2.INTER_AREA)
    out = np.full(shape, -value, np.float32)
    out[:ch, :cw] = (2 * small - 1) * value
    return out


def mask_as_prompt(mask: np.ndarray, embedding: "ImageEmbedding", value: float = 10.0) -> np.ndarray:
    """A bool ``[H, W]`` frame mask as SAM's mask prompt for ``embedding`` (low-res logits on its
    grid: ``[4gh, 4gw]``); see :func:`mask_to_low_res`."""
    grid = embedding.features.shape[-2:]
    return mask_to_low_res(mask, embedding.input_size, (4 * grid[0], 4 * grid[1]), value)


def _gray(image: np.ndarray, longest_side: int) -> np.ndarray:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    height, width = gray.shape
    if longest_side and max(height, width) > longest_side:
        scale = longest_side / max(height, width)
        gray = cv2.resize(gray, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    return gray
