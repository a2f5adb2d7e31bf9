"""Query points from a mask: the positive and negative prompts that SAM-PT tracks.

Points are float32 ``[k, 2]`` arrays of ``(x, y)`` pixel coordinates; every point is the integer
column/row of a distinct pixel of the region it was drawn from. Four methods, as in SAM-PT
(SysCV/sam-pt, ``sam_pt/utils/query_points.py``):

- ``random``: uniform over the region's pixels, without replacement.
- ``kmedoids``: FasterPAM medoids of a random subsample of the region's pixels, so the points
  spread over the whole object instead of clumping where it is widest.
- ``shi-tomasi``: Shi-Tomasi corners of the image inside the eroded region; corners are what a
  point tracker follows best.
- ``mixed``: SAM-PT's split of ``n // 4`` k-medoids, ``n // 3`` Shi-Tomasi and the rest random.
"""
from __future__ import annotations

from typing import get_args

import cv2
import kmedoids
import numpy as np

from .config import PointMethod, SamplingConfig

METHODS: tuple[str, ...] = get_args(PointMethod)
# Pixels around the search box that goodFeaturesToTrack reads: 3x3 gradients, 3x3 blocks and
# 3x3 non-maximum suppression need 3, plus one to spare.
_CORNER_MARGIN = 4


def sample_points(
    mask: np.ndarray,
    n: int,
    method: PointMethod,
    rng: np.random.Generator,
    image: np.ndarray | None = None,
    *,
    kmedoids_max_pixels: int = 1000,
    kmedoids_subsample: str = "random",
    erode: int = 3,
) -> np.ndarray:
    """Up to ``n`` distinct points inside a mask.

    Arguments:
      mask: bool ``[H, W]`` region to draw from.
      n: how many points to return.
      method: one of ``random``, ``kmedoids``, ``shi-tomasi``, ``mixed``.
      rng: the only source of randomness, so a given generator state gives the same points.
      image: RGB uint8 ``[H, W, 3]``; required by ``shi-tomasi`` and ``mixed``.
      kmedoids_max_pixels: k-medoids runs on at most this many mask pixels (its cost is
        quadratic in them).
      kmedoids_subsample: how those pixels are drawn, ``random`` or ``grid`` (every s-th row
        and column from a random offset: even cover of the mask).
      erode: Shi-Tomasi searches the mask eroded by this many pixels, because corners on the mask
        boundary usually belong to the background.

    Returns:
      float32 ``[k, 2]`` ``(x, y)`` pixel coordinates, ``k = min(n, mask.sum())``; ``[0, 2]``
      for an empty mask.
    """
    mask = _as_mask(mask)
    if method not in METHODS:
        raise ValueError(f"unknown point sampling method {method!r} (known: {', '.join(METHODS)})")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    gray = None
    if method in ("shi-tomasi", "mixed"):
        gray = _gray(image, mask.shape)

    if np.count_nonzero(mask) <= n:
        # Every pixel is needed: there is nothing to choose.
        return _to_xy(*np.nonzero(mask))
    if n == 0:
        return np.empty((0, 2), np.float32)
    if method == "random":
        return _random(mask, n, rng)
    if method == "kmedoids":
        return _kmedoids(mask, n, rng, kmedoids_max_pixels, kmedoids_subsample)
    if method == "shi-tomasi":
        return _shi_tomasi(mask, mask, n, rng, gray, erode)
    return _mixed(mask, n, rng, gray, kmedoids_max_pixels, erode, kmedoids_subsample)


class PointSampler:
    """Positive and negative query points for one object, as configured by ``SamplingConfig``."""

    def __init__(self, config: SamplingConfig) -> None:
        self.config = config

    def positives(self, mask: np.ndarray, image: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        """float32 ``[k, 2]`` (x, y) points inside bool ``[H, W]`` mask, ``k <= n_positive``."""
        c = self.config
        return sample_points(
            mask, c.n_positive, c.positive_method, rng, image,
            kmedoids_max_pixels=c.kmedoids_max_pixels, kmedoids_subsample=c.kmedoids_subsample, erode=c.shi_tomasi_erode,
        )

    def negatives(
        self,
        mask: np.ndarray,
        image: np.ndarray | None,
        rng: np.random.Generator,
        forbidden: np.ndarray | None = None,
    ) -> np.ndarray:
        """float32 ``[m, 2]`` (x, y) points outside ``mask`` and outside ``forbidden``.

        ``forbidden`` (bool ``[H, W]``) marks pixels no negative may land on, e.g. void labels or
        other objects. ``m <= n_negative``; ``m = 0`` when no pixel is left.
        """
        region = self.negative_region(mask, forbidden)
        c = self.config
        return sample_points(
            region, c.n_negative, c.negative_method, rng, image,
            kmedoids_max_pixels=c.kmedoids_max_pixels, kmedoids_subsample=c.kmedoids_subsample, erode=c.shi_tomasi_erode,
        )

    def negative_region(self, mask: np.ndarray, forbidden: np.ndarray | None = None) -> np.ndarray:
        """The bool ``[H, W]`` pixels that negatives are drawn from.

        ``mixed`` draws from everywhere outside the mask, exactly as SAM-PT samples its negatives
        (from the whole complement of the mask), so that the default preset stays faithful to the
        paper. The other methods draw from a band ``negative_band`` pixels wide around the mask:
        a negative is most useful where SAM is likely to leak, on the background that touches the
        object, while a medoid or a corner of the whole background would mostly land far away,
        where SAM does not segment anyway. When the band has no usable pixel (or
        ``negative_band <= 0``) they fall back to everywhere outside the mask.
        """
        mask = _as_mask(mask)
        allowed = ~mask
        if forbidden is not None:
            forbidden = _as_mask(forbidden)
            if forbidden.shape != mask.shape:
                raise ValueError(f"forbidden has shape {forbidden.shape}, mask has {mask.shape}")
            allowed &= ~forbidden
        band = self.config.negative_band
        if self.config.negative_method == "mixed" or band <= 0 or not mask.any():
            return allowed
        # Euclidean distance to the mask, only inside the mask's box grown by the band: nothing
        # further out can be within the band, and a small object's box is cheap.
        x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
        x0, y0, x1, y1 = max(x - band, 0), max(y - band, 0), x + w + band, y + h + band
        outside = np.ascontiguousarray(~mask[y0:y1, x0:x1]).view(np.uint8)
        near = np.zeros_like(mask)
        near[y0:y1, x0:x1] = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) <= band
        near &= allowed
        return near if near.any() else allowed

    def sample(self, mask: np.ndarray, image: np.ndarray | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Positives then negatives of one object.

        Returns float32 ``[N, 2]`` (x, y) points and int32 ``[N]`` labels (1 positive, 0 negative).
        Raises ``ValueError`` for an empty mask: an object with no pixels has no query points.
        """
        mask = _as_mask(mask)
        if not mask.any():
            raise ValueError("cannot sample query points from an empty mask (the object has no pixels)")
        pos = self.positives(mask, image, rng)
        if self.config.thin_points:
            thin = thin_parts(mask, self.config.thin_width)
            thin[pos[:, 1].astype(np.intp), pos[:, 0].astype(np.intp)] = False
            if thin.any():
                pos = np.concatenate([pos, sample_points(thin, self.config.thin_points, "kmedoids", rng,
                                                         kmedoids_max_pixels=self.config.kmedoids_max_pixels,
                                                         kmedoids_subsample=self.config.kmedoids_subsample)])
        neg = self.negatives(mask, image, rng)
        if self.config.hole_negatives:
            neg = np.concatenate([neg, hole_points(mask, self.config.hole_negatives, self.config.hole_min_area)])
        labels = np.concatenate([np.ones(len(pos), np.int32), np.zeros(len(neg), np.int32)])
        return np.concatenate([pos, neg]), labels


def thin_parts(mask: np.ndarray, width: int) -> np.ndarray:
    """bool ``[H, W]``: the parts of ``mask`` narrower than ``width`` pixels.

    What an opening with a ``width``-pixel disc removes, kept only in connected pieces of at
    least ``3 * width`` pixels: lines and struts are long, while the bits an opening shaves off
    a blob's corners and jagged edges are small.
    """
    mask = _as_mask(mask)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width, width))
    removed = mask & ~cv2.morphologyEx(mask.view(np.uint8), cv2.MORPH_OPEN, kernel).view(bool)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(removed.view(np.uint8), connectivity=8)
    keep = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= 3 * width)
    keep = keep[keep != 0]
    return np.isin(labels, keep) if len(keep) else np.zeros_like(mask)


def hole_points(mask: np.ndarray, k: int, min_area: int) -> np.ndarray:
    """float32 ``[<=k, 2]`` (x, y): in each of the ``k`` largest holes of ``mask`` (background
    pieces it encloses, not touching the frame's border) of at least ``min_area`` pixels, the
    pixel farthest from the mask."""
    mask = _as_mask(mask)
    count, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).view(np.uint8), connectivity=4)
    height, width = mask.shape
    x, y, w, h, area = stats.T
    enclosed = (x > 0) & (y > 0) & (x + w < width) & (y + h < height) & (area >= min_area)
    enclosed[0] = False  # label 0: the mask itself
    points = []
    for i in [i for i in np.argsort(-area) if enclosed[i]][:k]:
        # A hole is walled in by the mask, so its distances to the mask are those to its own
        # edge: measured on its box, not the frame.
        hole = (labels[y[i]:y[i] + h[i], x[i]:x[i] + w[i]] == i).astype(np.uint8)
        distance = cv2.distanceTransform(np.pad(hole, 1), cv2.DIST_L2, 3)
        row, col = np.unravel_index(np.argmax(distance), distance.shape)
        points.append((x[i] + col - 1, y[i] + row - 1))
    return np.float32(points).reshape(-1, 2)


def _as_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W], got shape {mask.shape}")
    return np.ascontiguousarray(mask, dtype=bool)


def _gray(image: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if image is None:
        raise ValueError("Shi-Tomasi point sampling needs the image")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.shape != (*shape, 3):
        raise ValueError(f"image must be uint8 [H, W, 3] with [H, W] = {tuple(shape)}, got {image.dtype} {image.shape}")
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def _to_xy(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return np.stack([cols, rows], axis=1).astype(np.float32).reshape(-1, 2)


# A region covering at least this fraction of its frame is sampled by rejection: listing its
# pixels (np.nonzero over the whole background, for a negative) costs more than the points.
_REJECTION_MIN_FILL = 0.25


def _random(region: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    flat = region.ravel()
    if n and n <= 64 and np.count_nonzero(flat) >= _REJECTION_MIN_FILL * flat.size:
        # Uniform draws over the frame, kept where they land in the region, first n distinct:
        # the same law as drawing n of the region's pixels without replacement.
        draws = rng.integers(flat.size, size=8 * n + 32)
        draws = draws[flat[draws]]
        _, first = np.unique(draws, return_index=True)
        if len(first) >= n:
            picked = draws[np.sort(first)[:n]]
            return _to_xy(*np.unravel_index(picked, region.shape))
    rows, cols = np.nonzero(region)
    pick = rng.choice(len(rows), size=min(n, len(rows)), replace=False)
    return _to_xy(rows[pick], cols[pick])


def _kmedoids(region: np.ndarray, n: int, rng: np.random.Generator, max_pixels: int, subsample: str = "random") -> np.ndarray:
    rows, cols = np.nonzero(region)
    if len(rows) <= n:
        return _to_xy(rows, cols)
    # The subsample must hold at least n pixels, or there would be fewer medoids than asked for.
    size = min(len(rows), max(max_pixels, n))
    subset = _grid_subset(rows, cols, size, n, rng) if subsample == "grid" else None
    if subset is None:
        subset = rng.choice(len(rows), size=size, replace=False)
    x = cols[subset].astype(np.float32)
    y = rows[subset].astype(np.float32)
    # In place: this n x n matrix is the costliest step after FasterPAM itself.
    diss = np.subtract.outer(x, x)
    dy = np.subtract.outer(y, y)
    diss *= diss
    dy *= dy
    diss += dy
    np.sqrt(diss, out=diss)
    # Random initialisation: FasterPAM's swaps get within about 1% of BUILD's loss from it, at
    # about half the cost (measured on DAVIS masks). One thread keeps the swap order, and so the
    # medoids, fixed for a given seed.
    result = kmedoids.fasterpam(diss, n, init="random", random_state=int(rng.integers(2**31)), n_cpu=1)
    medoids = np.asarray(result.medoids)
    return np.stack([x[medoids], y[medoids]], axis=1)


def _grid_subset(rows: np.ndarray, cols: np.ndarray, size: int, n: int, rng: np.random.Generator) -> np.ndarray | None:
    """Indices of the pixels on every s-th row and column (from a random offset), s the
    smallest stride that leaves at most about ``size`` of them; at most ``size`` (a random
    subset of the grid where an odd shape leaves more). None when under ``n`` pixels are left,
    or every pixel fits (nothing to thin out)."""
    stride = int(np.ceil(np.sqrt(len(rows) / size)))
    if stride <= 1:
        return None
    oy, ox = rng.integers(stride, size=2)
    subset = np.flatnonzero((rows % stride == oy) & (cols % stride == ox))
    if len(subset) < n:
        return None
    if len(subset) > size:
        subset = subset[rng.choice(len(subset), size=size, replace=False)]
    return subset


def _shi_tomasi(
    mask: np.ndarray, region: np.ndarray, n: int, rng: np.random.Generator, gray: np.ndarray, erode: int
) -> np.ndarray:
    """Corners inside ``region`` (a subset of ``mask``) away from ``mask``'s boundary, topped up at random.

    Erosion is skipped when it would leave fewer than ``n`` pixels, so the search region always
    holds at least ``n`` pixels (the caller ensures that ``region`` does) and the random top-up,
    drawn from it, never runs short.
    """
    search = region
    if erode > 0:
        kernel = np.ones((2 * erode + 1, 2 * erode + 1), np.uint8)
        eroded = cv2.erode(mask.view(np.uint8), kernel).view(bool) & region
        # A thin mask erodes to (almost) nothing; its corners are better than none.
        if np.count_nonzero(eroded) >= n:
            search = eroded
    corners = np.empty((0, 2), np.float32)
    x, y, w, h = cv2.boundingRect(search.view(np.uint8))
    if w > 0:
        # Only the search box and its margin affect the corners (the result is identical), so
        # the rest of the frame is not scored: a small object costs little.
        x0, y0 = max(x - _CORNER_MARGIN, 0), max(y - _CORNER_MARGIN, 0)
        x1, y1 = x + w + _CORNER_MARGIN, y + h + _CORNER_MARGIN
        # Corners at least diameter / n apart, as in SAM-PT, so that they do not all crowd onto
        # one textured patch.
        diameter = float(np.hypot(w - 1, h - 1))
        found = cv2.goodFeaturesToTrack(
            np.ascontiguousarray(gray[y0:y1, x0:x1]), maxCorners=n, qualityLevel=0.001,
            minDistance=max(diameter / n, 1.0), mask=np.ascontiguousarray(search[y0:y1, x0:x1]).view(np.uint8),
            blockSize=3, gradientSize=3,
        )
        if found is not None:
            # Without sub-pixel refinement the corners already sit on integer pixel positions.
            corners = np.rint(found.reshape(-1, 2)).astype(np.float32) + np.float32([x0, y0])
    if len(corners) < n:
        # From the searched pixels, so that the top-up also stays off the mask boundary.
        rest = search.copy()
        rest[corners[:, 1].astype(np.intp), corners[:, 0].astype(np.intp)] = False
        corners = np.concatenate([corners, _random(rest, n - len(corners), rng)])
    return corners


def _mixed(
    mask: np.ndarray, n: int, rng: np.random.Generator, gray: np.ndarray, max_pixels: int, erode: int,
    subsample: str = "random",
) -> np.ndarray:
    # SAM-PT's extract_mixed_points split; each later method skips the pixels already taken so
    # that all points stay distinct (SAM-PT itself allows duplicates across the three parts).
    n_kmedoids, n_corners = n // 4, n // 3
    points = [_kmedoids(mask, n_kmedoids, rng, max_pixels, subsample) if n_kmedoids else np.empty((0, 2), np.float32)]
    free = mask.copy()
    free[points[0][:, 1].astype(np.intp), points[0][:, 0].astype(np.intp)] = False
    if n_corners:
        points.append(_shi_tomasi(mask, free, n_corners, rng, gray, erode))
        free[points[-1][:, 1].astype(np.intp), points[-1][:, 0].astype(np.intp)] = False
    points.append(_random(free, n - n_kmedoids - n_corners, rng))
    return np.concatenate(points)
