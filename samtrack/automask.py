"""SAM's automatic mask generation ("segment everything") on any :class:`Segmenter`.

A grid of single-point prompts is decoded against the frame's embedding; each point gives SAM's
three multimask outputs, which are kept when their predicted IoU and stability score pass the
thresholds; duplicates are dropped by box non-maximum suppression (NMS); optionally the frame is
also cut into overlapping crops, each segmented on its own, and small holes and islands are
removed. The steps, knobs and defaults are those of the official ``SamAutomaticMaskGenerator``
(segment-anything), and on the same predictions it gives the same masks in the same order
(``tests/test_automask.py``, golden fixtures from ``tools/automask_reference/``).

Segmenters whose decoder gives one mask per prompt (``mobilesam-onnx`` on padded frames: SAM's
single-mask ONNX export picks, for a one-point prompt, the multimask output with the highest
predicted IoU; see :func:`~samtrack.segmenters.base.gives_all_outputs`) are
run with that one mask per point, which is said once to ``log``: a third of the official
candidates, so nested whole/part masks are found less often.

Input: an RGB uint8 ``[H, W, 3]`` frame. Output: :class:`AutoMask` records, best first.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from itertools import product
from typing import Callable

import cv2
import numpy as np

from .config import AutoMaskConfig
from .errors import ConfigError
from .segmenters import ImageEmbedding, Prompt, Segmenter
from .segmenters.base import gives_all_outputs

MASK_THRESHOLD = 0.0  # SAM's logit threshold
EDGE_TOLERANCE = 20.0  # px: a box this close to a crop edge (not the frame's) is cut by the crop


@dataclass
class AutoMask:
    """One automatic mask.

    Attributes:
        segmentation: bool ``[H, W]`` at the frame's size.
        area: its pixel count.
        bbox: ``[x, y, w, h]`` of its tight box, in SAM's convention (``w = x1 - x0`` between
            the first and last pixel columns, so a one-pixel-wide mask has ``w = 0``).
        predicted_iou: the decoder's predicted IoU.
        point: ``[x, y]`` of the grid point that prompted it, in frame pixels.
        stability_score: IoU of the logits thresholded at ``+offset`` and ``-offset``.
        crop_box: ``[x, y, w, h]`` of the crop it was found in.
    """

    segmentation: np.ndarray
    area: int
    bbox: list[int]
    predicted_iou: float
    point: list[float]
    stability_score: float
    crop_box: list[int]


# -- the geometry of grids and crops ----------------------------------------------------------

def point_grid(n_per_side: int) -> np.ndarray:
    """``[n^2, 2]`` points (x, y) in [0, 1]^2 at the centres of an n x n grid of cells, row by
    row (x fastest)."""
    # linspace (not (i + 0.5) / n) so that the values are bit for bit the official grid's
    offset = 1 / (2 * n_per_side)
    centres = np.linspace(offset, 1 - offset, n_per_side)
    xs, ys = np.meshgrid(centres, centres)
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def layer_point_grids(n_per_side: int, n_layers: int, downscale: int) -> list[np.ndarray]:
    """One grid per crop layer: layer i has ``int(n_per_side / downscale**i)`` points per side."""
    return [point_grid(int(n_per_side / downscale**i)) for i in range(n_layers + 1)]


def crop_boxes(size: tuple[int, int], n_layers: int, overlap_ratio: float) -> list[tuple[list[int], int]]:
    """``(box, layer)`` pairs, ``box = [x0, y0, x1, y1]``: the whole frame (layer 0), then for
    layer i a 2^i x 2^i grid of crops overlapping by ``overlap_ratio`` of the short side x 2/2^i,
    ordered by x0 then y0."""
    height, width = size
    out = [([0, 0, width, height], 0)]
    for layer in range(1, n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * min(height, width) * (2 / per_side))
        crop_w = int(math.ceil((overlap * (per_side - 1) + width) / per_side))
        crop_h = int(math.ceil((overlap * (per_side - 1) + height) / per_side))
        xs = [int((crop_w - overlap) * i) for i in range(per_side)]
        ys = [int((crop_h - overlap) * i) for i in range(per_side)]
        for x0, y0 in product(xs, ys):
            out.append(([x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)], layer))
    return out


# -- mask measures ----------------------------------------------------------------------------

def stability_score(logits: np.ndarray, threshold: float, offset: float) -> np.ndarray:
    """float32 ``[N]``: for ``[N, H, W]`` logits, |logits > t + offset| / |logits > t - offset|
    (float32 division as in SAM; 0/0 gives NaN, which no threshold passes)."""
    high = np.count_nonzero(logits > threshold + offset, axis=(-2, -1)).astype(np.float32)
    low = np.count_nonzero(logits > threshold - offset, axis=(-2, -1)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        return high / low


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """int64 ``[N, 4]`` boxes ``(x0, y0, x1, y1)`` of the first and last foreground column and
    row of each ``[N, H, W]`` mask (inclusive); ``0, 0, 0, 0`` for an empty mask."""
    boxes = np.zeros((len(masks), 4), np.int64)
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    for i in range(len(masks)):
        ys, xs = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
        if len(xs) and len(ys):
            boxes[i] = (xs[0], ys[0], xs[-1], ys[-1])
    return boxes


def box_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, highest score first: a box is dropped when its
    IoU with a kept one is above ``iou_threshold``. As torchvision's ``nms``: box area is
    ``(x1 - x0) * (y1 - y0)`` in float32, IoU in float32, compared in float64. Ties in score keep
    the input order (torchvision leaves their order to its sort)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    x0, y0, x1, y1 = boxes.T
    areas = (x1 - x0) * (y1 - y0)
    suppressed = np.zeros(len(boxes), bool)
    keep = []
    for rank, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[rank + 1:]
        rest = rest[~suppressed[rest]]
        if not len(rest):
            continue
        w = np.maximum(np.float32(0), np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]))
        h = np.maximum(np.float32(0), np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]))
        inter = w * h
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = inter / (areas[i] + areas[rest] - inter)
        # NaN (two empty boxes) suppresses nothing, as in torchvision
        suppressed[rest[iou.astype(np.float64) > iou_threshold]] = True
    return np.asarray(keep, np.int64)


def remove_small_regions(mask: np.ndarray, min_area: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or drop islands (``"islands"``) under ``min_area`` pixels
    (8-connected components, OpenCV); returns the mask and whether it changed. An ``islands``
    pass that would empty the mask keeps its largest component."""
    holes = mode == "holes"
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be holes or islands, got {mode!r}")
    # Holes are the components of the background: work on the inverted mask for them.
    working = (mask != holes).astype(np.uint8)
    n_labels, regions, stats, _ = cv2.connectedComponentsWithStats(working, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    small = [i + 1 for i, s in enumerate(sizes) if s < min_area]
    if not small:
        return mask, False
    if holes:
        # the new mask: what was background of the inverted mask (the object) plus small holes
        fill = [0] + small
    else:
        fill = [i for i in range(1, n_labels) if i not in small] or [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill), True


def xyxy_to_xywh(box) -> list[int]:
    x0, y0, x1, y1 = (int(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


# -- the generator ----------------------------------------------------------------------------

@dataclass
class _Candidates:
    """The masks of one crop (or of all crops), kept in step."""

    masks: np.ndarray  # bool [N, H, W] at the frame size
    iou: np.ndarray  # float32 [N]
    stability: np.ndarray  # float32 [N]
    points: np.ndarray  # float64 [N, 2], frame pixels
    boxes: np.ndarray  # int64 [N, 4], frame pixels
    crops: np.ndarray  # int64 [N, 4]

    @classmethod
    def empty(cls, size: tuple[int, int]) -> "_Candidates":
        return cls(np.zeros((0, *size), bool), np.zeros(0, np.float32), np.zeros(0, np.float32),
                   np.zeros((0, 2)), np.zeros((0, 4), np.int64), np.zeros((0, 4), np.int64))

    def take(self, keep: np.ndarray) -> "_Candidates":
        return _Candidates(self.masks[keep], self.iou[keep], self.stability[keep], self.points[keep],
                           self.boxes[keep], self.crops[keep])

    @staticmethod
    def cat(parts: list["_Candidates"], size: tuple[int, int]) -> "_Candidates":
        if not parts:
            return _Candidates.empty(size)
        return _Candidates(*(np.concatenate([getattr(p, k) for p in parts]) for k in
                             ("masks", "iou", "stability", "points", "boxes", "crops")))


class AutoMaskGenerator:
    """Segment everything on a frame with ``segmenter``.

    Args:
        segmenter: any :class:`~samtrack.segmenters.Segmenter`; one that gives all of SAM's
            outputs (``decode_batch(..., candidates=True)``, the PyTorch ``mobilesam``) is run
            as the official generator; others with one mask per point (see the module).
        config: the knobs (:class:`~samtrack.config.AutoMaskConfig`, official defaults).
        measure: a context-manager factory timing the stages (``encoder``, ``decoder``), e.g.
            :meth:`samtrack.timing.Timings.measure`.
        log: where the one-mask-per-point notice goes.
    """

    def __init__(self, segmenter: Segmenter, config: AutoMaskConfig | None = None,
                 measure: Callable | None = None, log: Callable[[str], None] = print) -> None:
        self.segmenter = segmenter
        self.config = config or AutoMaskConfig()
        c = self.config
        if c.points_per_side < 1 or c.points_per_batch < 1 or c.crop_n_layers < 0 or c.crop_n_points_downscale_factor < 1:
            raise ConfigError("automask: points_per_side, points_per_batch and crop_n_points_downscale_factor must be "
                              ">= 1 and crop_n_layers >= 0")
        self.grids = layer_point_grids(c.points_per_side, c.crop_n_layers, c.crop_n_points_downscale_factor)
        self.measure = measure
        self.log = log
        self._multimask = gives_all_outputs(segmenter)
        if not self._multimask:
            log(f"automask: segmenter {getattr(segmenter, 'name', '?')} gives one mask per point (the best of SAM's "
                "three by predicted IoU); the official generator keeps all three (segmenter.name=mobilesam, or "
                "mobilesam-onnx on unpadded frames)")

    def generate(self, image: np.ndarray) -> list[AutoMask]:
        """The masks of an RGB uint8 ``[H, W, 3]`` frame, best first (within a crop: by
        predicted IoU)."""
        c = self.config
        size = image.shape[:2]
        boxes = crop_boxes(size, c.crop_n_layers, c.crop_overlap_ratio)
        found = _Candidates.cat([self._crop(image, box, layer) for box, layer in boxes], size)
        if len(boxes) > 1 and len(found.iou):
            # prefer masks from smaller crops
            crop_area = ((found.crops[:, 2] - found.crops[:, 0]) * (found.crops[:, 3] - found.crops[:, 1]))
            found = found.take(box_nms(found.boxes, (1 / crop_area).astype(np.float32), c.crop_nms_thresh))
        if c.min_mask_region_area > 0 and len(found.iou):
            found = self._clean_small_regions(found, c.min_mask_region_area, max(c.box_nms_thresh, c.crop_nms_thresh))
        return [
            AutoMask(segmentation=found.masks[i], area=int(np.count_nonzero(found.masks[i])),
                     bbox=xyxy_to_xywh(found.boxes[i]), predicted_iou=float(found.iou[i]),
                     point=[float(v) for v in found.points[i]], stability_score=float(found.stability[i]),
                     crop_box=xyxy_to_xywh(found.crops[i]))
            for i in range(len(found.iou))
        ]

    # -- steps --------------------------------------------------------------------------------

    def _timed(self, stage: str):
        return self.measure(stage) if self.measure is not None else contextlib.nullcontext()

    def _crop(self, image: np.ndarray, box: list[int], layer: int) -> _Candidates:
        x0, y0, x1, y1 = box
        crop = np.ascontiguousarray(image[y0:y1, x0:x1])
        with self._timed("encoder"):
            embedding = self.segmenter.encode(crop)
        points = self.grids[layer] * np.array(crop.shape[:2])[None, ::-1]
        step = self.config.points_per_batch
        size = image.shape[:2]
        found = _Candidates.cat([self._batch(embedding, points[i:i + step], box, size)
                                 for i in range(0, len(points), step)], size)
        keep = box_nms(found.boxes - np.array([x0, y0, x0, y0]), found.iou, self.config.box_nms_thresh)
        return found.take(keep)

    def _decode(self, embedding: ImageEmbedding, points: np.ndarray) -> tuple[list[np.ndarray], list[float], int]:
        """Logits and predicted IoUs of every point's masks (3 per point with multimask
        outputs, else 1), point-major; and the number per point."""
        prompts = [Prompt(points=p[None], labels=np.ones(1, np.int64)) for p in points]
        with self._timed("decoder"):
            predictions = self.segmenter.decode_batch(embedding, prompts, candidates=self._multimask)
        if self._multimask:
            # candidates: the single-mask output, then the three multimask ones
            return ([c.logits for p in predictions for c in p.candidates[1:]],
                    [c.iou for p in predictions for c in p.candidates[1:]], 3)
        return [p.logits for p in predictions], [p.iou for p in predictions], 1

    def _batch(self, embedding: ImageEmbedding, points: np.ndarray, box: list[int], size: tuple[int, int]) -> _Candidates:
        c = self.config
        logits, iou, per_point = self._decode(embedding, points)
        # float32 as SAM's tensors: the thresholds are compared at that precision
        iou = np.asarray(iou, np.float32)
        points = np.repeat(points, per_point, axis=0)
        keep = np.flatnonzero(iou > c.pred_iou_thresh) if c.pred_iou_thresh > 0 else np.arange(len(iou))
        logits = np.stack([logits[i] for i in keep]) if len(keep) else np.zeros((0, *embedding.original_size), np.float32)
        iou, points = iou[keep], points[keep]
        stability = stability_score(logits, MASK_THRESHOLD, c.stability_score_offset)
        if c.stability_score_thresh > 0:
            stable = stability >= c.stability_score_thresh
            logits, iou, points, stability = logits[stable], iou[stable], points[stable], stability[stable]
        masks = logits > MASK_THRESHOLD
        del logits
        x0, y0, x1, y1 = box
        boxes = mask_boxes(masks) + np.array([x0, y0, x0, y0])
        inside = ~_near_crop_edge(boxes, box, [0, 0, size[1], size[0]])
        masks, iou, points, stability, boxes = masks[inside], iou[inside], points[inside], stability[inside], boxes[inside]
        if (x0, y0, x1, y1) != (0, 0, size[1], size[0]):
            full = np.zeros((len(masks), *size), bool)
            full[:, y0:y1, x0:x1] = masks
            masks = full
        return _Candidates(masks, iou, stability, points + np.array([x0, y0]), boxes,
                           np.tile(np.array(box, np.int64), (len(iou), 1)))

    @staticmethod
    def _clean_small_regions(found: _Candidates, min_area: int, nms_threshold: float) -> _Candidates:
        """Fill small holes, drop small islands, then NMS again preferring unchanged masks."""
        masks, unchanged = [], []
        for mask in found.masks:
            mask, filled = remove_small_regions(mask, min_area, "holes")
            mask, cut = remove_small_regions(mask, min_area, "islands")
            masks.append(mask)
            unchanged.append(0.0 if filled or cut else 1.0)
        masks = np.stack(masks)
        boxes = mask_boxes(masks)
        keep = box_nms(boxes, np.asarray(unchanged, np.float32), nms_threshold)
        return _Candidates(masks, found.iou, found.stability, found.points, boxes, found.crops).take(keep)


def _near_crop_edge(boxes: np.ndarray, crop: list[int], frame: list[int]) -> np.ndarray:
    """bool ``[N]``: a box side within ``EDGE_TOLERANCE`` px of its crop's side but not of the
    frame's (the mask is cut by the crop, so another crop has it whole)."""
    boxes = boxes.astype(np.float32)
    near_crop = np.abs(boxes - np.asarray(crop, np.float32)) <= EDGE_TOLERANCE
    near_frame = np.abs(boxes - np.asarray(frame, np.float32)) <= EDGE_TOLERANCE
    return np.any(near_crop & ~near_frame, axis=1)
