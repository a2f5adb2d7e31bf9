"""DAVIS video segmentation measures: region similarity J, boundary accuracy F, statistics.

The definitions are those of the official DAVIS evaluator (davis2017-evaluation, which keeps
the DAVIS 2016 definitions): J is the intersection over union of two masks, F is the F-measure
of boundary pixels matched within a tolerance of ``ceil(0.008 * image diagonal)`` pixels.
Every function here works on a whole stack of frames at once.

Masks are bool (or 0/non-0) arrays ``[T, H, W]``, one frame per row, or a single ``[H, W]``
frame, in which case the result is a 0-d array.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import cv2
import numpy as np


def region_similarity(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> np.ndarray:
    """Region similarity J (Jaccard index) of ``pred`` against ``gt``, per frame.

    Args:
        gt: ground-truth masks ``[T, H, W]`` or ``[H, W]``, nonzero = object.
        pred: predicted masks, same shape.
        void: optional mask of the same shape; its pixels count in neither the intersection
            nor the union.

    Returns:
        float64 ``[T]`` (or 0-d) in [0, 1]. A frame where the union is empty (both masks
        empty outside void) scores 1: the prediction correctly says "no object".
    """
    gt, pred = _prepare(gt, pred, void)
    inter = np.count_nonzero(gt & pred, axis=(-2, -1))
    union = np.count_nonzero(gt | pred, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        j = inter / union
    return np.where(union == 0, 1.0, j)


def boundary_f(
    gt: np.ndarray,
    pred: np.ndarray,
    void: np.ndarray | None = None,
    bound_th: float = 0.008,
) -> np.ndarray:
    """Boundary accuracy F of ``pred`` against ``gt``, per frame.

    Boundaries are those of :func:`boundary_map`. A predicted boundary pixel is correct when a
    ground-truth boundary pixel lies within the tolerance disk around it (precision), and vice
    versa (recall); F is their harmonic mean.

    Args:
        gt: ground-truth masks ``[T, H, W]`` or ``[H, W]``, nonzero = object.
        pred: predicted masks, same shape.
        void: optional mask, same shape; void pixels are removed from both masks before their
            boundaries are taken (so a mask edge that runs along void is still a boundary).
        bound_th: tolerance; below 1 it is a fraction of the frame diagonal (radius
            ``ceil(bound_th * hypot(H, W))``), from 1 up it is the radius in pixels.

    Returns:
        float64 ``[T]`` (or 0-d) in [0, 1]. Both boundaries empty scores 1; exactly one empty
        scores 0 (precision or recall is 0).
    """
    gt, pred = _prepare(gt, pred, void)
    height, width = gt.shape[-2:]
    radius = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(height, width))

    gt_b = boundary_map(gt)
    pred_b = boundary_map(pred)
    # The dilations are fed by boundary pixels and read only at boundary pixels, so the box
    # around all of them gives the same counts as the whole frame at a fraction of the cost.
    window = _bounding_window(gt_b | pred_b)
    gt_b, pred_b = gt_b[window], pred_b[window]
    n_gt = np.count_nonzero(gt_b, axis=(-2, -1))
    n_pred = np.count_nonzero(pred_b, axis=(-2, -1))
    pred_hits = np.count_nonzero(pred_b & _dilate(gt_b, radius), axis=(-2, -1))
    gt_hits = np.count_nonzero(gt_b & _dilate(pred_b, radius), axis=(-2, -1))

    with np.errstate(invalid="ignore", divide="ignore"):
        # An empty boundary makes its own ratio vacuously 1; the other ratio is then 0 by
        # itself, since nothing can match an empty boundary.
        precision = np.where(n_pred == 0, 1.0, pred_hits / n_pred)
        recall = np.where(n_gt == 0, 1.0, gt_hits / n_gt)
        total = precision + recall
        return np.where(total == 0, 0.0, 2 * precision * recall / total)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary of bool masks ``[..., H, W]``, as DAVIS's ``seg2bmap`` draws it.

    A pixel is on the boundary when it differs from its right, lower or lower-right neighbour,
    i.e. the boundary sits half a pixel towards the origin from the true edge. Neighbours
    outside the image do not count: on the last row only the right neighbour is compared, on
    the last column only the lower one, and the bottom-right pixel is never a boundary.
    Consequences kept from the official code: a mask edge that runs along the image border is
    never a boundary, so a mask covering the whole frame has no boundary at all.
    The map always has the mask's size (the evaluator never uses seg2bmap's rescaling).
    """
    # "Differs from a neighbour in its 2x2 block" is "the block's max differs from its min":
    # a morphological gradient with a 2x2 kernel anchored at the top-left. OpenCV leaves
    # out-of-image pixels out of both the max and the min, which is exactly the border rule.
    mask = np.ascontiguousarray(mask, dtype=bool)
    frames = mask.view(np.uint8).reshape(-1, *mask.shape[-2:])
    bmaps = np.empty(frames.shape, dtype=bool)
    for frame, out in zip(frames, bmaps):
        out[:] = cv2.morphologyEx(frame, cv2.MORPH_GRADIENT, _BLOCK, anchor=(0, 0)) > 0
    return bmaps.reshape(mask.shape)


_BLOCK = np.ones((2, 2), np.uint8)


def disk(radius: float) -> np.ndarray:
    """Flat disk footprint, uint8, identical to ``skimage.morphology.disk(radius)``.

    Offsets run over ``arange(-radius, radius + 1)`` on both axes and a cell is in the disk
    when ``x**2 + y**2 <= radius**2``; an integer radius gives a ``(2r+1, 2r+1)`` array.
    OpenCV's ``MORPH_ELLIPSE`` is a different shape, hence this.
    """
    offsets = np.arange(-radius, radius + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).astype(np.uint8)


def _bounding_window(maps: np.ndarray) -> tuple[slice, ...]:
    """Index of the smallest box holding every True pixel of ``maps`` ``[..., H, W]`` in any
    frame (a 1x1 box when there is none)."""
    height, width = maps.shape[-2:]
    rows = np.flatnonzero(maps.any(axis=-1).reshape(-1, height).any(axis=0))
    cols = np.flatnonzero(maps.any(axis=-2).reshape(-1, width).any(axis=0))
    if rows.size == 0:
        return (Ellipsis, slice(0, 1), slice(0, 1))
    return (Ellipsis, slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))


def _dilate(bmaps: np.ndarray, radius: float) -> np.ndarray:
    """Dilate bool maps ``[..., H, W]`` with :func:`disk`, each frame on its own.

    The frames are stacked into one tall image separated by zero rows at least as high as the
    disk, so one ``cv2.dilate`` call serves them all without bleeding between frames; OpenCV
    pads the image border with a value that never wins a dilation, as the official call does.
    """
    kernel = disk(radius)
    height, width = bmaps.shape[-2:]
    flat = bmaps.reshape(-1, height, width)
    gap = kernel.shape[0]
    tall = np.zeros((flat.shape[0], height + gap, width), np.uint8)
    tall[:, :height] = flat
    grown = cv2.dilate(tall.reshape(-1, width), kernel).reshape(tall.shape)
    return grown[:, :height].astype(bool).reshape(bmaps.shape)


def _prepare(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes; return ``gt`` and ``pred`` as bool with void pixels cleared from both.

    Clearing void from both masks is all either measure needs: J then counts void in neither
    the intersection nor the union, and F takes boundaries of the cleared masks, as the
    official code does.
    """
    gt = np.asarray(gt).astype(bool, copy=False)
    pred = np.asarray(pred).astype(bool, copy=False)
    if gt.shape != pred.shape or gt.ndim not in (2, 3):
        raise ValueError(f"gt {gt.shape} and pred {pred.shape} must be the same [T, H, W] or [H, W]")
    if void is None:
        return gt, pred
    void = np.asarray(void).astype(bool, copy=False)
    if void.shape != gt.shape:
        raise ValueError(f"void {void.shape} must match the masks {gt.shape}")
    return gt & ~void, pred & ~void


class Statistics(NamedTuple):
    """Summary of one object's per-frame J or F over a sequence."""

    mean: float
    recall: float
    decay: float


def db_statistics(per_frame: np.ndarray) -> Statistics:
    """Mean, recall and decay of per-frame values ``[T]``, as the official ``db_statistics``.

    - mean: the mean, ignoring NaN.
    - recall: the fraction of frames scoring more than 0.5 (a NaN frame counts as a miss).
    - decay: mean of the first quarter minus mean of the last quarter. The quarter edges are
      ``round(linspace(1, T, 5) + 1e-10) - 1`` and each bin runs from its edge to the next edge
      inclusive, so neighbouring bins share a frame (the official scheme, kept for identical
      numbers).

    Difference from the official code: it stores the bin edges as uint8, so on sequences longer
    than 256 frames the edges wrap around and the decay is wrong (typically NaN); here they are
    plain integers and the decay is right for any length.

    An empty input gives NaN for all three.
    """
    values = np.asarray(per_frame, dtype=np.float64).ravel()
    if values.size == 0:
        return Statistics(math.nan, math.nan, math.nan)
    edges = (np.round(np.linspace(1, values.size, 5) + 1e-10) - 1).astype(np.int64)
    first = values[edges[0] : edges[1] + 1]
    last = values[edges[3] : edges[4] + 1]
    return Statistics(
        mean=float(_nanmean(values)),
        recall=float(np.mean(values > 0.5)),
        decay=float(_nanmean(first) - _nanmean(last)),
    )


def _nanmean(values: np.ndarray) -> float:
    """``np.nanmean`` that returns NaN for an all-NaN input without warning."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan
