"""SAM's ViT image encoder (Kirillov et al., 2023; ViTDet's backbone): ViT-B, ViT-L and ViT-H.

16 x 16 patches embedded by one strided convolution, an absolute position embedding, then
transformer blocks with windowed self-attention (14 x 14 windows, padded at the grid's edge) and
a few global-attention blocks; every attention adds decomposed relative position terms (MViTv2).
A convolutional neck maps the last block to SAM's 256-channel embedding: a 1024 x 1024 input
gives a 64 x 64 embedding.

On the square 1024 input this computes what the reference computes, and parameter names follow
it so the official checkpoints load as is. It also runs on a smaller grid (a 16:9 frame encoded
at 1024 x 576 without its padding, a 64 x 36 grid): the absolute position embedding is then the
top-left crop of the square one (where those patches sit in the padded frame) and global
attention reads the relative offsets it meets (all within the square's) from the same table.
That is our extension, not the official model; the padded square is what equals it.

HQ-SAM fuses the output of the first global-attention block into its decoder:
:meth:`ImageEncoderViT.forward_with_early` returns it beside the embedding.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d, MLPBlock

PATCH = 16


class PatchEmbed(nn.Module):
    """``[B, 3, H, W] -> [B, H/16, W/16, C]`` (channels-last, as the blocks take it)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = PATCH) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def _rel_pos_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """``[size, size, C]`` terms for each (query, key) row or column pair of a ``size`` grid.

    ``table`` holds one vector per offset ``-(S-1) .. S-1`` of the grid it was trained for
    (``S = (len + 1) / 2``); a smaller grid uses the offsets it has. (The reference resizes the
    table when sizes differ; with the trained size both are the same lookup.)
    """
    trained = (table.shape[0] + 1) // 2
    if size > trained:
        raise ValueError(f"a {size}-cell grid is larger than the {trained} cells this encoder was trained on")
    coords = torch.arange(size, device=table.device)
    return table[coords[:, None] - coords[None, :] + trained - 1]


class Attention(nn.Module):
    """Multi-head self-attention over a ``[B, H, W, C]`` grid with decomposed relative
    position terms (one table for rows, one for columns)."""

    def __init__(self, dim: int, num_heads: int, grid: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B, heads, h*w, head_dim] each
        r_q = q.reshape(b, self.num_heads, h, w, -1)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, _rel_pos_table(self.rel_pos_h, h))
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, _rel_pos_table(self.rel_pos_w, w))
        # The relative terms are an additive attention bias (added to the scaled logits).
        bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, self.num_heads, h * w, h * w)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))


class Block(nn.Module):
    """Pre-norm transformer block; attention inside ``window`` x ``window`` windows, or over
    the whole grid when ``window`` is 0."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window: int, grid: int) -> None:
        super().__init__()
        self.window_size = window
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, grid=window if window else grid)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, C] -> [B, H, W, C]``."""
        shortcut = x
        x = self.norm1(x)
        ws = self.window_size
        if ws:
            b, h, w, c = x.shape
            pad_b, pad_r = (-h) % ws, (-w) % ws
            # Edge windows are zero-padded (after the norm) and attend over the padding, as in
            # the reference.
            if pad_b or pad_r:
                x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
            ph, pw = h + pad_b, w + pad_r
            x = x.view(b, ph // ws, ws, pw // ws, ws, c).transpose(2, 3).reshape(-1, ws, ws, c)
            x = self.attn(x)
            x = x.view(b, ph // ws, pw // ws, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)[:, :h, :w]
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT(nn.Module):
    """SAM's ViT encoder: ``[B, 3, H, W] -> [B, out_chans, H/16, W/16]``.

    Args:
        img_size: the square input it was trained on (sets the position embedding's grid).
        embed_dim, depth, num_heads, mlp_ratio: the transformer (ViT-B: 768, 12, 12, 4).
        global_attn_indexes: blocks that attend over the whole grid; the others use windows.
        window_size: the windows' side in patches.
        out_chans: the embedding's channels.
    """

    def __init__(
        self,
        img_size: int = 1024,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        global_attn_indexes: Sequence[int] = (2, 5, 8, 11),
        window_size: int = 14,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        grid = img_size // PATCH
        self.patch_embed = PatchEmbed(in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, 0 if i in global_attn_indexes else window_size, grid)
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        # HQ-SAM's early feature: the first global block's output.
        self._early_index = min(global_attn_indexes) if global_attn_indexes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, early=False)[0]

    def forward_with_early(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The embedding and ``[B, embed_dim, H/16, W/16]``, the first global block's output."""
        embedding, early = self._run(x, early=True)
        if early is None:
            raise ValueError("this encoder has no global-attention block to take early features from")
        return embedding, early

    def _run(self, x: torch.Tensor, early: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        if x.shape[-2] % PATCH or x.shape[-1] % PATCH:
            raise ValueError(f"ViT input sides must be multiples of {PATCH}, got {tuple(x.shape[-2:])}")
        x = self.patch_embed(x)
        h, w = x.shape[1:3]
        if h > self.pos_embed.shape[1] or w > self.pos_embed.shape[2]:
            raise ValueError(f"a {h}x{w} patch grid is larger than the {self.pos_embed.shape[1]}-cell square")
        x = x + self.pos_embed[:, :h, :w]
        kept = None
        for i, block in enumerate(self.blocks):
            x = block(x)
            if early and i == self._early_index:
                kept = x.permute(0, 3, 1, 2)
        return self.neck(x.permute(0, 3, 1, 2)), kept
