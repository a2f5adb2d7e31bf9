"""SAM's mask decoder: four mask tokens and an IoU token, run through the two-way transformer
with the prompt tokens, become four masks (token 0 the single-mask output, tokens 1-3 the
multimask outputs) and their predicted IoUs.

``variant="efficientsam"`` gives EfficientSAM's decoder (yformer/EfficientSAM,
``efficient_sam_decoder.py``): the same tokens and transformer (in its EfficientSAM variant),
but the upscaling normalises with GroupNorm(1, C) (over channels and pixels, where SAM's
LayerNorm2d normalises each pixel), the hypernetwork and IoU heads are GELU MLPs in
:class:`~.common.StackedMLP`'s layout, and there is no dense (mask) prompt: the image embedding
goes to the transformer as it is.

HQ-SAM (Ke et al., 2023) is an option of the same decoder (``hq_early_dim``): a fifth output
token (``hf_token``, its own hypernetwork ``hf_mlp``) predicts a mask from high-resolution
features that fuse an early encoder feature map with the embedding; that mask is added to each of
SAM's four (the official decoder's output when ``hq_token_only`` is off, its default).
"""
from __future__ import annotations

import torch
from torch import nn

from ...transforms import SINGLE_MASK_MIN_TOKENS
from .common import MLP, LayerNorm2d, StackedMLP
from .transformer import TwoWayTransformer, Variant


class MaskDecoder(nn.Module):
    """Predicts masks from an image embedding and prompt embeddings.

    Args:
        transformer_dim: channels of the embeddings.
        transformer: the two-way transformer.
        num_multimask_outputs: ambiguity-aware outputs (plus the single-mask token).
        iou_head_depth, iou_head_hidden_dim: the IoU prediction MLP (its number of linear layers).
        variant: ``sam`` or ``efficientsam`` (see the module docstring).
        hq_early_dim: HQ-SAM's option: the channels of the early encoder features it fuses
            (ViT: the embedding width; Light HQ-SAM's TinyViT: 160); None for SAM's decoder.
    """

    def __init__(
        self,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        variant: Variant = "sam",
        hq_early_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.variant = variant
        self.hq = hq_early_dim is not None
        if self.hq and variant != "sam":
            raise ValueError(f"HQ-SAM's decoder option applies to SAM's decoder, not to variant={variant!r}")
        quarter, eighth = transformer_dim // 4, transformer_dim // 8
        if variant == "efficientsam":
            self.final_output_upscaling_layers = nn.ModuleList([
                nn.Sequential(nn.ConvTranspose2d(transformer_dim, quarter, kernel_size=2, stride=2),
                              nn.GroupNorm(1, quarter), nn.GELU()),
                nn.Sequential(nn.ConvTranspose2d(quarter, eighth, kernel_size=2, stride=2), nn.Identity(), nn.GELU()),
            ])
            # Its MLPs count hidden (Linear, GELU) pairs, one fewer than their linear layers.
            self.output_hypernetworks_mlps = nn.ModuleList(
                StackedMLP(transformer_dim, transformer_dim, eighth, 2) for _ in range(self.num_mask_tokens))
            self.iou_prediction_head = StackedMLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens,
                                                  iou_head_depth - 1)
            return
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, quarter, kernel_size=2, stride=2),
            LayerNorm2d(quarter),
            nn.GELU(),
            nn.ConvTranspose2d(quarter, eighth, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, eighth, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)
        if self.hq:
            d = transformer_dim
            self.hf_token = nn.Embedding(1, d)
            self.hf_mlp = MLP(d, d, d // 8, 3)
            # Early features and the embedding, both upsampled 4x to the mask features' grid.
            self.compress_vit_feat = nn.Sequential(
                nn.ConvTranspose2d(hq_early_dim, d, kernel_size=2, stride=2),
                LayerNorm2d(d),
                nn.GELU(),
                nn.ConvTranspose2d(d, d // 8, kernel_size=2, stride=2),
            )
            self.embedding_encoder = nn.Sequential(
                nn.ConvTranspose2d(d, d // 4, kernel_size=2, stride=2),
                LayerNorm2d(d // 4),
                nn.GELU(),
                nn.ConvTranspose2d(d // 4, d // 8, kernel_size=2, stride=2),
            )
            self.embedding_maskfeature = nn.Sequential(
                nn.Conv2d(d // 8, d // 4, 3, 1, 1), LayerNorm2d(d // 4), nn.GELU(), nn.Conv2d(d // 4, d // 8, 3, 1, 1)
            )

    def upscale(self, x: torch.Tensor) -> torch.Tensor:
        """The transformer's image output ``[B, C, h, w]`` -> ``[B, C/8, 4h, 4w]``."""
        if self.variant == "efficientsam":
            for layer in self.final_output_upscaling_layers:
                x = layer(x)
            return x
        return self.output_upscaling(x)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor | None,
        token_mask: torch.Tensor | None = None,
        early_features: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All four masks of ``B`` prompt sets against one image.

        Args:
            image_embeddings: ``[1, C, h, w]`` (shared by the batch) or ``[B, C, h, w]``.
            image_pe: ``[1, C, h, w]``.
            sparse_prompt_embeddings: ``[B, N, C]``.
            dense_prompt_embeddings: ``[B, C, h, w]``, or None (EfficientSAM: no dense prompt).
            token_mask: ``[B, N]`` bool, False for batch padding among the sparse tokens.
            early_features: HQ-SAM only (required there): the encoder's early features,
                ``[1, hq_early_dim, h, w]`` (or ``[B, ...]``, as ``image_embeddings``).

        Returns:
            ``(masks, iou)``: ``[B, 4, 4h, 4w]`` logits and ``[B, 4]``.
        """
        batch = sparse_prompt_embeddings.shape[0]
        if self.hq and early_features is None:
            raise ValueError("HQ-SAM's decoder needs the encoder's early features")
        extra = [self.hf_token.weight] if self.hq else []
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight, *extra], dim=0)
        tokens = torch.cat([output_tokens[None].expand(batch, -1, -1), sparse_prompt_embeddings], dim=1)
        if token_mask is not None:
            token_mask = torch.cat([token_mask.new_ones((batch, len(output_tokens))), token_mask], dim=1)
        src = image_embeddings.expand(batch, -1, -1, -1)
        if dense_prompt_embeddings is not None:
            src = src + dense_prompt_embeddings
        pos = image_pe.expand(batch, -1, -1, -1)
        _, c, h, w = src.shape
        hs, src = self.transformer(src, pos, tokens, token_mask)
        iou_out = hs[:, 0]
        mask_out = hs[:, 1 : 1 + self.num_mask_tokens]
        upscaled = self.upscale(src.transpose(1, 2).reshape(batch, c, h, w))
        hyper = torch.stack([mlp(mask_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        b, c_up, h_up, w_up = upscaled.shape
        masks = (hyper @ upscaled.reshape(b, c_up, h_up * w_up)).reshape(b, -1, h_up, w_up)
        if self.hq:
            # Per image, not per prompt: the fused features do not depend on the prompt.
            hq_features = self.embedding_encoder(image_embeddings) + self.compress_vit_feat(early_features)
            hq_up = self.embedding_maskfeature(upscaled) + hq_features
            hq_hyper = self.hf_mlp(hs[:, 1 + self.num_mask_tokens])
            hq_mask = (hq_hyper[:, None] @ hq_up.reshape(-1, c_up, h_up * w_up)).reshape(b, 1, h_up, w_up)
            masks = masks + hq_mask
        return masks, self.iou_prediction_head(iou_out)


def single_mask_choice(iou: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
    """Which of the four masks a single-mask decode returns, per row: SAM's ONNX export's rule
    (token 0 for prompts of 3+ tokens, else the multimask output with the highest IoU); the
    numpy twin is :func:`~samtrack.segmenters.transforms.single_mask_index`."""
    best_multi = iou[:, 1:].argmax(dim=1) + 1
    return torch.where(n_tokens >= SINGLE_MASK_MIN_TOKENS, torch.zeros_like(best_multi), best_multi)
