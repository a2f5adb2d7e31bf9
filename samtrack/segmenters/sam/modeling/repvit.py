"""RepViT, the image encoder of RepViT-SAM (Wang et al., 2023) and EdgeSAM (Zhou et al., 2023).

A MobileNet-like CNN with ViT-style macro design (Wang et al., "RepViT: Revisiting Mobile CNN
From ViT Perspective"): a two-convolution stem to 1/4, then stages of blocks that each split
into a *token mixer* (a re-parameterisable 3x3 depthwise convolution, RepVGGDW, with a
squeeze-excite on every other block) and a *channel mixer* (a residual 1x1-expand, GELU,
1x1-project FFN). A stage starts with a downsampling block (strided depthwise convolution, then
a 1x1 to the new width). SAM's convolutional neck maps the result to the 256-channel embedding.

The two checkpoints differ in three ways, which are options here, not copies:

- ``repvgg_post_bn``: RepViT-SAM (RepViT v1.0 code) sums the 3x3-BN branch, a plain 1x1
  depthwise convolution with a bias and the identity, then applies a BatchNorm; EdgeSAM's 1x1
  branch has its own BatchNorm and the sum has none.
- ``last_stride``: RepViT-SAM keeps the last stage at 1/16 (its last downsampling block does not
  stride, so the embedding is 64 x 64 for a 1024 input); EdgeSAM strides it to 1/32 ...
- ``fuse_stages``: ... and adds an FPN-like fusion before the neck: a 1x1 projection of the
  1/16 stage plus a 1x1 projection of the 1/32 stage upsampled x2 (bicubic).

Both official checkpoints are in the *training* layout (BatchNorms and branches separate), which
is what this module's parameters are named after, so they load with ``strict=True``.
:meth:`RepViT.fuse_for_inference` then folds every branch and BatchNorm into one convolution
(RepViT's structural re-parameterisation), for speed only.

Unlike the reference, every layer reads its grid from its input, so any input whose sides are
multiples of :attr:`RepViT.input_multiple` runs (16, or 32 with the stage fusion, whose two
branches must meet at the same size); a square 1024 input computes what the reference does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d
from .tiny_vit import Conv2d_BN


@dataclass(frozen=True)
class RepViTStage:
    """One stage: ``channels`` wide, ``depth`` ordinary blocks (after the downsampling block that
    opens every stage but the first). Squeeze-excite sits on every other ordinary block, from the
    first, never on a stage's last block nor on a downsampling block (RepViT's design)."""

    channels: int
    depth: int


# RepViT-M2.3 as RepViT-SAM uses it, and RepViT-M1 (m1) as EdgeSAM's encoder.
REPVIT_M2_3 = (RepViTStage(80, 7), RepViTStage(160, 7), RepViTStage(320, 35), RepViTStage(640, 2))
REPVIT_M1 = (RepViTStage(48, 3), RepViTStage(96, 3), RepViTStage(192, 15), RepViTStage(384, 2))


def _divisible(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of ``divisor`` (at least ``divisor``), as timm does for the
    squeeze-excite's reduced width (``make_divisible(..., round_limit=0)``)."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class SqueezeExcite(nn.Module):
    """timm's SEModule with ``rd_ratio=0.25``: global mean, 1x1 reduce, ReLU, 1x1 expand,
    sigmoid gate (``fc1``/``fc2`` as in the checkpoints)."""

    def __init__(self, channels: int, ratio: float = 0.25) -> None:
        super().__init__()
        reduced = _divisible(channels * ratio)
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


def _identity_kernel(conv: nn.Conv2d) -> torch.Tensor:
    """A depthwise 3x3 kernel that passes its input through (1 at the centre)."""
    kernel = torch.zeros_like(conv.weight)
    kernel[:, 0, 1, 1] = 1.0
    return kernel


class RepVGGDW(nn.Module):
    """``3x3 depthwise conv-BN + 1x1 depthwise conv + identity`` (then a BatchNorm when
    ``post_bn``, RepViT-SAM's layout; EdgeSAM's 1x1 branch is a conv-BN instead)."""

    def __init__(self, dim: int, post_bn: bool) -> None:
        super().__init__()
        self.conv = Conv2d_BN(dim, dim, 3, 1, 1, groups=dim)
        self.conv1: nn.Module = nn.Conv2d(dim, dim, 1, groups=dim) if post_bn else Conv2d_BN(dim, dim, 1, groups=dim)
        self.bn = nn.BatchNorm2d(dim) if post_bn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x) + self.conv1(x) + x
        return self.bn(y) if self.bn is not None else y

    @torch.no_grad()
    def fused(self) -> nn.Conv2d:
        """The same inference-mode computation as one 3x3 depthwise convolution."""
        conv = self.conv.fused()
        one = self.conv1.fused() if isinstance(self.conv1, Conv2d_BN) else self.conv1
        weight = conv.weight + F.pad(one.weight, [1, 1, 1, 1]) + _identity_kernel(conv)
        bias = conv.bias + one.bias
        if self.bn is not None:
            scale = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
            weight = weight * scale[:, None, None, None]
            bias = (bias - self.bn.running_mean) * scale + self.bn.bias
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        return conv


class Residual(nn.Module):
    """``x + m(x)`` (``m`` for the checkpoints' key names)."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.m(x)


def _ffn(dim: int) -> Residual:
    """The channel mixer: residual 1x1 to ``2 * dim``, GELU, 1x1 back."""
    return Residual(nn.Sequential(Conv2d_BN(dim, 2 * dim), nn.GELU(), Conv2d_BN(2 * dim, dim)))


class RepViTBlock(nn.Module):
    """A token mixer then a channel mixer. An ordinary block keeps its width (RepVGGDW, maybe a
    squeeze-excite); a downsampling block (``out_dim`` given) runs a depthwise 3x3 at ``stride``
    and a 1x1 to ``out_dim``."""

    def __init__(self, dim: int, use_se: bool, post_bn: bool, out_dim: int | None = None, stride: int = 1) -> None:
        super().__init__()
        se: nn.Module = SqueezeExcite(dim) if use_se else nn.Identity()
        if out_dim is None:
            self.token_mixer = nn.Sequential(RepVGGDW(dim, post_bn), se)
            out_dim = dim
        else:
            self.token_mixer = nn.Sequential(Conv2d_BN(dim, dim, 3, stride, 1, groups=dim), se, Conv2d_BN(dim, out_dim))
        self.channel_mixer = _ffn(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_mixer(self.token_mixer(x))


class _ProjectUp(nn.Module):
    """EdgeSAM's 1/32 branch: a 1x1 projection, then x2 upsampling (``op_list`` for its keys)."""

    def __init__(self, in_ch: int, out_ch: int, mode: str) -> None:
        super().__init__()
        self.op_list = nn.ModuleList([nn.Conv2d(in_ch, out_ch, 1, bias=False)])
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.op_list[0](x), scale_factor=2, mode=self.mode, align_corners=False)


class RepViT(nn.Module):
    """RepViT as a SAM image encoder: ``[B, 3, H, W] -> [B, out_chans, H/16, W/16]``.

    Args:
        stages: the stages' widths and depths (:data:`REPVIT_M2_3`, :data:`REPVIT_M1`).
        repvgg_post_bn, last_stride, fuse_stages: the checkpoint variants (module docstring).
        upsample_mode: the fusion's upsampling (EdgeSAM: bicubic).
        out_chans: the embedding's channels.

    Blocks live in one ``features`` list (the stem first), as in the checkpoints.
    """

    def __init__(
        self,
        stages: Sequence[RepViTStage] = REPVIT_M2_3,
        repvgg_post_bn: bool = True,
        last_stride: int = 1,
        fuse_stages: bool = False,
        upsample_mode: str = "bicubic",
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        # What rebuilds this architecture (e.g. at another depth, for tests).
        self.stages = tuple(stages)
        self.options = dict(repvgg_post_bn=repvgg_post_bn, last_stride=last_stride, fuse_stages=fuse_stages,
                            upsample_mode=upsample_mode, out_chans=out_chans)
        first = stages[0].channels
        stem = nn.Sequential(Conv2d_BN(3, first // 2, 3, 2, 1), nn.GELU(), Conv2d_BN(first // 2, first, 3, 2, 1))
        layers: list[nn.Module] = [stem]
        dim = first
        self._stage_ends: list[int] = []  # index in `features` of each stage's last block
        for i, stage in enumerate(stages):
            if i > 0:
                stride = last_stride if i == len(stages) - 1 else 2
                layers.append(RepViTBlock(dim, False, repvgg_post_bn, out_dim=stage.channels, stride=stride))
                dim = stage.channels
            for j in range(stage.depth):
                use_se = j % 2 == 0 and j < stage.depth - 1
                layers.append(RepViTBlock(dim, use_se, repvgg_post_bn))
            self._stage_ends.append(len(layers) - 1)
        self.features = nn.ModuleList(layers)
        self.fuse_stages = fuse_stages
        neck_in = dim
        if fuse_stages:
            self.fuse_stage2 = nn.Conv2d(stages[-2].channels, out_chans, 1, bias=False)
            self.fuse_stage3 = _ProjectUp(dim, out_chans, upsample_mode)
            neck_in = out_chans
        self.neck = nn.Sequential(
            nn.Conv2d(neck_in, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        # Strides: 4 (stem) x 2 x 2, and x last_stride; the fusion's branches must meet exactly.
        self.input_multiple = 16 * (last_stride if fuse_stages else 1)

    @torch.no_grad()
    def fuse_for_inference(self) -> "RepViT":
        """Fold every BatchNorm and RepVGGDW branch into one convolution, in place (outputs
        equal to float precision). The state_dict no longer has the checkpoint's layout
        afterwards: load weights first."""
        for module in list(self.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, (Conv2d_BN, RepVGGDW)):
                    setattr(module, name, child.fused())
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.input_multiple
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(f"RepViT input sides must be multiples of {m}, got {tuple(x.shape[-2:])}")
        stage2 = None
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i == self._stage_ends[-2]:
                stage2 = x
        if self.fuse_stages:
            x = self.fuse_stage2(stage2) + self.fuse_stage3(x)
        return self.neck(x)
