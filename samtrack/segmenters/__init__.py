"""Segmenters: the protocol and its plugins."""
from __future__ import annotations

from .base import ImageEmbedding, MaskPrediction, Segmenter

__all__ = ["ImageEmbedding", "MaskPrediction", "Segmenter", "build_segmenter"]


def build_segmenter(name: str, checkpoint: str | None = None, threads: int | None = None, log=print) -> Segmenter:
    """Build a segmenter by registry name, fetching its weights on first use (told to ``log``)."""
    if name == "mobilesam-onnx":
        from .mobilesam_onnx import MobileSamOnnx

        return MobileSamOnnx.from_checkpoint(checkpoint, threads=threads, log=log)
    from samtrack.errors import ConfigError

    raise ConfigError(f"unknown segmenter {name!r}; available: mobilesam-onnx")
