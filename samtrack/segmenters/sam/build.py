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

from .modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TinyViT, TwoWayTransformer

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
    # segmenter.unpadded when the config leaves it null: encode frames unpadded (TinyViT, where
    # it was measured better) or padded to the square, as the official model (ViTs).
    unpadded: bool = True


def _sam_decoder_and_prompts(embedding_size: int, hq_early_dim: int | None = None) -> tuple[PromptEncoder, MaskDecoder]:
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
        hq_early_dim=hq_early_dim,
    )
    return prompt_encoder, decoder


def build_mobilesam(hq: bool = False) -> Sam:
    """MobileSAM: TinyViT-5M (Zhang et al., 2023) with SAM's prompt encoder and mask decoder;
    ``hq``: Light HQ-SAM, the same encoder with HQ-SAM's decoder (fusing its 160-channel stage)."""
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
    return Sam(encoder, *_sam_decoder_and_prompts(IMAGE_SIZE // 16, hq_early_dim=160 if hq else None))


# SAM's ViT encoders (embed_dim, depth, num_heads, global_attn_indexes), as the official builders.
VIT_CONFIGS: dict[str, tuple[int, int, int, tuple[int, ...]]] = {
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}


def build_sam_vit(
    embed_dim: int, depth: int, num_heads: int, global_attn_indexes: tuple[int, ...], hq: bool = False
) -> Sam:
    """SAM (Kirillov et al., 2023) with a ViT encoder; ``hq``: HQ-SAM (Ke et al., 2023), whose
    decoder fuses the first global block's output. Other sizes than :data:`VIT_CONFIGS` are
    for tests (the same code, reduced)."""
    encoder = ImageEncoderViT(
        img_size=IMAGE_SIZE,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        global_attn_indexes=global_attn_indexes,
        window_size=14,
        out_chans=EMBED_DIM,
    )
    return Sam(encoder, *_sam_decoder_and_prompts(IMAGE_SIZE // 16, hq_early_dim=embed_dim if hq else None))


def _vit(size: str, hq: bool = False) -> Callable[[], Sam]:
    return lambda: build_sam_vit(*VIT_CONFIGS[size], hq=hq)


REGISTRY: dict[str, SamEntry] = {
    # The official checkpoint (mobile_sam.pt) and the same weights converted from the ONNX
    # export (the only MobileSAM weights that can be fetched without GitHub).
    "mobilesam": SamEntry(build_mobilesam, weights="mobilesam"),
    "mobilesam-torch": SamEntry(build_mobilesam, weights="mobilesam-torch"),
    # SAM and HQ-SAM on their official checkpoints; padded to the square by default, as the
    # official model (unpadded ViT encoding is our extension, see modeling/vit.py).
    **{f"sam-vit-{s}": SamEntry(_vit(f"vit_{s}"), weights=f"sam-vit-{s}", unpadded=False) for s in "blh"},
    **{f"hq-sam-vit-{s}": SamEntry(_vit(f"vit_{s}", hq=True), weights=f"hq-sam-vit-{s}", unpadded=False) for s in "blh"},
    "light-hq-sam": SamEntry(lambda: build_mobilesam(hq=True), weights="light-hq-sam"),
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
    encoder = model.image_encoder
    if isinstance(encoder, ImageEncoderViT):
        # Names the size, so that a ViT-L checkpoint given to ViT-B says what was expected.
        kind = f"ViT ({encoder.pos_embed.shape[-1]}-wide, {len(encoder.blocks)} blocks)"
    else:
        kind = type(encoder).__name__
    return f"{kind} {'HQ-SAM' if model.uses_early_features else 'SAM'}"
