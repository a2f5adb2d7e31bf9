"""The update transformer: attention across time along each track, and across tracks through a
few learned virtual tracks (so its cost grows linearly, not quadratically, with the points)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None, tanh_gelu: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU(approximate="tanh" if tanh_gelu else "none")
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head attention of ``x`` over ``context`` (itself when None); keys and values share
    one projection."""

    def __init__(self, query_dim: int, context_dim: int | None = None, num_heads: int = 8, dim_head: int = 48) -> None:
        super().__init__()
        inner = dim_head * num_heads
        self.heads = num_heads
        self.to_q = nn.Linear(query_dim, inner)
        self.to_kv = nn.Linear(context_dim or query_dim, inner * 2)
        self.to_out = nn.Linear(inner, query_dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b, n, _ = x.shape
        q = self.to_q(x).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in self.to_kv(context).chunk(2, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class AttnBlock(nn.Module):
    """Pre-norm self-attention block (parameter-free norms, tanh-GELU MLP)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads=num_heads, dim_head=hidden_size // num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), tanh_gelu=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """Pre-norm cross-attention block; the context has a norm of its own, with affine terms."""

    def __init__(self, hidden_size: int, context_dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.norm_context = nn.LayerNorm(hidden_size)
        self.cross_attn = Attention(hidden_size, context_dim, num_heads=num_heads, dim_head=hidden_size // num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), tanh_gelu=True)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.cross_attn(self.norm1(x), self.norm_context(context))
        return x + self.mlp(self.norm2(x))


class EfficientUpdateFormer(nn.Module):
    """Tokens ``[B, N, T, input_dim]`` (one per track and frame) -> updates ``[B, N, T, 4]``:
    (dx, dy) in feature-map pixels, then the visibility and confidence logit increments.

    Each layer attends along time within every track, then (for the tracks of one frame) lets
    the virtual tracks read the real ones, attend among themselves, and write back.
    """

    def __init__(
        self,
        space_depth: int = 3,
        time_depth: int = 3,
        input_dim: int = 1110,
        hidden_size: int = 384,
        num_heads: int = 8,
        output_dim: int = 4,
        mlp_ratio: float = 4.0,
        num_virtual_tracks: int = 64,
    ) -> None:
        super().__init__()
        if time_depth % space_depth:
            raise ValueError("time_depth must be a multiple of space_depth")
        self.num_virtual_tracks = num_virtual_tracks
        self.input_transform = nn.Linear(input_dim, hidden_size)
        self.flow_head = nn.Linear(hidden_size, output_dim - 2)
        self.vis_conf_head = nn.Linear(hidden_size, 2)
        # (sic) the official checkpoints spell the parameter this way.
        self.virual_tracks = nn.Parameter(torch.randn(1, num_virtual_tracks, 1, hidden_size))
        self.time_blocks = nn.ModuleList(AttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(time_depth))
        self.space_virtual_blocks = nn.ModuleList(AttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(space_depth))
        self.space_point2virtual_blocks = nn.ModuleList(
            CrossAttnBlock(hidden_size, hidden_size, num_heads, mlp_ratio) for _ in range(space_depth))
        self.space_virtual2point_blocks = nn.ModuleList(
            CrossAttnBlock(hidden_size, hidden_size, num_heads, mlp_ratio) for _ in range(space_depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.input_transform(x)
        b, n_points, t, c = tokens.shape
        tokens = torch.cat([tokens, self.virual_tracks.expand(b, -1, t, -1)], dim=1)
        n = tokens.shape[1]
        every = len(self.time_blocks) // len(self.space_virtual_blocks)
        for i, time_block in enumerate(self.time_blocks):
            tokens = time_block(tokens.reshape(b * n, t, c)).view(b, n, t, c)
            if i % every:
                continue
            j = i // every
            space = tokens.transpose(1, 2).reshape(b * t, n, c)
            points, virtual = space[:, :n_points], space[:, n_points:]
            virtual = self.space_virtual2point_blocks[j](virtual, points)
            virtual = self.space_virtual_blocks[j](virtual)
            points = self.space_point2virtual_blocks[j](points, virtual)
            tokens = torch.cat([points, virtual], dim=1).view(b, t, n, c).transpose(1, 2)
        tokens = tokens[:, :n_points]
        return torch.cat([self.flow_head(tokens), self.vis_conf_head(tokens)], dim=-1)
