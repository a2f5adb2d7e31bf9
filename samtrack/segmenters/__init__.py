"""Segmenters: the protocol and its plugins."""
from __future__ import annotations

from ..config import SegmenterConfig
from ..errors import ConfigError
from .base import ImageEmbedding, MaskPrediction, Segmenter

__all__ = ["ImageEmbedding", "MaskPrediction", "Segmenter", "build_segmenter"]


def build_segmenter(config: SegmenterConfig, log=print) -> Segmenter:
    """Build the configured segmenter, fetching its weights on first use (told to ``log``)."""
    if config.name != "mobilesam-onnx":
        raise ConfigError(f"unknown segmenter {config.name!r}; available: mobilesam-onnx")
    from .mobilesam_onnx import MobileSamOnnx

    segmenter: Segmenter = MobileSamOnnx.from_checkpoint(config.checkpoint, threads=config.threads, log=log)
    if config.embedding_cache:
        from .cache import EmbeddingCache

        segmenter = EmbeddingCache(segmenter, config.embedding_cache)
    return segmenter
