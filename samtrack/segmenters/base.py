"""The segmenter protocol: encode a frame once, decode many prompts against it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np


@dataclass
class ImageEmbedding:
    """One encoded frame.

    Attributes:
        features: the encoder output (``[1, 256, 64, 64]`` for SAM-family models; ``[1, 256,
            64, 36]``-like when a segmenter encodes frames without square padding): a NumPy
            array or the segmenter's own tensor type.
        original_size: ``(H, W)`` of the frame that was encoded.
        input_size: ``(h, w)`` of the frame after resizing its longest side to the model's
            input size, before padding, in the frame prompts and low-res masks refer to (1024
            for every SAM-family model, also where the encoder takes 512; ``(1024, 1024)`` for a
            model that stretches frames to the square).
        early_features: an early encoder feature map that the decoder fuses too (HQ-SAM:
            ``[1, C, h, w]`` on the embedding's grid); None for other models.
    """

    features: Any
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    early_features: Any = None

    def numpy(self) -> np.ndarray:
        """The features as a float32 NumPy array (copied off an accelerator if need be)."""
        return as_numpy(self.features)


def as_numpy(array: Any) -> np.ndarray:
    """A NumPy array or a torch tensor (possibly on a GPU) as a float32 NumPy array."""
    if hasattr(array, "detach"):
        array = array.detach().float().cpu().numpy()
    return np.asarray(array, dtype=np.float32)


@dataclass
class Prompt:
    """One prompt set for :meth:`Segmenter.decode_batch` (the arguments of
    :meth:`Segmenter.decode`)."""

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask_input: np.ndarray | None = None


@dataclass
class MaskPrediction:
    """One decoded mask.

    Attributes:
        logits: float32 ``[H, W]`` at the frame's original size; ``> 0`` is foreground.
        iou: the model's predicted IoU of this mask.
        low_res_logits: float32 ``[4h, 4w]`` for an ``h x w`` embedding (``[256, 256]`` for
            SAM), to feed back as ``mask_input``.
        candidates: when asked for, all of the decoder's outputs for this prompt (SAM: the
            single-mask output, then the three multimask outputs), each without candidates.
    """

    logits: np.ndarray
    iou: float
    low_res_logits: np.ndarray
    candidates: list["MaskPrediction"] | None = None

    @property
    def mask(self) -> np.ndarray:
        return self.logits > 0


class UpscaledOnRead(MaskPrediction):
    """A prediction whose full-size ``logits`` are computed from its low-res logits when first
    read: the loop reads them for one of the predictions it decodes per object and frame."""

    def __init__(self, iou: float, low_res_logits: np.ndarray, upscale: Callable[[np.ndarray], np.ndarray]) -> None:
        self._upscale = upscale
        super().__init__(logits=None, iou=iou, low_res_logits=low_res_logits)

    @property
    def logits(self) -> np.ndarray:
        if self._logits is None:
            self._logits = self._upscale(self.low_res_logits)
        return self._logits

    @logits.setter
    def logits(self, value: np.ndarray | None) -> None:
        self._logits = value


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

    def decode_batch(
        self, embedding: ImageEmbedding, prompts: Sequence[Prompt], candidates: bool = False
    ) -> list[MaskPrediction]:
        """Predict one mask per prompt set, all against the same embedding; equal to calling
        :meth:`decode` on each. With ``candidates``, every prediction also lists all the
        decoder's outputs (segmenters that cannot give them raise ``ConfigError``)."""
        ...


def gives_all_outputs(segmenter: Segmenter) -> bool:
    """Whether ``decode_batch(..., candidates=True)`` works: the segmenter gives all of SAM's
    outputs per prompt, not only the one SAM's ONNX rule picks (``all_outputs``, default no)."""
    return bool(getattr(segmenter, "all_outputs", False))


class DecodeOneByOne:
    """``decode_batch`` for segmenters whose decoder takes one prompt set per call."""

    name: str
    all_outputs = False

    def decode_batch(
        self, embedding: ImageEmbedding, prompts: Sequence[Prompt], candidates: bool = False
    ) -> list[MaskPrediction]:
        if candidates:
            from ..errors import ConfigError

            raise ConfigError(f"segmenter {self.name!r} gives one mask per prompt; multimask selection needs "
                              "segmenter.name=mobilesam (PyTorch), or mobilesam-onnx on unpadded frames")
        return [self.decode(embedding, p.points, p.labels, box=p.box, mask_input=p.mask_input) for p in prompts]
