"""CoTracker's frame encoder: a RAFT-style residual CNN whose four scales are resampled to 1/4 of
the frame and fused into one 128-channel feature map."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with instance norm; a strided block downsamples its shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1)
        self.norm1 = nn.InstanceNorm2d(planes)
        self.norm2 = nn.InstanceNorm2d(planes)
        self.downsample = None
        if stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride), nn.InstanceNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return F.relu(x + y)


class BasicEncoder(nn.Module):
    """Frames ``[B, 3, H, W]`` (normalised to [-1, 1]) -> features ``[B, output_dim, H/stride, W/stride]``."""

    def __init__(self, input_dim: int = 3, output_dim: int = 128, stride: int = 4) -> None:
        super().__init__()
        self.stride = stride
        half = output_dim // 2
        self.conv1 = nn.Conv2d(input_dim, half, kernel_size=7, stride=2, padding=3)
        self.norm1 = nn.InstanceNorm2d(half)
        dims = (half, output_dim // 4 * 3, output_dim, output_dim)
        strides = (1, 2, 2, 2)
        in_planes = half
        for k, (dim, s) in enumerate(zip(dims, strides), start=1):
            self.add_module(f"layer{k}", nn.Sequential(ResidualBlock(in_planes, dim, s), ResidualBlock(dim, dim)))
            in_planes = dim
        self.conv2 = nn.Conv2d(sum(dims), output_dim * 2, kernel_size=3, padding=1)
        self.norm2 = nn.InstanceNorm2d(output_dim * 2)
        self.conv3 = nn.Conv2d(output_dim * 2, output_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2] // self.stride, x.shape[-1] // self.stride)
        x = F.relu(self.norm1(self.conv1(x)))
        scales = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            scales.append(F.interpolate(x, size, mode="bilinear", align_corners=True))
        x = F.relu(self.norm2(self.conv2(torch.cat(scales, dim=1))))
        return self.conv3(x)
