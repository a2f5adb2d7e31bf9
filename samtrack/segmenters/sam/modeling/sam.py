"""The Segment Anything model: an image encoder, the prompt encoder and the mask decoder."""
from __future__ import annotations

import torch
from torch import nn

from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder


class Sam(nn.Module):
    """SAM's three components under the reference's attribute names (so checkpoints load).

    Pre- and post-processing (resizing, normalisation, coordinates, upscaling the masks) live in
    :mod:`samtrack.segmenters.transforms` and the segmenter plugin, not here.
    """

    def __init__(self, image_encoder: nn.Module, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    @property
    def uses_early_features(self) -> bool:
        """Whether the decoder fuses the encoder's early features (HQ-SAM)."""
        return bool(getattr(self.mask_decoder, "hq", False))

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised ``[B, 3, H, W]`` inputs -> ``[B, 256, H/16, W/16]`` embeddings."""
        return self.image_encoder(images)

    @torch.inference_mode()
    def encode_with_early(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`encode`, plus the early features the decoder fuses (None when it fuses none)."""
        if not self.uses_early_features:
            return self.image_encoder(images), None
        return self.image_encoder.forward_with_early(images)

    def forward(
        self,
        embedding: torch.Tensor,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        mask_input: torch.Tensor | None = None,
        has_mask: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None,
        image_pe: torch.Tensor | None = None,
        early_features: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All four masks for a batch of prompt sets against one embedding.

        Args:
            embedding: ``[1, C, h, w]``; ``(h, w)`` may be a crop of the square grid.
            coords: ``[B, N, 2]`` (x, y) in the encoder input's pixels, box corners included.
            labels: ``[B, N]``: 1, 0, 2, 3, or -1 (not a point).
            mask_input: ``[B, 1, 4h, 4w]`` low-res logits, or None.
            has_mask: ``[B]`` bool, which rows of ``mask_input`` are prompts (None: all).
            token_mask: ``[B, N]`` bool, False where a prompt was padded to the batch's length.
            image_pe: the prompt encoder's ``get_dense_pe(grid)``, when the caller keeps it.
            early_features: from :meth:`encode_with_early`, for a decoder that fuses them.

        Returns:
            ``[B, 4, 4h, 4w]`` low-res logits and ``[B, 4]`` predicted IoUs.
        """
        grid = tuple(embedding.shape[-2:])
        batch = coords.shape[0] if coords is not None else mask_input.shape[0]
        sparse, dense = self.prompt_encoder(coords, labels, mask_input, batch, grid, has_mask)
        if image_pe is None:
            image_pe = self.prompt_encoder.get_dense_pe(grid)
        if early_features is None:  # SAM's decoder: called as before (its ONNX export too)
            return self.mask_decoder(embedding, image_pe, sparse, dense, token_mask)
        return self.mask_decoder(embedding, image_pe, sparse, dense, token_mask, early_features)

    @torch.inference_mode()
    def decode(self, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` without autograd (what inference calls)."""
        return self(*args, **kwargs)
