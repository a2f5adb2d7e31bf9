"""The segmenter protocol: encode a frame once, decode many prompts against it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass
class ImageEmbedding:
    """One encoded frame.

    Attributes:
        features: the encoder output (``[1, 256, 64, 64]`` float32 for SAM-family models).
        original_size: ``(H, W)`` of the frame that was encoded.
        input_size: ``(h, w)`` of the frame after resizing its longest side to the model's
            input size, before padding.
    """

    features: Any
    original_size: tuple[int, int]
    input_size: tuple[int, int]


@dataclass
class MaskPrediction:
    """One decoded mask.

    Attributes:
        logits: float32 ``[H, W]`` at the frame's original size; ``> 0`` is foreground.
        iou: the model's predicted IoU of this mask.
        low_res_logits: float32 ``[256, 256]``, to feed back as ``mask_input``.
    """

    logits: np.ndarray
    iou: float
    low_res_logits: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        return self.logits > 0


@runtime_checkable
class Segmenter(Protocol):
    """A promptable image segmenter in the Segment Anything mould."""

    name: str

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """Encode an RGB uint8 ``[H, W, 3]`` frame."""
        ...

    def decode(
        self,
        embedding: ImageEmbedding,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
    ) -> MaskPrediction:
        """Predict one mask.

        Args:
            embedding: from :meth:`encode`.
            points: float32 ``[N, 2]`` (x, y) in pixels of the original frame.
            labels: int ``[N]``: 1 positive, 0 negative.
            box: float32 ``[4]`` (x0, y0, x1, y1) in pixels of the original frame.
            mask_input: float32 ``[256, 256]`` low-res logits from an earlier decode.
        """
        ...
