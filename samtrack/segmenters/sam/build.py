"""The builder registry: a model name -> how to build it and which weights it loads.

``build_sam(name, checkpoint)`` gives the model in eval mode, with the checkpoint's state_dict
loaded strictly (a missing, unexpected or mis-shaped tensor is an error naming it) and safely
(``torch.load(..., weights_only=True)``: a checkpoint cannot run code).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch

from samtrack import torch_models, weights
from samtrack.errors import WeightsError

from .modeling import MaskDecoder, PromptEncoder, Sam, TinyViT, TwoWayTransformer

IMAGE_SIZE = 1024
EMBED_DIM = 256


@dataclass(frozen=True)
class SamEntry:
    """A registered model.

    Attributes:
        builder: makes the model with random weights.
        weights: the :mod:`samtrack.weights` registry name of its checkpoint (one state_dict file).
    """

    builder: Callable[[], Sam]
    weights: str


def _sam_decoder_and_prompts(embedding_size: int) -> tuple[PromptEncoder, MaskDecoder]:
    prompt_encoder = PromptEncoder(
        embed_dim=EMBED_DIM,
        image_embedding_size=(embedding_size, embedding_size),
        input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
        mask_in_chans=16,
    )
    decoder = MaskDecoder(
        transformer_dim=EMBED_DIM,
        transformer=TwoWayTransformer(depth=2, embedding_dim=EMBED_DIM, num_heads=8, mlp_dim=2048),
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return prompt_encoder, decoder


def build_mobilesam() -> Sam:
    """MobileSAM: TinyViT-5M (Zhang et al., 2023) with SAM's prompt encoder and mask decoder."""
    encoder = TinyViT(
        embed_dims=(64, 128, 160, 320),
        depths=(2, 2, 6, 2),
        num_heads=(2, 4, 5, 10),
        window_sizes=(7, 7, 14, 7),
        mlp_ratio=4.0,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        out_chans=EMBED_DIM,
    )
    return Sam(encoder, *_sam_decoder_and_prompts(IMAGE_SIZE // 16))


REGISTRY: dict[str, SamEntry] = {
    # The official checkpoint (mobile_sam.pt) and the same weights converted from the ONNX
    # export (the only MobileSAM weights that can be fetched without GitHub).
    "mobilesam": SamEntry(build_mobilesam, weights="mobilesam"),
    "mobilesam-torch": SamEntry(build_mobilesam, weights="mobilesam-torch"),
}


def cached_checkpoint(name: str, log: weights.Log = weights.log_stderr) -> Path:
    """The state_dict file of registered model ``name`` in the weights cache (fetched, or
    converted, on first use)."""
    entry = _entry(name)
    (wf,) = weights.get_spec(entry.weights).files
    return weights.resolve(entry.weights, None, log=log) / wf.name


def _entry(name: str) -> SamEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise WeightsError(f"unknown SAM model {name!r}; known: {', '.join(REGISTRY)}") from None


def build_sam(name: str, checkpoint: str | Path | None = None) -> Sam:
    """Build registered model ``name``; load ``checkpoint`` (a state_dict file) when given."""
    model = _entry(name).builder().eval()
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model


def load_checkpoint(model: Sam, path: str | Path) -> None:
    """Load a state_dict file into ``model`` strictly and without unpickling code."""
    torch_models.load_checkpoint(model, path, what=_describe(model))


def load_state_dict(model: Sam, state: Mapping[str, torch.Tensor], origin: str = "state_dict") -> None:
    """``model.load_state_dict(state, strict=True)``, with every mismatch named in one line."""
    torch_models.load_state_dict(model, state, origin, what=_describe(model))


def _describe(model: Sam) -> str:
    return f"{type(model.image_encoder).__name__} SAM"
