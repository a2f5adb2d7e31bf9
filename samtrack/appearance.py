"""What an object looks like to the SAM image encoder, for checking and re-detecting its points.

Frame-to-frame trackers lose every point on fast or articulated motion, and once the points are
gone the mask is gone. The encoder's feature map is computed for every frame anyway, and its
cells are distinctive enough to tell an object from its background: keep a bank of the object's
cell features and of the background's from the frame where the object was given, then on each
frame score every cell by how much more it resembles the object than the background. Tracked
points on background-like cells are dropped, and when too few remain the best-scoring cells near
the object's last known place become new positive points.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from threadpoolctl import ThreadpoolController

from .config import RedetectConfig
from .errors import ConfigError
from .segmenters import ImageEmbedding


@dataclass
class ScoreMap:
    """Object-vs-background score per feature cell of one frame.

    Attributes:
        score: float32 ``[gh, gw]``; > 0 where a cell looks more like the object.
        cell: ``(sx, sy)`` size of a cell in pixels of the original frame.
    """

    score: np.ndarray
    cell: tuple[float, float]

    def at(self, xy: np.ndarray) -> np.ndarray:
        """Scores of the cells under points ``[N, 2]`` (x, y) in original-frame pixels."""
        gh, gw = self.score.shape
        cx = np.clip((xy[:, 0] / self.cell[0]).astype(int), 0, gw - 1)
        cy = np.clip((xy[:, 1] / self.cell[1]).astype(int), 0, gh - 1)
        return self.score[cy, cx]

    def best_near(self, centre: np.ndarray, radius: float, k: int) -> np.ndarray:
        """Centres ``[<=k, 2]`` of the k best object-like cells within ``radius`` px of ``centre``."""
        centres = self._centres()
        near = np.linalg.norm(centres - centre, axis=1) < radius
        return self._best(centres, near & (self.score.ravel() > 0), k)


    def best_around(self, mask: np.ndarray, reach: float, k: int, margin: float = 0.0) -> np.ndarray:
        """Centres ``[<=k, 2]`` of the k best cells scoring above ``margin`` whose centre lies
        outside ``mask`` (bool ``[H, W]`` of the original frame) but within ``reach`` px of it:
        where a part the mask lost would be."""
        centres = self._centres()
        height, width = mask.shape
        cx = np.clip(centres[:, 0].astype(int), 0, width - 1)
        cy = np.clip(centres[:, 1].astype(int), 0, height - 1)
        # Distances on 4x4 blocks (a block counts as mask if any pixel is): 16 times cheaper
        # than on pixels, and off by at most 3 px of a reach of dozens.
        padded = np.zeros((-(-height // 4) * 4, -(-width // 4) * 4), bool)
        padded[:height, :width] = mask
        # A row's 4 bools read as one uint32: the block test is a max over 4 rows of those.
        blocks = padded.view(np.uint32).reshape(padded.shape[0] // 4, 4, padded.shape[1] // 4).max(axis=1) > 0
        distance = 4 * cv2.distanceTransform((~blocks).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        around = ~mask[cy, cx] & (distance[cy // 4, cx // 4] <= reach) & (self.score.ravel() > margin)
        return self._best(centres, around, k)

    def worst_inside(self, mask: np.ndarray, k: int, margin: float = 0.0) -> np.ndarray:
        """Centres ``[<=k, 2]`` of the k most background-like cells scoring below ``-margin``
        that bool ``[H, W]`` ``mask`` covers by three quarters or more: background the mask
        took in (a hole it filled, a look-alike it spread onto)."""
        covered = (_coverage(mask, self.score.shape, self.cell) >= 0.75).ravel()
        flipped = ScoreMap(score=-self.score, cell=self.cell)
        return flipped._best(self._centres(), covered & (flipped.score.ravel() > margin), k)

    def mean_inside(self, mask: np.ndarray) -> float:
        """Mean score of the cells that bool ``[H, W]`` ``mask`` covers by half or more (-1 when
        it covers none): how much a candidate mask looks like the object."""
        inside = self._inside(mask)
        return float(inside.mean()) if len(inside) else -1.0

    def object_fraction(self, mask: np.ndarray) -> tuple[float, int]:
        """Of the cells that bool ``[H, W]`` ``mask`` covers by half or more, the fraction that
        look like the object (score > 0), and how many cells that is."""
        return self._fraction(self._inside(mask))

    def low_res_fraction(self, low_res: np.ndarray) -> tuple[float, int]:
        """:meth:`object_fraction` of a mask given on SAM's low-res grid (bool ``[4h, 4w]`` for
        the embedding's ``h x w`` cells, as ``low_res_logits > 0``): a cell is a 4 x 4 block of
        it, so this costs a 16th of the frame-size test and needs no upscaled mask."""
        gh, gw = self.score.shape
        blocks = low_res[: 4 * gh, : 4 * gw].reshape(gh, 4, gw, 4)
        return self._fraction(self.score[np.count_nonzero(blocks, axis=(1, 3)) >= 8])

    @staticmethod
    def _fraction(inside: np.ndarray) -> tuple[float, int]:
        return (float(np.count_nonzero(inside > 0)) / len(inside) if len(inside) else 0.0), len(inside)

    def _inside(self, mask: np.ndarray) -> np.ndarray:
        """Scores of the cells that ``mask`` covers by half or more."""
        return self.score[_coverage(mask, self.score.shape, self.cell) >= 0.5]

    def _centres(self) -> np.ndarray:
        gh, gw = self.score.shape
        gy, gx = np.mgrid[0:gh, 0:gw]
        return np.stack([(gx + 0.5) * self.cell[0], (gy + 0.5) * self.cell[1]], axis=-1).reshape(-1, 2)

    def _best(self, centres: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
        candidates = np.where(allowed, self.score.ravel(), -np.inf)
        best = np.argsort(-candidates)[:k]
        return centres[best[np.isfinite(candidates[best])]].astype(np.float32)


class AppearanceModel:
    """Feature banks of one object and of its surroundings, from the frame it was given on, and
    optionally from one recent frame (:meth:`update`)."""

    def __init__(self, embedding: ImageEmbedding, mask: np.ndarray, config: RedetectConfig, rng: np.random.Generator) -> None:
        self.config = config
        self.foreground, self.background = _banks(embedding, mask, config.bank_size, rng)
        # What score() compares with: the prompted frame's banks, then the recent ones (update).
        self._compared = (self.foreground, self.background)

    @property
    def usable(self) -> bool:
        return len(self.foreground) > 0 and len(self.background) > 0

    def update(self, embedding: ImageEmbedding, mask: np.ndarray, rng: np.random.Generator) -> None:
        """Replace the recent banks by the object's and its surroundings' look on this frame."""
        foreground, background = _banks(embedding, mask, self.config.bank_size, rng)
        if len(foreground) and len(background):
            # Joined once here, not on every frame's score().
            self._compared = (np.concatenate([self.foreground, foreground]), np.concatenate([self.background, background]))

    def score(self, embedding: ImageEmbedding) -> ScoreMap:
        """Per cell, best cosine similarity to the object banks minus best cosine similarity to
        the background banks."""
        features, (gh, gw), cell = _grid(embedding)
        # On the channel-major features as the encoder gives them, and normalised after the max
        # (the banks are unit vectors, so a cell's best match does not depend on its own length):
        # no transposed copy of the frame's features.
        flat = np.ascontiguousarray(features[:, :gh, :gw]).reshape(features.shape[0], -1)
        foreground, background = self._compared
        # One BLAS thread: OpenBLAS's workers spin for a while after a call, and on 2 cores they
        # took the cores from the decoder that runs next (10 ms more per frame for two decodes);
        # in the loop the score takes no longer on one (redetect 10-12 ms a frame either way).
        with _blas().limit(limits=1, user_api="blas"):
            score = (foreground @ flat).max(axis=0) - (background @ flat).max(axis=0)
        score /= np.linalg.norm(flat, axis=0) + 1e-6
        return ScoreMap(score=score.reshape(gh, gw).astype(np.float32, copy=False), cell=cell)


@lru_cache(maxsize=1)
def _blas() -> ThreadpoolController:
    """The process's thread pools (found once: the search walks every loaded library)."""
    return ThreadpoolController()


def _banks(embedding: ImageEmbedding, mask: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """At most ``size`` cell features of the object and ``2 * size`` of its surroundings."""
    cells, cell = _cells(embedding)
    gh, gw = cells.shape[:2]
    inside = _coverage(mask, (gh, gw), cell) > 0.6
    # Cells touching the (slightly grown) object are neither: their features mix both.
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((25, 25), np.uint8))
    outside = _coverage(grown, (gh, gw), cell) < 0.01
    return _subsample(cells[inside], size, rng), _subsample(cells[outside], 2 * size, rng)


def _grid(embedding: ImageEmbedding) -> tuple[np.ndarray, tuple[int, int], tuple[float, float]]:
    """The float32 ``[C, h, w]`` features, the ``(gh, gw)`` cells of them that cover the frame
    (the encoder's input may be padded to a square; padding cells are left out), and a cell's
    size in pixels of the original frame."""
    features = embedding.numpy()
    if features.ndim != 4:
        raise ConfigError(f"redetect needs a segmenter whose embedding is a [1, C, h, w] feature grid "
                          f"(got shape {features.shape}); set redetect.enabled=false")
    features = features[0]
    height, width = embedding.input_size
    stride = max(height, width) / features.shape[-1]
    gh, gw = int(np.ceil(height / stride)), int(np.ceil(width / stride))
    original_h, original_w = embedding.original_size
    return features, (gh, gw), (original_w / width * stride, original_h / height * stride)


def _cells(embedding: ImageEmbedding) -> tuple[np.ndarray, tuple[float, float]]:
    """Unit-length feature vectors ``[gh, gw, C]`` of the cells that cover the frame, and a
    cell's size."""
    features, (gh, gw), cell = _grid(embedding)
    cells = features[:, :gh, :gw].transpose(1, 2, 0)
    cells = cells / (np.linalg.norm(cells, axis=-1, keepdims=True) + 1e-6)
    return cells.astype(np.float32), cell


def _coverage(mask: np.ndarray, grid: tuple[int, int], cell: tuple[float, float]) -> np.ndarray:
    """Fraction of each cell covered by ``mask``."""
    gh, gw = grid
    covered = mask[: int(round(gh * cell[1])), : int(round(gw * cell[0]))].astype(np.float32)
    return cv2.resize(covered, (gw, gh), interpolation=cv2.INTER_AREA)


def _subsample(vectors: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if len(vectors) <= n:
        return vectors
    return vectors[rng.choice(len(vectors), n, replace=False)]
