"""SAM's two-way transformer: prompt tokens and image embedding attend to each other.

Every attention whose keys are prompt tokens takes an optional ``token_mask`` (``[B, T]`` bool,
True = a real token): batched decoding pads shorter prompts, and masking the padding out of the
keys makes a padded prompt decode exactly as it would alone.

``variant="efficientsam"`` gives EfficientSAM's transformer (yformer/EfficientSAM,
``two_way_transformer.py``), which differs in two small ways: its token MLP is GELU in
:class:`~.common.StackedMLP`'s layout, and its token self-attention is always residual over
the queries with their position encoding added (SAM's first layer replaces the queries by the
attention output, and its later layers take the values without the encoding).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .common import MLPBlock, StackedMLP

# Which model's decoder layout and arithmetic (``sam``: SAM's, MobileSAM's, EfficientViT-SAM's).
Variant = Literal["sam", "efficientsam"]


class Attention(nn.Module):
    """Multi-head attention with its projections, optionally down-projecting the channels."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.internal_dim = embedding_dim // downsample_rate
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide embedding_dim // downsample_rate")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        attn = q @ k.transpose(-2, -1) / (q.shape[-1] ** 0.5)
        if key_mask is not None:
            attn = attn.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        out = torch.softmax(attn, dim=-1) @ v
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, tokens -> image cross-attention, token MLP, image -> tokens
    cross-attention; each followed by a residual and LayerNorm."""

    def __init__(
        self, embedding_dim: int, num_heads: int, mlp_dim: int, downsample_rate: int, skip_first_layer_pe: bool,
        norm_eps: float = 1e-5, variant: Variant = "sam",
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim, eps=norm_eps)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim, eps=norm_eps)
        if variant == "efficientsam":
            self.mlp = StackedMLP(embedding_dim, mlp_dim, embedding_dim, 1, nn.GELU)
        else:
            self.mlp = MLPBlock(embedding_dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(embedding_dim, eps=norm_eps)
        self.norm4 = nn.LayerNorm(embedding_dim, eps=norm_eps)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe
        self.variant = variant

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        token_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.variant == "efficientsam":
            q = queries if self.skip_first_layer_pe else queries + query_pe
            queries = q + self.self_attn(q, q, q, token_mask)
        elif self.skip_first_layer_pe:
            # The first layer's queries are the prompt embeddings themselves (they carry the PE).
            queries = self.self_attn(queries, queries, queries, token_mask)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries, token_mask)
        queries = self.norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries, token_mask))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks and a final tokens -> image attention.

    Args:
        depth: number of :class:`TwoWayAttentionBlock`.
        embedding_dim: channels of tokens and image embedding.
        num_heads: attention heads.
        mlp_dim: hidden width of the token MLP.
        attention_downsample_rate: channel reduction inside the cross-attentions.
        norm_eps: the LayerNorms' eps (EfficientViT-SAM sets every norm of its model to 1e-6).
        variant: ``sam`` or ``efficientsam`` (see the module docstring).
    """

    def __init__(
        self, depth: int, embedding_dim: int, num_heads: int, mlp_dim: int, attention_downsample_rate: int = 2,
        norm_eps: float = 1e-5, variant: Variant = "sam",
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, attention_downsample_rate, skip_first_layer_pe=i == 0,
                                 norm_eps=norm_eps, variant=variant)
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim, eps=norm_eps)

    def forward(
        self,
        image_embedding: torch.Tensor,
        image_pe: torch.Tensor,
        point_embedding: torch.Tensor,
        token_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image ``[B, C, h, w]`` (and its PE), tokens ``[B, T, C]`` -> updated tokens
        ``[B, T, C]`` and image ``[B, h*w, C]``."""
        keys = image_embedding.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe, token_mask)
        q, k = queries + point_embedding, keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys
