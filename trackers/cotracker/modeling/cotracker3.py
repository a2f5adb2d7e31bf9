"""CoTracker3 (Karaev et al., "CoTracker3: Simpler and Better Point Tracking by Pseudo-Labelling
Real Videos", 2024): the model, run offline (a whole clip at once) or online (a sliding window).

Shapes: ``B`` videos, ``T`` frames, ``N`` tracks, ``C`` feature channels. Coordinates inside the
model are in feature-map pixels (frame pixels / ``stride``) until they are returned.

Per iteration, every track and frame gets a token: its visibility and confidence logits, the
correlation of the 7x7 neighbourhood around its current position with the 7x7 neighbourhood
around its query (at 4 scales, each 2401 products squeezed to 256 by an MLP), and a Fourier
encoding of its motion to the frames before and after. The update transformer turns the tokens
into position and logit increments.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .encoder import BasicEncoder
from .update_transformer import EfficientUpdateFormer, Mlp

LATENT_DIM = 128


def sincos_embedding(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """``[1, len(positions), dim]`` sine-cosine position embedding (sines first), computed in
    float64 like the checkpoints' stored table."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = positions.reshape(-1).to(torch.float64)[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)[None].float()


def fourier_encode(x: torch.Tensor, n_octaves: int = 10) -> torch.Tensor:
    """``x`` followed by ``sin`` and ``cos`` of ``x * 2**k`` for ``k < n_octaves`` (octave-major)."""
    scales = 2.0 ** torch.arange(n_octaves, dtype=x.dtype, device=x.device)
    xb = (x[..., None, :] * scales[:, None]).flatten(-2)
    return torch.cat([x, torch.sin(torch.cat([xb, xb + 0.5 * math.pi], dim=-1))], dim=-1)


def sample_at(fmap: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``fmap [B, C, H, W]`` at pixel positions ``xy [B, ..., 2]`` (pixel
    centres at integers, clamped at the border) -> ``[B, ..., C]``."""
    h, w = fmap.shape[-2:]
    scale = xy.new_tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)])
    grid = (xy * scale - 1).reshape(xy.shape[0], -1, 1, 2)
    out = F.grid_sample(fmap, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[..., 0].transpose(1, 2).reshape(*xy.shape[:-1], fmap.shape[1])


@dataclass
class OnlineState:
    """What the online model keeps between windows: the query neighbourhoods seen so far and the
    predictions (logits) of the frames the next window overlaps. Frames are not kept."""

    queries: torch.Tensor  # [B, N, 3] (t, x, y) in model-input pixels
    start: int = 0  # first frame of the next window
    support: list[torch.Tensor] | None = None  # per level [B, N, 49, C]
    overlap: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # coords, vis, conf logits
    # The feature pyramid of the frames the next window shares with this one: each frame goes
    # through the CNN once, not once per window it is in (the official code encodes it twice).
    features: list[torch.Tensor] | None = None


@dataclass
class TrackOutput:
    """Tracks in model-input pixels with visibility and confidence probabilities."""

    coords: torch.Tensor  # [B, T, N, 2]
    vis: torch.Tensor  # [B, T, N]
    conf: torch.Tensor  # [B, T, N]


class CoTrackerThree(nn.Module):
    """CoTracker3 with a time embedding for ``window_len`` frames (60 offline, 16 online)."""

    def __init__(
        self,
        window_len: int = 60,
        stride: int = 4,
        corr_radius: int = 3,
        corr_levels: int = 4,
        num_virtual_tracks: int = 64,
        model_resolution: tuple[int, int] = (384, 512),
    ) -> None:
        super().__init__()
        self.window_len = window_len
        self.stride = stride
        self.corr_radius = corr_radius
        self.corr_levels = corr_levels
        self.model_resolution = model_resolution
        # Frames through the CNN at a time: its activations, not the features kept, set the peak
        # memory (a 384x512 frame's first layers hold ~40 MB); per-frame results do not depend on
        # it.
        self.encode_chunk = 8
        side = 2 * corr_radius + 1
        # vis + conf + per-level correlation embeddings + Fourier motion encoding (4 * 21).
        input_dim = 2 + 256 * corr_levels + 4 * 21
        self.fnet = BasicEncoder(input_dim=3, output_dim=LATENT_DIM, stride=stride)
        self.updateformer = EfficientUpdateFormer(
            space_depth=3, time_depth=3, input_dim=input_dim, hidden_size=384, output_dim=4,
            mlp_ratio=4.0, num_virtual_tracks=num_virtual_tracks,
        )
        self.corr_mlp = Mlp(side**4, 384, 256)
        self.register_buffer("time_emb", sincos_embedding(input_dim, torch.arange(window_len)))
        # Neighbourhood offsets in the checkpoints' order: the first grid axis moves x.
        r = torch.arange(-corr_radius, corr_radius + 1, dtype=torch.float32)
        di, dj = torch.meshgrid(r, r, indexing="ij")
        self.register_buffer("offsets", torch.stack([di, dj], dim=-1).reshape(-1, 2), persistent=False)

    # ------------------------------------------------------------------ features
    def encode(self, video: torch.Tensor) -> list[torch.Tensor]:
        """Frames ``[B, T, 3, H, W]`` in 0..255 -> feature pyramid, per level ``[B, T, C, h, w]``
        (unit-norm features at level 0, each next level average-pooled by 2)."""
        b, t = video.shape[:2]
        chunk = self.encode_chunk
        if video.shape[-2] % self.stride or video.shape[-1] % self.stride:
            raise ValueError(f"frame size {tuple(video.shape[-2:])} is not a multiple of {self.stride}")
        frames = video.flatten(0, 1)
        fmaps = torch.cat([self.fnet(2 * (frames[i : i + chunk] / 255.0) - 1.0) for i in range(0, len(frames), chunk)])
        norm = torch.sqrt(torch.clamp(fmaps.square().sum(dim=1, keepdim=True), min=1e-12))
        fmaps = (fmaps / norm).to(video.dtype)
        pyramid = [fmaps]
        for _ in range(self.corr_levels - 1):
            pyramid.append(F.avg_pool2d(pyramid[-1], 2, stride=2))
        return [level.unflatten(0, (b, t)) for level in pyramid]

    def neighbourhoods(self, fmap: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        """Features of the 7x7 neighbourhood of each point: ``fmap [B', C, h, w]``, ``xy [B', N, 2]``
        (level pixels) -> ``[B', N, 49, C]``."""
        return sample_at(fmap, xy[:, :, None] + self.offsets)

    def query_support(self, pyramid: list[torch.Tensor], frames: torch.Tensor, xy: torch.Tensor) -> list[torch.Tensor]:
        """Per level, the neighbourhood features ``[B, N, 49, C]`` of each query on its frame.

        Args:
            pyramid: the features of the frames the queries lie on.
            frames: ``[B, N]`` long, index of each query's frame in ``pyramid`` (clamped into it;
                callers mask queries that lie outside).
            xy: ``[B, N, 2]`` query positions in feature-map pixels.
        """
        t_max = pyramid[0].shape[1] - 1
        frames = frames.clamp(0, t_max)
        out = []
        for level, fmaps in enumerate(pyramid):
            b, _, c = fmaps.shape[:3]
            support = fmaps.new_zeros(b, xy.shape[1], len(self.offsets), c)
            for bi in range(b):
                for t in frames[bi].unique().tolist():
                    sel = frames[bi] == t
                    support[bi, sel] = self.neighbourhoods(fmaps[bi, t][None], xy[bi, sel][None] / 2**level)[0]
            out.append(support)
        return out

    def time_embedding(self, t: int) -> torch.Tensor:
        if t == self.time_emb.shape[1]:
            return self.time_emb
        return F.interpolate(self.time_emb.transpose(1, 2), size=t, mode="linear").transpose(1, 2)

    # ------------------------------------------------------------------ refinement
    def refine(
        self,
        pyramid: list[torch.Tensor],
        support: list[torch.Tensor],
        coords: torch.Tensor,
        vis: torch.Tensor,
        conf: torch.Tensor,
        iters: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``iters`` transformer updates of tracks through the frames of ``pyramid``.

        Args:
            coords: ``[B, T, N, 2]`` starting positions (feature-map pixels).
            vis, conf: ``[B, T, N]`` starting logits.

        Returns the updated ``coords``, ``vis`` and ``conf`` (logits).
        """
        b, t, n = coords.shape[:3]
        motion_scale = coords.new_tensor([self.model_resolution[1], self.model_resolution[0]]) / self.stride
        time_emb = self.time_embedding(t)
        for _ in range(iters):
            corr = []
            for level, (fmaps, sup) in enumerate(zip(pyramid, support)):
                around = self.neighbourhoods(fmaps.flatten(0, 1), coords.flatten(0, 1) / 2**level)
                volume = torch.einsum("btnpc,bnqc->btnpq", around.unflatten(0, (b, t)), sup)
                corr.append(self.corr_mlp(volume.reshape(b, t, n, -1)))
            to_prev = F.pad(coords[:, :-1] - coords[:, 1:], (0, 0, 0, 0, 0, 1))
            to_next = F.pad(coords[:, 1:] - coords[:, :-1], (0, 0, 0, 0, 1, 0))
            motion = fourier_encode(torch.cat([to_prev, to_next], dim=-1) / motion_scale.repeat(2))
            x = torch.cat([vis[..., None], conf[..., None], *corr, motion], dim=-1).transpose(1, 2)
            delta = self.updateformer(x + time_emb[:, None]).transpose(1, 2)
            coords = coords + delta[..., :2]
            vis = vis + delta[..., 2]
            conf = conf + delta[..., 3]
        return coords, vis, conf

    # ------------------------------------------------------------------ offline
    def forward(self, video: torch.Tensor, queries: torch.Tensor, iters: int = 4) -> TrackOutput:
        """Track ``queries [B, N, 3]`` (t, x, y) through the whole clip ``video [B, T, 3, H, W]``
        (0..255) at once: every track is refined over all frames, before its query too."""
        b, t = video.shape[:2]
        pyramid = self.encode(video)
        xy = queries[..., 1:] / self.stride
        support = self.query_support(pyramid, queries[..., 0].long(), xy)
        coords = xy[:, None].expand(b, t, -1, -1).float()
        zeros = coords.new_zeros(coords.shape[:3])
        coords, vis, conf = self.refine(pyramid, support, coords, zeros, zeros, iters)
        return TrackOutput(coords * self.stride, torch.sigmoid(vis), torch.sigmoid(conf))

    # ------------------------------------------------------------------ online
    @property
    def step(self) -> int:
        """Frames the online window moves by (half the window)."""
        return self.window_len // 2

    def online_step(self, state: OnlineState, chunk: torch.Tensor, iters: int = 4) -> TrackOutput:
        """Refine the window of frames ``state.start ..`` from the next ``chunk`` of frames
        ``[B, T <= window_len, 3, H, W]``; returns that window's tracks (probabilities) and
        advances ``state`` by :attr:`step`.

        A window covers ``window_len`` frames (the last chunk is padded with its last frame). It
        starts from the previous window's predictions on the frames both share, so a track is
        final once the window has moved past it. Tracks whose query lies in a later frame take
        part with empty query features. Only the frames new to this window are encoded; the
        shared ones' features are kept from the last window.
        """
        s, step = self.window_len, self.step
        b, t = chunk.shape[:2]
        if not 1 <= t <= s:
            raise ValueError(f"an online chunk has 1 to {s} frames, got {t}")
        known = 0 if state.features is None else state.features[0].shape[1]
        if known > t:
            raise ValueError(f"the chunk must hold the {known} frames this window shares with the last one")
        fresh = self.encode(chunk[:, known:])
        pyramid = fresh if state.features is None else [torch.cat(p, dim=1) for p in zip(state.features, fresh)]
        # A short last chunk is padded with its last frame, as the official code pads it.
        pyramid = [torch.cat([p, p[:, -1:].expand(-1, s - t, *p.shape[2:])], dim=1) for p in pyramid] if t < s else pyramid
        state.features = [p[:, step:t].clone() for p in pyramid] if t > step else None  # not views of the window
        q_frames = state.queries[..., 0].long()
        xy = state.queries[..., 1:] / self.stride
        n = xy.shape[1]

        # Each query's neighbourhood is taken once, on the first window whose new frames hold it.
        first_new = 0 if state.start == 0 else state.start + step
        new = ((q_frames >= first_new) & (q_frames < state.start + s))[..., None, None]
        support = self.query_support(pyramid, q_frames - state.start, xy)
        if state.support is None:
            state.support = [torch.zeros_like(level) for level in support]
        state.support = [acc + level * new for acc, level in zip(state.support, support)]
        started = (q_frames < state.start + s)[..., None, None]
        support = [level * started for level in state.support]

        coords = xy[:, None].expand(b, s, n, 2).float()
        vis = coords.new_zeros(b, s, n)
        conf = coords.new_zeros(b, s, n)
        if state.overlap is not None:
            # Tracks that started in the shared frames continue from there; their last shared
            # prediction stands in for the frames the window adds.
            carried = (q_frames < state.start + s - step)[:, None, :]
            prev = [torch.cat([p, p[:, -1:].expand(-1, step, *p.shape[2:])], dim=1) for p in state.overlap]
            coords = torch.where(carried[..., None], prev[0], coords)
            vis = torch.where(carried, prev[1], vis)
            conf = torch.where(carried, prev[2], conf)
        coords, vis, conf = self.refine(pyramid, support, coords, vis, conf, iters)
        coords, vis, conf = coords[:, :t], vis[:, :t], conf[:, :t]
        state.overlap = (coords[:, step:], vis[:, step:], conf[:, step:]) if t > step else None
        state.start += step
        return TrackOutput(coords * self.stride, torch.sigmoid(vis), torch.sigmoid(conf))
