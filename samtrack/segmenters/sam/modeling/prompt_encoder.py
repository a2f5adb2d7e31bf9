"""SAM's prompt encoder: points, box corners and a low-res mask into sparse and dense embeddings.

Points and box corners arrive as one token sequence with a label per token, as in SAM's ONNX
export: 1 positive, 0 negative, 2 and 3 a box's top-left and bottom-right corners, -1 "not a
point" (SAM adds one when there is no box; batched decoding pads shorter prompts with it).

``variant="efficientsam"`` gives EfficientSAM's prompt encoder (yformer/EfficientSAM,
``efficient_sam_decoder.py``): one learnt embedding per label added to the point's position
encoding, except negatives, which get none; its "invalid point" (label -1, the padding of every
prompt to its fixed length) keeps its position encoding too (SAM's replaces it), and there is
no mask prompt.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .common import LayerNorm2d
from .transformer import Variant

PAD_LABEL = -1


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of normalised (x, y) coordinates (Tancik et al., 2020)."""

    def __init__(self, num_pos_feats: int = 128, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        """``[..., 2]`` coordinates in [0, 1] -> ``[..., 2 * num_pos_feats]``."""
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def grid(self, size: tuple[int, int], crop: tuple[int, int] | None = None) -> torch.Tensor:
        """The encoding of the cell centres of a ``size = (h, w)`` grid, ``[C, h, w]``; with
        ``crop = (h', w')`` only its top-left ``h' x w'`` cells (an unpadded frame's part of the
        padded square's grid, so that its cells keep their coordinates)."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        dtype = self.positional_encoding_gaussian_matrix.dtype
        rows, cols = crop if crop is not None else size
        y = (torch.arange(rows, device=device, dtype=dtype) + 0.5) / h
        x = (torch.arange(cols, device=device, dtype=dtype) + 0.5) / w
        coords = torch.stack(torch.broadcast_tensors(x[None, :], y[:, None]), dim=-1)
        return self._encode(coords).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Encode ``[B, N, 2]`` (x, y) pixel coordinates of an ``image_size = (H, W)`` input."""
        coords = coords.clone()
        coords[..., 0] = coords[..., 0] / image_size[1]
        coords[..., 1] = coords[..., 1] / image_size[0]
        return self._encode(coords.to(self.positional_encoding_gaussian_matrix.dtype))


class PromptEncoder(nn.Module):
    """Embeds prompts for :class:`~.mask_decoder.MaskDecoder`.

    Args:
        embed_dim: the prompt embeddings' channels.
        image_embedding_size: ``(h, w)`` of the square image embedding (64 x 64 for SAM).
        input_image_size: ``(H, W)`` of the square padded encoder input (1024 x 1024).
        mask_in_chans: hidden channels of the mask downscaling.
        variant: ``sam`` or ``efficientsam`` (see the module docstring).
    """

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int = 16,
        variant: Variant = "sam",
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.variant = variant
        self.takes_masks = variant != "efficientsam"
        if variant == "efficientsam":
            self.invalid_points = nn.Embedding(1, embed_dim)
            self.point_embeddings = nn.Embedding(1, embed_dim)
            self.bbox_top_left_embeddings = nn.Embedding(1, embed_dim)
            self.bbox_bottom_right_embeddings = nn.Embedding(1, embed_dim)
            return
        # Positive, negative, box top-left, box bottom-right.
        self.num_point_embeddings = 4
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """The image embedding's positional encoding, ``[1, C, h, w]``; ``grid`` crops it to an
        unpadded embedding's ``(h, w)``."""
        return self.pe_layer.grid(self.image_embedding_size, crop=grid)[None]

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``[B, N, 2]`` (x, y) in input pixels and ``[B, N]`` labels -> ``[B, N, C]``."""
        embedding = self.pe_layer.forward_with_coords(coords + 0.5, self.input_image_size)  # pixel centres
        if self.variant == "efficientsam":
            tables = ((-1, self.invalid_points), (1, self.point_embeddings), (2, self.bbox_top_left_embeddings),
                      (3, self.bbox_bottom_right_embeddings))
            for label, table in tables:
                embedding = embedding + (labels == label)[..., None].to(embedding.dtype) * table.weight
            return embedding
        embedding = torch.where((labels == PAD_LABEL)[..., None], self.not_a_point_embed.weight, embedding)
        for label, table in enumerate(self.point_embeddings):
            # Label 0 is a negative point and uses the first table, 1 the second, 2/3 box corners.
            embedding = embedding + (labels == label)[..., None].to(embedding.dtype) * table.weight
        return embedding

    def embed_mask(
        self, masks: torch.Tensor | None, batch: int, grid: tuple[int, int], has_mask: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Dense embeddings ``[B, C, h, w]``: of ``masks`` ``[B, 1, 4h, 4w]`` low-res logits, or
        the learnt "no mask" embedding; ``has_mask`` ``[B]`` mixes the two in one batch. None for
        a model without mask prompts (EfficientSAM)."""
        if not self.takes_masks:
            if masks is not None:
                raise ValueError(f"this {self.variant} prompt encoder takes no mask prompt")
            return None
        no_mask = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, *grid)
        if masks is None:
            return no_mask
        dense = self.mask_downscaling(masks)
        if has_mask is None:
            return dense
        return torch.where(has_mask[:, None, None, None], dense, no_mask)

    def forward(
        self,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        masks: torch.Tensor | None,
        batch: int,
        grid: tuple[int, int] | None = None,
        has_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Sparse ``[B, N, C]`` and dense ``[B, C, h, w]`` (or None) embeddings of a batch of prompts.

        ``coords``/``labels`` already hold box corners (labels 2, 3) and any padding token.
        """
        if coords is None:
            sparse = self.pe_layer.positional_encoding_gaussian_matrix.new_zeros((batch, 0, self.embed_dim))
        else:
            sparse = self.embed_points(coords, labels)
        dense = self.embed_mask(masks, batch, grid or self.image_embedding_size, has_mask)
        return sparse, dense
