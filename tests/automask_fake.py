"""A fake SAM for the automatic-mask tests: deterministic multimask outputs from a point and the
image, the same for our :class:`Segmenter` protocol (:class:`FakeSegmenter`) and for the
official ``SamPredictor`` interface (:class:`FakePredictor`, used by
``tools/automask_reference/make_golden.py``). Same scores in, so the two generators must give
the same masks out.

The image's red channel // 32 is a region label. For a point the three "multimask" outputs are:
a disc around it (soft edge, so its stability varies), the point's region (with a ripple, so
some are unstable), and the region joined with a larger disc; predicted IoUs come from a hash
of the point. Scenes hold regions cut by crop edges, holes and small islands.
"""
from __future__ import annotations

import numpy as np

from samtrack.errors import ConfigError
from samtrack.segmenters import ImageEmbedding, MaskPrediction


def make_scene(height: int = 120, width: int = 160, seed: int = 0) -> np.ndarray:
    """An RGB uint8 scene: background, rectangles and ellipses, holes, 2-5 px islands."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((height, width), np.uint8)
    v, u = np.mgrid[:height, :width]
    for k in range(1, 7):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        rx, ry = rng.uniform(8, width / 3), rng.uniform(8, height / 3)
        if k % 2:
            labels[((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2 < 1] = k
        else:
            labels[(abs(u - cx) < rx) & (abs(v - cy) < ry)] = k
    for _ in range(12):  # holes (background) and islands (some region's label)
        x, y, s = rng.integers(0, width - 5), rng.integers(0, height - 5), rng.integers(2, 6)
        labels[y:y + s, x:x + s] = rng.integers(0, 7)
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = labels * 32 + 5
    image[..., 1] = rng.integers(0, 255, (height, width))
    image[..., 2] = (u * 255 // max(width - 1, 1)).astype(np.uint8)
    return image


def _hash(x: float, y: float, k: int) -> float:
    value = np.sin(x * 12.9898 + y * 78.233 + k * 37.719) * 43758.5453
    return float(value - np.floor(value))


def fake_outputs(image: np.ndarray, point) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``[3, H, W]`` logits and float32 ``[3]`` predicted IoUs for one point (x, y)."""
    x, y = (float(c) for c in np.asarray(point, np.float32).reshape(2))
    h = [_hash(x, y, k) for k in range(8)]
    height, width = image.shape[:2]
    labels = image[..., 0] // 32
    v, u = np.mgrid[:height, :width].astype(np.float32)
    d = np.sqrt((u - np.float32(x)) ** 2 + (v - np.float32(y)) ** 2)
    region = labels == labels[min(int(y), height - 1), min(int(x), width - 1)]
    disc = (np.float32(5 + 20 * h[0]) - d) * np.float32(0.05 + 0.6 * h[1])
    a = np.float32(0.8 + 2.0 * h[2])
    ripple = np.float32(0.6) * np.sin(u * np.float32(0.21) + np.float32(6 * h[3])) * np.cos(v * np.float32(0.17))
    whole = np.where(region, a, -a) + ripple
    joined = np.maximum(whole, (np.float32(30 + 40 * h[4]) - d) * np.float32(0.3))
    logits = np.stack([disc, whole, joined]).astype(np.float32)
    iou = np.array([0.80 + 0.2 * h[5], 0.84 + 0.16 * h[6], 0.75 + 0.25 * h[7]], np.float32)
    return logits, iou


class FakeSegmenter:
    """The fake on our segmenter protocol. ``multimask=False`` behaves like the ONNX decoder:
    one mask per prompt (the best multimask output by predicted IoU), no candidates."""

    def __init__(self, multimask: bool = True) -> None:
        self.name = "fake-sam" if multimask else "fake-sam-single"
        self.multimask = self.all_outputs = multimask
        self.encoded: list[tuple[int, int]] = []

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        self.encoded.append(image.shape[:2])
        return ImageEmbedding(features=image.copy(), original_size=image.shape[:2], input_size=image.shape[:2])

    def decode(self, embedding, points=None, labels=None, box=None, mask_input=None) -> MaskPrediction:
        logits, iou = fake_outputs(embedding.features, points[0])
        best = int(np.argmax(iou))
        return MaskPrediction(logits=logits[best], iou=float(iou[best]), low_res_logits=np.zeros((256, 256), np.float32))

    def decode_batch(self, embedding, prompts, candidates: bool = False) -> list[MaskPrediction]:
        if candidates and not self.multimask:
            raise ConfigError(f"segmenter {self.name!r} gives one mask per prompt")
        out = []
        for p in prompts:
            prediction = self.decode(embedding, p.points, p.labels)
            if candidates:
                logits, iou = fake_outputs(embedding.features, p.points[0])
                low = np.zeros((256, 256), np.float32)
                # the single-mask output first (never used by the generator), then the three
                prediction.candidates = [MaskPrediction(logits=logits[1], iou=0.0, low_res_logits=low)] + [
                    MaskPrediction(logits=logits[k], iou=float(iou[k]), low_res_logits=low) for k in range(3)]
            out.append(prediction)
        return out


class FakePredictor:
    """The fake behind the official ``SamPredictor`` interface that ``SamAutomaticMaskGenerator``
    calls (``set_image``, ``transform.apply_coords``, ``predict_torch``, ...). Its transform is
    the identity, so the points it sees are the frame pixels our generator hands its segmenter."""

    class _Identity:
        @staticmethod
        def apply_coords(coords, original_size):
            return coords

    def __init__(self) -> None:
        import torch
        from types import SimpleNamespace

        self.device = torch.device("cpu")
        self.model = SimpleNamespace(mask_threshold=0.0)
        self.transform = self._Identity()
        self.image = None

    def set_image(self, image: np.ndarray) -> None:
        self.image = image.copy()

    def reset_image(self) -> None:
        self.image = None

    def predict_torch(self, point_coords, point_labels, boxes=None, mask_input=None, multimask_output=True,
                      return_logits=False):
        import torch

        assert multimask_output and return_logits
        outs = [fake_outputs(self.image, p) for p in point_coords[:, 0, :].numpy()]
        masks = torch.from_numpy(np.stack([o[0] for o in outs]))
        iou = torch.from_numpy(np.stack([o[1] for o in outs]))
        return masks, iou, None
