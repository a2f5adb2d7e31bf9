"""EfficientViT-SAM's image encoder (Zhang, Cai et al., 2024; EfficientViT: Cai et al., 2023).

A convolutional backbone (EfficientViT-L: residual, fused-MBConv and MBConv stages, then stages
of EfficientViT blocks whose context module is ReLU linear attention over multi-scale q/k/v), and
a neck that projects three stages to 256 channels, resizes each to the 64 x 64 grid (bicubic),
adds them, refines the sum with fused-MBConv blocks and ends in a 1x1 convolution and a
LayerNorm. The L models encode a 512 x 512 input, the XL models 1024 x 1024; both give SAM's
64 x 64 x 256 embedding, for SAM's own prompt encoder and mask decoder.

Because the neck resizes every stage to a fixed 64 x 64 grid, the encoder only makes sense on
the square input it was trained with (no unpadded frames). Module and parameter names follow
the reference (mit-han-lab/efficientvit, ``efficientvit/models/nn/ops.py`` and
``efficientvit/models/efficientvit/{backbone,sam}.py``) so its checkpoints load as they are;
the reference's ``set_norm_eps(model, 1e-6)`` is built in (every BatchNorm and LayerNorm of the
model has eps 1e-6).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# The reference sets every norm's eps to this after building the model (sam_model_zoo.py).
NORM_EPS = 1e-6
# The neck's output grid, whatever the input size (512 for L, 1024 for XL).
GRID = 64


def _act(name: str | None) -> nn.Module | None:
    """The reference's activations; its "gelu" is the tanh approximation."""
    if name is None:
        return None
    return {"gelu": lambda: nn.GELU(approximate="tanh"), "relu": nn.ReLU, "hswish": nn.Hardswish}[name]()


class ConvLayer(nn.Module):
    """Convolution ("same" padding), optional BatchNorm, optional activation (``conv``, ``norm``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 bias: bool = False, norm: bool = True, act: str | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=bias)
        self.norm = nn.BatchNorm2d(out_ch, eps=NORM_EPS) if norm else None
        self.act = _act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return self.act(x) if self.act is not None else x

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold the BatchNorm into the convolution (inference only; the checkpoint layout is
        lost afterwards)."""
        if self.norm is None:
            return
        c, bn = self.conv, self.norm
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, groups=c.groups, bias=True)
        fused.weight.copy_(c.weight * scale[:, None, None, None])
        bias = c.bias if c.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
        self.conv, self.norm = fused.to(c.weight.device), None


class OpSequential(nn.Module):
    """Modules applied in order, kept in ``op_list`` (the reference's container)."""

    def __init__(self, ops: Sequence[nn.Module]) -> None:
        super().__init__()
        self.op_list = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.op_list:
            x = op(x)
        return x


class ResidualBlock(nn.Module):
    """``main(x) + x`` when ``residual``, else ``main(x)`` (a stage's strided first block)."""

    def __init__(self, main: nn.Module, residual: bool) -> None:
        super().__init__()
        self.main = main
        # The reference's IdentityLayer shortcut has no parameters; a flag does the same.
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + x if self.residual else self.main(x)


def _norms(fewer_norm: bool, n: int) -> tuple[list[bool], list[bool]]:
    """(bias, norm) per convolution of a local block: "fewer norm" blocks keep the BatchNorm on
    the last convolution only and give the others a bias."""
    if fewer_norm:
        return [True] * (n - 1) + [False], [False] * (n - 1) + [True]
    return [False] * n, [True] * n


class ResBlock(nn.Module):
    """Two 3x3 convolutions (``conv1`` with the activation, ``conv2`` without)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: float, act: str, fewer_norm: bool) -> None:
        super().__init__()
        mid = round(in_ch * expand)
        bias, norm = _norms(fewer_norm, 2)
        self.conv1 = ConvLayer(in_ch, mid, 3, stride, bias=bias[0], norm=norm[0], act=act)
        self.conv2 = ConvLayer(mid, out_ch, 3, 1, bias=bias[1], norm=norm[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class FusedMBConv(nn.Module):
    """A 3x3 expansion convolution and a 1x1 projection (``spatial_conv``, ``point_conv``)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: float, act: str, fewer_norm: bool) -> None:
        super().__init__()
        mid = round(in_ch * expand)
        bias, norm = _norms(fewer_norm, 2)
        self.spatial_conv = ConvLayer(in_ch, mid, 3, stride, bias=bias[0], norm=norm[0], act=act)
        self.point_conv = ConvLayer(mid, out_ch, 1, bias=bias[1], norm=norm[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.spatial_conv(x))


class MBConv(nn.Module):
    """1x1 expansion, 3x3 depthwise, 1x1 projection (``inverted_conv``, ``depth_conv``,
    ``point_conv``)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: float, act: str, fewer_norm: bool) -> None:
        super().__init__()
        mid = round(in_ch * expand)
        bias, norm = _norms(fewer_norm, 3)
        self.inverted_conv = ConvLayer(in_ch, mid, 1, bias=bias[0], norm=norm[0], act=act)
        self.depth_conv = ConvLayer(mid, mid, 3, stride, groups=mid, bias=bias[1], norm=norm[1], act=act)
        self.point_conv = ConvLayer(mid, out_ch, 1, bias=bias[2], norm=norm[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))


_LOCAL_BLOCKS = {"res": ResBlock, "fmb": FusedMBConv, "mb": MBConv}


class LiteMLA(nn.Module):
    """Multi-scale ReLU linear attention: q, k, v from a 1x1 convolution, plus per scale a
    depthwise ``scale x scale`` and grouped 1x1 aggregation of them (``qkv``, ``aggreg``); each
    head attends with ``relu(q) (relu(k)^T v)`` normalised by ``relu(q) sum(relu(k))``; a 1x1
    projection with BatchNorm (``proj``) merges the heads."""

    def __init__(self, channels: int, dim: int, scales: Sequence[int], eps: float = 1.0e-15) -> None:
        super().__init__()
        heads = channels // dim
        total = heads * dim
        self.dim = dim
        self.eps = eps
        self.qkv = ConvLayer(channels, 3 * total, 1, norm=False)
        self.aggreg = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(3 * total, 3 * total, s, padding=s // 2, groups=3 * total, bias=False),
                nn.Conv2d(3 * total, 3 * total, 1, groups=3 * heads, bias=False),
            )
            for s in scales
        )
        self.proj = ConvLayer(total * (1 + len(scales)), channels, 1)

    def _linear_attention(self, qkv: torch.Tensor) -> torch.Tensor:
        b, _, h, w = qkv.shape
        # Computed in fp32 whatever autocast says: the normaliser overflows in half precision.
        qkv = qkv.float().reshape(b, -1, 3 * self.dim, h * w)
        q, k, v = qkv[:, :, : self.dim], qkv[:, :, self.dim : 2 * self.dim], qkv[:, :, 2 * self.dim :]
        q, k = torch.relu(q), torch.relu(k)
        # A row of ones under v yields the normaliser in the same matmuls.
        v = F.pad(v, (0, 0, 0, 1), mode="constant", value=1.0)
        out = (v @ k.transpose(-1, -2)) @ q
        out = out[:, :, :-1] / (out[:, :, -1:] + self.eps)
        return out.reshape(b, -1, h, w)

    def _quadratic_attention(self, qkv: torch.Tensor) -> torch.Tensor:
        # The reference's path for grids of at most ``dim`` cells (never reached at SAM's sizes).
        b, _, h, w = qkv.shape
        qkv = qkv.reshape(b, -1, 3 * self.dim, h * w)
        q, k, v = qkv[:, :, : self.dim], qkv[:, :, self.dim : 2 * self.dim], qkv[:, :, 2 * self.dim :]
        att = torch.relu(k).transpose(-1, -2) @ torch.relu(q)
        att = att / (att.sum(dim=2, keepdim=True) + self.eps)
        return (v @ att).reshape(b, -1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        qkv = torch.cat([qkv, *(op(qkv) for op in self.aggreg)], dim=1)
        h, w = qkv.shape[-2:]
        out = self._linear_attention(qkv).to(qkv.dtype) if h * w > self.dim else self._quadratic_attention(qkv)
        return self.proj(out)


class EfficientViTBlock(nn.Module):
    """Linear attention then an MBConv, each residual (``context_module``, ``local_module``)."""

    def __init__(self, channels: int, dim: int, expand: float, scales: Sequence[int], act: str) -> None:
        super().__init__()
        self.context_module = ResidualBlock(LiteMLA(channels, dim, scales), residual=True)
        self.local_module = ResidualBlock(MBConv(channels, channels, 1, expand, act, fewer_norm=True), residual=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_module(self.context_module(x))


@dataclass(frozen=True)
class BackboneConfig:
    """An EfficientViT-L backbone: per stage its width, depth, block type (``res``, ``fmb``,
    ``mb``, ``att`` / ``att@3``: EfficientViT blocks with 5x5 / 3x3 aggregation), expansion and
    whether its local blocks have "fewer norms"."""

    widths: tuple[int, ...]
    depths: tuple[int, ...]
    blocks: tuple[str, ...] = ("res", "fmb", "fmb", "mb", "att")
    expands: tuple[float, ...] = (1, 4, 4, 4, 6)
    fewer_norm: tuple[bool, ...] = (False, False, False, True, True)
    qkv_dim: int = 32
    act: str = "gelu"


class EfficientViTLargeBackbone(nn.Module):
    """The reference's ``EfficientViTLargeBackbone``: ``stages[0]`` a stride-2 stem and local
    blocks, every later stage a stride-2 downsampling block and ``depth`` blocks. Returns every
    stage's output by name (``stage0``...), as the neck reads them."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        c = config
        stem = [ConvLayer(3, c.widths[0], 3, 2, act=c.act)]
        for _ in range(c.depths[0]):
            block = _LOCAL_BLOCKS[c.blocks[0]](c.widths[0], c.widths[0], 1, c.expands[0], c.act, c.fewer_norm[0])
            stem.append(ResidualBlock(block, residual=True))
        stages = [OpSequential(stem)]
        in_ch = c.widths[0]
        for i, (width, depth) in enumerate(zip(c.widths[1:], c.depths[1:]), start=1):
            kind = c.blocks[i]
            down = _LOCAL_BLOCKS[kind if kind in ("mb", "fmb") else "mb"]
            ops: list[nn.Module] = [ResidualBlock(down(in_ch, width, 2, c.expands[i] * 4, c.act, c.fewer_norm[i]), residual=False)]
            in_ch = width
            for _ in range(depth):
                if kind.startswith("att"):
                    ops.append(EfficientViTBlock(width, c.qkv_dim, c.expands[i], (3,) if kind == "att@3" else (5,), c.act))
                else:
                    block = _LOCAL_BLOCKS[kind](width, width, 1, c.expands[i], c.act, c.fewer_norm[i])
                    ops.append(ResidualBlock(block, residual=True))
            stages.append(OpSequential(ops))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for i, stage in enumerate(self.stages):
            out[f"stage{i}"] = x = stage(x)
        return out


class _Upsample(nn.Module):
    """Bicubic resize to the fixed ``GRID x GRID`` (no parameters; identity when already there)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == (GRID, GRID):
            return x
        # fp32, as the reference (it disables autocast here).
        return F.interpolate(x.float(), size=(GRID, GRID), mode="bicubic", align_corners=False).to(x.dtype)


class SamNeck(nn.Module):
    """Three stages -> 1x1 conv + BatchNorm each, resized to 64 x 64, summed (``input_ops``);
    ``depth`` residual fused-MBConvs (``middle``); a 1x1 conv to 256 channels (``output_ops``)."""

    def __init__(self, stages: Sequence[str], in_channels: Sequence[int], width: int, depth: int, expand: float,
                 out_dim: int = 256, act: str = "gelu") -> None:
        super().__init__()
        self.input_keys = list(stages)
        self.input_ops = nn.ModuleList(OpSequential([ConvLayer(c, width, 1), _Upsample()]) for c in in_channels)
        self.middle = OpSequential(
            [ResidualBlock(FusedMBConv(width, width, 1, expand, act, fewer_norm=False), residual=True) for _ in range(depth)])
        self.output_ops = nn.ModuleList([OpSequential([ConvLayer(width, out_dim, 1, bias=True, norm=False)])])

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        feats = [op(features[key]) for key, op in zip(self.input_keys, self.input_ops)]
        x = feats[0]
        for f in feats[1:]:  # in the reference's order (its list_sum)
            x = x + f
        return self.output_ops[0](self.middle(x))


class LayerNorm2d(nn.LayerNorm):
    """The reference's channel LayerNorm (an ``nn.LayerNorm`` over dim 1 of ``[B, C, H, W]``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x - x.mean(dim=1, keepdim=True)
        out = out / torch.sqrt(out.square().mean(dim=1, keepdim=True) + self.eps)
        return out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


@dataclass(frozen=True)
class EfficientViTSamConfig:
    """One EfficientViT-SAM image encoder: backbone, the stages the neck reads, neck depth and
    expansion, and the square input size it was trained at."""

    backbone: BackboneConfig
    neck_stages: tuple[str, ...]
    neck_in_channels: tuple[int, ...]
    neck_depth: int
    neck_expand: float
    input_size: int


_L_NECK = dict(neck_stages=("stage4", "stage3", "stage2"), neck_in_channels=(512, 256, 128), neck_expand=1, input_size=512)
_XL_NECK = dict(neck_stages=("stage5", "stage4", "stage3"), neck_in_channels=(1024, 512, 256), neck_expand=4, input_size=1024)
_XL_BLOCKS = dict(blocks=("res", "fmb", "fmb", "fmb", "att@3", "att@3"), expands=(1, 4, 4, 4, 4, 6),
                  fewer_norm=(False, False, False, False, True, True))
_L_WIDTHS = (32, 64, 128, 256, 512)
_XL_WIDTHS = (32, 64, 128, 256, 512, 1024)

# The reference's efficientvit_sam_{l0,l1,l2,xl0,xl1}.
CONFIGS: dict[str, EfficientViTSamConfig] = {
    "l0": EfficientViTSamConfig(BackboneConfig(_L_WIDTHS, (1, 1, 1, 4, 4)), neck_depth=4, **_L_NECK),
    "l1": EfficientViTSamConfig(BackboneConfig(_L_WIDTHS, (1, 1, 1, 6, 6)), neck_depth=8, **_L_NECK),
    "l2": EfficientViTSamConfig(BackboneConfig(_L_WIDTHS, (1, 2, 2, 8, 8)), neck_depth=12, **_L_NECK),
    "xl0": EfficientViTSamConfig(BackboneConfig(_XL_WIDTHS, (0, 1, 1, 2, 3, 3), **_XL_BLOCKS), neck_depth=6, **_XL_NECK),
    "xl1": EfficientViTSamConfig(BackboneConfig(_XL_WIDTHS, (1, 2, 2, 4, 6, 6), **_XL_BLOCKS), neck_depth=12, **_XL_NECK),
}


class EfficientViTSamImageEncoder(nn.Module):
    """``[B, 3, S, S]`` normalised input (S = 512 for L, 1024 for XL) -> ``[B, 256, 64, 64]``."""

    def __init__(self, config: EfficientViTSamConfig) -> None:
        super().__init__()
        self.input_size = config.input_size
        self.backbone = EfficientViTLargeBackbone(config.backbone)
        self.neck = SamNeck(config.neck_stages, config.neck_in_channels, 256, config.neck_depth, config.neck_expand,
                            act=config.backbone.act)
        self.norm = LayerNorm2d(256, eps=NORM_EPS)

    def fuse_for_inference(self) -> "EfficientViTSamImageEncoder":
        """Fold every BatchNorm into its convolution, in place; load weights first."""
        for module in self.modules():
            if isinstance(module, ConvLayer):
                module.fuse()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(f"EfficientViT-SAM takes a {self.input_size} x {self.input_size} input, got {tuple(x.shape[-2:])}")
        return self.norm(self.neck(self.backbone(x)))
