"""Segmenters: the protocol and its plugins."""
from __future__ import annotations

from typing import get_args

from ..config import SegmenterConfig, SegmenterName
from ..errors import ConfigError
from .backends import pick_backend
from .base import ImageEmbedding, MaskPrediction, Prompt, Segmenter

__all__ = ["ImageEmbedding", "MaskPrediction", "Prompt", "Segmenter", "build_segmenter"]


def _onnx(config: SegmenterConfig, log) -> Segmenter:
    from .mobilesam_onnx import MobileSamOnnx

    for key, default in (("device", "auto"), ("precision", "fp32")):
        if getattr(config, key) != default:
            raise ConfigError(f"segmenter.{key} applies to the PyTorch segmenters; {config.name} runs on ONNX runtimes")
    if config.unpadded and config.checkpoint is not None:
        raise ConfigError("segmenter.unpadded=true with mobilesam-onnx exports its graphs from the cached MobileSAM "
                          "weights; it cannot use segmenter.checkpoint (--checkpoint)")
    backend, why = pick_backend(config.backend)
    unpadded, padding_why = _onnx_unpadded(config)
    segmenter = MobileSamOnnx.from_checkpoint(config.checkpoint, threads=config.threads, log=log, backend=backend,
                                              unpadded=unpadded)
    log(f"segmenter {config.name}: encoder on {backend}{f' ({why})' if why else ''}, "
        f"frames {'unpadded' if unpadded else 'padded to the square'}{f' ({padding_why})' if padding_why else ''}")
    return segmenter


def _onnx_unpadded(config: SegmenterConfig) -> tuple[bool, str]:
    """Whether mobilesam-onnx encodes frames unpadded, and why when ``unpadded`` is null (auto):
    where PyTorch is installed to export the graphs once per frame size (dev J&F 0.763 against
    0.744 padded, encoder 0.6x the time on 16:9), else padded."""
    from ..torch_models import torch_installed

    # Found, not imported: with the graphs already cached a run never needs torch (190 MB resident).
    if config.unpadded and not torch_installed():
        raise ConfigError("unpadded frames with mobilesam-onnx (a one-time export of its graphs per frame size) "
                          "need PyTorch: pip install 'samtrack[torch]'")
    if config.unpadded is not None:
        return config.unpadded, ""
    if config.checkpoint is not None:
        return False, "auto: a --checkpoint pair is fixed to the square"
    if not torch_installed():
        return False, "auto: unpadded needs a one-time export per frame size with samtrack[torch]"
    return True, "auto: PyTorch is installed to export the graphs"


def _torch(config: SegmenterConfig, log) -> Segmenter:
    from .sam_torch import SamTorch

    if config.backend != "auto":
        raise ConfigError(f"segmenter.backend applies to mobilesam-onnx; {config.name} runs on PyTorch")

    return SamTorch.from_config(config, log=log)


# Segmenter name -> builder. A new model family is a module and a line here.
SEGMENTERS = {"mobilesam-onnx": _onnx, "mobilesam": _torch}
# Every other name is a model of the PyTorch SAM family (samtrack/segmenters/sam/build.py REGISTRY).
SEGMENTERS.update({name: _torch for name in get_args(SegmenterName) if name not in SEGMENTERS})


def build_segmenter(config: SegmenterConfig, log=print) -> Segmenter:
    """Build the configured segmenter, fetching its weights on first use (told to ``log``)."""
    try:
        builder = SEGMENTERS[config.name]
    except KeyError:
        raise ConfigError(f"unknown segmenter {config.name!r}; available: {', '.join(SEGMENTERS)}") from None
    segmenter = builder(config, log)
    if config.embedding_cache:
        from .cache import EmbeddingCache

        segmenter = EmbeddingCache(segmenter, config.embedding_cache)
    return segmenter
