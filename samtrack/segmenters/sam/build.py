"""The builder registry: a model name -> how to build it and which weights it loads.

``build_sam(name, checkpoint)`` gives the model in eval mode, with the checkpoint's state_dict
loaded strictly (a missing, unexpected or mis-shaped tensor is an error naming it) and safely
(``torch.load(..., weights_only=True)``: a checkpoint cannot run code).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Mapping

import torch

from samtrack import torch_models, weights
from samtrack.errors import WeightsError
from samtrack.segmenters.transforms import SAM_INPUTS, InputSpec

from .modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TinyViT, TwoWayTransformer
from .modeling.efficientsam_vit import EfficientSamViT
from .modeling.efficientvit import CONFIGS as EFFICIENTVIT_CONFIGS
from .modeling.efficientvit import EfficientViTSamImageEncoder
from .modeling.repvit import REPVIT_M1, REPVIT_M2_3, RepViT

IMAGE_SIZE = 1024
EMBED_DIM = 256


@dataclass(frozen=True)
class SamEntry:
    """A registered model.

    Attributes:
        builder: makes the model with random weights.
        weights: the :mod:`samtrack.weights` registry name of its checkpoint (one state_dict file).
        inputs: how it takes frames and prompts (input size, resize, normalisation, prompt
            frame; the defaults are SAM's).
    """

    builder: Callable[[], Sam]
    weights: str
    inputs: InputSpec = SAM_INPUTS
    # segmenter.unpadded when the config leaves it null: encode frames unpadded (TinyViT, where
    # it was measured better) or padded to the square, as the official model (ViTs); never
    # unpadded where ``inputs`` takes only the square.
    unpadded: bool = True

    @property
    def checkpoint_name(self) -> str:
        """Its official checkpoint's file name (for messages)."""
        return weights.get_spec(self.weights).files[0].name


def _sam_decoder_and_prompts(
    embedding_size: int, norm_eps: float = 1e-5, variant: str = "sam", hq_early_dim: int | None = None
) -> tuple[PromptEncoder, MaskDecoder]:
    prompt_encoder = PromptEncoder(
        embed_dim=EMBED_DIM,
        image_embedding_size=(embedding_size, embedding_size),
        input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
        mask_in_chans=16,
        variant=variant,
    )
    decoder = MaskDecoder(
        transformer_dim=EMBED_DIM,
        transformer=TwoWayTransformer(depth=2, embedding_dim=EMBED_DIM, num_heads=8, mlp_dim=2048,
                                      norm_eps=norm_eps, variant=variant),
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
        variant=variant,
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


def build_efficientvit_sam(variant: str, depths: tuple[int, ...] | None = None, neck_depth: int | None = None) -> Sam:
    """EfficientViT-SAM ``l0``, ``l1``, ``l2``, ``xl0`` or ``xl1`` (mit-han-lab/efficientvit):
    an EfficientViT encoder with SAM's prompt encoder and mask decoder, every norm's eps 1e-6
    (the reference's ``set_norm_eps``; in SAM's decoder that changes its transformer's
    LayerNorms, whose default is 1e-5). ``depths``/``neck_depth`` override the released
    configuration's (reduced-depth models for the golden tests)."""
    config = EFFICIENTVIT_CONFIGS[variant]
    if depths is not None:
        config = replace(config, backbone=replace(config.backbone, depths=tuple(depths)))
    if neck_depth is not None:
        config = replace(config, neck_depth=neck_depth)
    encoder = EfficientViTSamImageEncoder(config)
    return Sam(encoder, *_sam_decoder_and_prompts(IMAGE_SIZE // 16, norm_eps=1e-6))


def build_efficientsam(embed_dim: int, num_heads: int, depth: int = 12) -> Sam:
    """EfficientSAM (yformer/EfficientSAM): its ViT encoder with the EfficientSAM variants of
    SAM's prompt encoder and mask decoder (ViT-T: 192 channels, 3 heads; ViT-S: 384, 6)."""
    encoder = EfficientSamViT(embed_dim, num_heads, depth=depth, out_chans=EMBED_DIM)
    return Sam(encoder, *_sam_decoder_and_prompts(IMAGE_SIZE // 16, variant="efficientsam"))


# EfficientViT-SAM: SAM's preprocessing at its own input size (L: 512, XL: 1024), prompts and
# masks in SAM's 1024 frame; its neck resizes every stage to a fixed 64 x 64 grid, so frames
# are always padded to the square.
def _efficientvit_inputs(size: int) -> InputSpec:
    return InputSpec(encoder_size=size, any_aspect=False)


# EfficientSAM: the frame stretched to 1024 x 1024 (its ImageNet normalisation in [0, 1] units
# is SAM's in 0-255 units), prompts padded to 6 tokens, no mask prompt, bicubic upscaling.
EFFICIENTSAM_INPUTS = InputSpec(resize="square", any_aspect=False, mask_prompts=False, prompt_length=6,
                                upscale="bicubic")

def build_repvit_sam() -> Sam:
    """RepViT-SAM: RepViT-M2.3 (Wang et al., 2023), its last stage kept at 1/16, with SAM's prompt
    encoder and mask decoder."""
    encoder = RepViT(REPVIT_M2_3, repvgg_post_bn=True, last_stride=1, fuse_stages=False, out_chans=EMBED_DIM)
    return Sam(encoder, *_sam_decoder_and_prompts(IMAGE_SIZE // 16))


def build_edgesam() -> Sam:
    """EdgeSAM: RepViT-M1 (Zhou et al., 2023) to 1/32 with its 1/16 + 1/32 stage fusion, and
    SAM's prompt encoder and mask decoder (same layout; EdgeSAM retrains their weights)."""
    encoder = RepViT(REPVIT_M1, repvgg_post_bn=False, last_stride=2, fuse_stages=True, upsample_mode="bicubic",
                     out_chans=EMBED_DIM)
    return Sam(encoder, *_sam_decoder_and_prompts(IMAGE_SIZE // 16))


REGISTRY: dict[str, SamEntry] = {
    # The official checkpoint (mobile_sam.pt) and the same weights converted from the ONNX
    # export (the only MobileSAM weights that can be fetched without GitHub).
    "mobilesam": SamEntry(build_mobilesam, weights="mobilesam"),
    "mobilesam-torch": SamEntry(build_mobilesam, weights="mobilesam-torch"),
    **{
        f"efficientvit-sam-{v}": SamEntry(
            partial(build_efficientvit_sam, v), weights=f"efficientvit-sam-{v}",
            inputs=_efficientvit_inputs(EFFICIENTVIT_CONFIGS[v].input_size))
        for v in EFFICIENTVIT_CONFIGS
    },
    "efficientsam-vitt": SamEntry(partial(build_efficientsam, 192, 3), weights="efficientsam-vitt",
                                  inputs=EFFICIENTSAM_INPUTS),
    "efficientsam-vits": SamEntry(partial(build_efficientsam, 384, 6), weights="efficientsam-vits",
                                  inputs=EFFICIENTSAM_INPUTS),
    "repvit-sam": SamEntry(build_repvit_sam, weights="repvit-sam"),
    # EdgeSAM and EdgeSAM-3x: one architecture, trained on 1 % and 3 % of SA-1B.
    "edgesam": SamEntry(build_edgesam, weights="edgesam"),
    "edgesam-3x": SamEntry(build_edgesam, weights="edgesam-3x"),
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


def get_entry(name: str) -> SamEntry:
    """The registered model ``name`` (a WeightsError listing the known names otherwise)."""
    return _entry(name)


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
    """Load a state_dict file into ``model`` strictly and without unpickling code. A checkpoint
    of another registered architecture is named as such (not as a list of mismatched keys)."""
    state = torch_models.read_state_dict(path)
    try:
        torch_models.load_state_dict(model, state, origin=str(path), what=_describe(model))
    except WeightsError:
        fits = architectures_fitting(state)
        if not fits:
            raise
        raise WeightsError(f"this is a checkpoint of {' / '.join(fits)}, not of the {_describe(model)} being built; "
                           f"choose that model (--segmenter {fits[0]})", path) from None


def architectures_fitting(state: Mapping[str, torch.Tensor]) -> list[str]:
    """The registered models whose state_dict layout (every key and shape) ``state`` has."""
    layout = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    found, seen = [], {}
    for name, entry in REGISTRY.items():
        if entry.builder not in seen:
            with torch.device("meta"):  # shapes only: no memory, no initialisation cost
                seen[entry.builder] = {k: tuple(v.shape) for k, v in entry.builder().state_dict().items()}
        if seen[entry.builder] == layout:
            found.append(name)
    return found


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
