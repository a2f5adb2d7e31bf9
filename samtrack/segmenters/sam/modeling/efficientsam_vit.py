"""EfficientSAM's image encoder (Xiong et al., 2024): a plain ViT pretrained by SAMI (masked
image pretraining that reconstructs SAM ViT-H features), then trained on SA-1B.

A 16 x 16 patch embedding, absolute position embeddings learnt at 224 x 224 (a 14 x 14 grid plus
a class token) and resized bicubically to the 64 x 64 grid of the 1024 x 1024 input, 12 global
attention blocks, and SAM's convolutional neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d).
ViT-T has 192 channels and 3 heads, ViT-S 384 and 6. Module and parameter names follow the
reference (yformer/EfficientSAM, ``efficient_sam/efficient_sam_encoder.py``) so its checkpoints
load as they are. The input must be the 1024 square (the frame is stretched to it).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d

IMAGE_SIZE = 1024
PATCH = 16
# The position embeddings' grid: learnt at 224 x 224 with a class token.
PRETRAIN_GRID = 224 // PATCH


class PatchEmbed(nn.Module):
    """``[B, 3, H, W] -> [B, C, H/16, W/16]`` (``proj``)."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, PATCH, PATCH, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Attention(nn.Module):
    """Global multi-head self-attention with a fused qkv projection (``qkv``, ``proj``)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """``fc2(gelu(fc1(x)))``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """A pre-norm transformer block (LayerNorms with eps 1e-6)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class EfficientSamViT(nn.Module):
    """``[B, 3, 1024, 1024]`` normalised input -> ``[B, 256, 64, 64]``.

    Args:
        embed_dim: ViT channels (192 for ViT-T, 384 for ViT-S).
        num_heads: attention heads (3, 6).
        depth: transformer blocks (12 in both released models).
        mlp_ratio: MLP hidden width over ``embed_dim``.
        out_chans: the neck's output channels (SAM's 256).
    """

    def __init__(self, embed_dim: int, num_heads: int, depth: int = 12, mlp_ratio: float = 4.0, out_chans: int = 256) -> None:
        super().__init__()
        self.img_size = IMAGE_SIZE
        self.patch_embed = PatchEmbed(3, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, PRETRAIN_GRID * PRETRAIN_GRID + 1, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """The learnt embeddings (class token dropped) resized to ``grid``, ``[1, h, w, C]``."""
        table = self.pos_embed[:, 1:]
        size = int(math.isqrt(table.shape[1]))
        table = table.reshape(1, size, size, -1)
        if (size, size) == tuple(grid):
            return table
        resized = F.interpolate(table.permute(0, 3, 1, 2), size=grid, mode="bicubic", align_corners=False)
        return resized.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(f"EfficientSAM takes a {self.img_size} x {self.img_size} input, got {tuple(x.shape[-2:])}")
        x = self.patch_embed(x).permute(0, 2, 3, 1)
        b, h, w, c = x.shape
        x = (x + self.position_embedding((h, w))).reshape(b, h * w, c)
        for block in self.blocks:
            x = block(x)
        return self.neck(x.reshape(b, h, w, c).permute(0, 3, 1, 2))
