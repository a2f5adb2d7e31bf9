"""Shared by the CoTracker3 golden-fixture generator (``tools/cotracker_reference/make_golden.py``,
run beside the official facebookresearch/co-tracker code) and the tests (run on ours): the seeded
random weights, the synthetic clip and the query cases.

The fixtures store only what the official predictor and model computed (plus a checksum of the
clip and the queries), never weights: both sides rebuild the same weights from the seed, key by
key, so the fixtures stay small and a test fails loudly if the generation ever drifts.

Each fixture ``fixtures/cotracker_golden/<case>.npz`` holds:

- ``seed``, ``weights_checksum`` (``weights_checksum`` of the random weights), ``time_emb_checksum``
  (``checksum`` of the model's own ``time_emb`` buffer, which the weights keep);
- ``video_crc`` (zlib.crc32 of the clip's bytes), ``queries`` (the case's queries, ``[N, 3]``);
- ``n_calls`` and, for every raw call ``i`` of the official model's ``forward``, in call order:
  ``call{i}_T`` (frames given), ``call{i}_video_shape`` (``[B, T, 3, H, W]`` after the
  predictor's resize to the model resolution), ``call{i}_video_checksum`` (float64 sum and sum of
  squares of that resized float video), ``call{i}_queries`` (``[B, N', 3]`` in model-resolution
  pixels, support grid included), ``call{i}_coords`` (``[B, T', N', 2]``), ``call{i}_vis`` and
  ``call{i}_conf`` (``[B, T', N']``, after the sigmoid), all float32 as returned;
- offline: ``tracks`` ``[T, N, 2]`` float32 in input pixels and ``visibility`` ``[T, N]`` bool, the
  predictor's outputs (batch dimension dropped);
- online: ``n_steps`` and ``step{k}_tracks`` / ``step{k}_visibility`` (``[T_k, N, 2]`` / ``[T_k, N]``,
  everything tracked so far) for each step after the first (query-storing) call, and ``tracks`` /
  ``visibility``, the last step's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping

import numpy as np

try:  # imported by the tests as tests.cotracker_golden
    from .random_weights import random_state_dict
except ImportError:  # imported as a top-level module by tools/cotracker_reference (tests/ on sys.path)
    from random_weights import random_state_dict

SEED = 20261202
FIXTURE_DIR = Path(__file__).parent / "fixtures" / "cotracker_golden"

# The clip: T frames of H x W, RGB.
NUM_FRAMES, HEIGHT, WIDTH = 40, 48, 64
# The predictors' settings used for the fixtures.
OFFLINE_WINDOW = 60
ONLINE_WINDOW = 16
ONLINE_STEP = ONLINE_WINDOW // 2

# The rule on top of random_state_dict (see random_cotracker_state_dict).
VIS_CONF_WEIGHT_SCALE = 0.25
VIS_CONF_BIAS = (0.05, 0.75)  # (visibility, confidence) logit added at every update iteration
FLOW_WEIGHT_SCALE = 0.25


def random_cotracker_state_dict(template: Mapping[str, "object"]) -> dict:
    """Seeded random weights for a CoTracker3 (offline or online) state_dict ``template``.

    The rule: ``random_state_dict(template, SEED, keep=("time_emb",))`` (weights ``N(0, 1/fan_in)``,
    biases ``N(0, 0.1)``, every key from its own generator), keeping the ``time_emb`` buffer, a
    fixed sin-cos table that the model builds itself; then ``updateformer.vis_conf_head.weight``
    is multiplied by ``VIS_CONF_WEIGHT_SCALE``, ``updateformer.vis_conf_head.bias`` set to
    ``VIS_CONF_BIAS`` and ``updateformer.flow_head.weight`` multiplied by ``FLOW_WEIGHT_SCALE``.

    Why: the visibility and confidence logits are sums of one head output per update iteration
    (six per window, carried over between online windows). With the plain rule each output is
    ~2 and shares a per-seed offset, so the logits end at +5..+11 (visibility) and -12..-22
    (confidence): sigmoids at 1 and 1e-7, blind to any error, and the online predictor's
    ``vis * conf > 0.6`` false everywhere. A quarter of the weights and these biases keep the
    logits within about -3..+10 (the largest in the last online windows), so that the fixtures'
    thresholded visibilities are about half true in every case (offline ``vis > 0.9``, online
    ``vis * conf > 0.6``). The flow head's weights are scaled by ``FLOW_WEIGHT_SCALE``: with the
    plain rule each update moved points by 1-2 feature cells (4-8 px at the model's 384 x 512),
    tracks swept across the frame and six iterations amplified float32 rounding to ~1e-3 px at
    the model's resolution (2e-4 px of the clip), which would hide a real error of that size; a
    quarter keeps tracks moving by 2-3 input pixels over the clip and the rounding at ~1e-5 px.
    """
    import torch

    out = random_state_dict(template, SEED, keep=("time_emb",))
    out["updateformer.vis_conf_head.weight"] = out["updateformer.vis_conf_head.weight"] * VIS_CONF_WEIGHT_SCALE
    out["updateformer.vis_conf_head.bias"] = torch.tensor(VIS_CONF_BIAS, dtype=torch.float32)
    out["updateformer.flow_head.weight"] = out["updateformer.flow_head.weight"] * FLOW_WEIGHT_SCALE
    return out


def _bilinear_upsample(coarse: np.ndarray, cell: int, height: int, width: int) -> np.ndarray:
    """Bilinear interpolation of a coarse ``[h, w, C]`` grid (one node every ``cell`` pixels) onto
    a ``[height, width, C]`` grid, in float64 with explicit index arithmetic (deterministic)."""
    ys = np.arange(height, dtype=np.float64) / cell
    xs = np.arange(width, dtype=np.float64) / cell
    y0 = np.floor(ys).astype(np.int64)
    x0 = np.floor(xs).astype(np.int64)
    wy = (ys - y0)[:, None, None]
    wx = (xs - x0)[None, :, None]
    a = coarse[y0][:, x0]
    b = coarse[y0][:, x0 + 1]
    c = coarse[y0 + 1][:, x0]
    d = coarse[y0 + 1][:, x0 + 1]
    return (1 - wy) * ((1 - wx) * a + wx * b) + wy * ((1 - wx) * c + wx * d)


def texture(seed: int = SEED) -> np.ndarray:
    """A smooth random RGB texture, float64 in [0, 255], large enough for the clip's motion."""
    height, width = HEIGHT + NUM_FRAMES // 2 + 2, WIDTH + NUM_FRAMES + 2
    rng = np.random.default_rng([seed, 1])
    image = np.zeros((height, width, 3))
    for cell, weight in ((16, 1.0), (8, 0.6), (4, 0.35)):
        coarse = rng.standard_normal((height // cell + 2, width // cell + 2, 3))
        image += weight * _bilinear_upsample(coarse, cell, height, width)
    image -= image.min()
    return 255.0 * image / image.max()


def occluder_box(t: int) -> tuple[int, int, int, int] | None:
    """``(y0, y1, x0, x1)`` of the moving occluder square in frame ``t``, or None when absent
    (present in frames 8..27, moving right by 2 px a frame)."""
    if not 8 <= t < 28:
        return None
    size = 12
    y0 = 16
    x0 = 4 + 2 * (t - 8)
    return y0, y0 + size, x0, min(WIDTH, x0 + size)


def video(seed: int = SEED) -> np.ndarray:
    """The synthetic clip, uint8 ``[40, 48, 64, 3]``: the texture seen through a window that moves
    by 1 px a frame to the right and 0.5 px a frame down (the content moves left and up), plus a
    flat dark square, the occluder, passing over it in frames 8..27."""
    tex = texture(seed)
    frames = np.empty((NUM_FRAMES, HEIGHT, WIDTH, 3), np.uint8)
    for t in range(NUM_FRAMES):
        dy, dx = t // 2, t
        frame = tex[dy : dy + HEIGHT, dx : dx + WIDTH].copy()
        box = occluder_box(t)
        if box is not None:
            y0, y1, x0, x1 = box
            frame[y0:y1, x0:x1] = (40.0, 40.0, 60.0)
        frames[t] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return frames


@dataclass(frozen=True)
class Case:
    """One predictor run: ``video()[frames[0]:frames[1]]`` with ``queries`` (rows ``(t, x, y)``,
    ``t`` relative to the clip, ``x, y`` in pixels of the 48 x 64 input).

    ``backward`` is the offline predictor's ``backward_tracking``; ``support_grid`` the online
    predictor's ``add_support_grid`` (the offline predictor always adds its support grid when
    given queries)."""

    name: str
    mode: Literal["offline", "online"]
    frames: tuple[int, int]
    queries: np.ndarray = field(compare=False)
    backward: bool = False
    support_grid: bool = False

    @property
    def num_frames(self) -> int:
        return self.frames[1] - self.frames[0]


def _queries(rows) -> np.ndarray:
    q = np.asarray(rows, np.float32)
    q.setflags(write=False)
    return q


_OFFLINE_QUERIES = _queries([
    [0, 10.0, 8.0],
    [0, 33.5, 24.25],
    [0, 55.0, 40.0],
    [6, 20.0, 30.0],  # mid-clip queries: tracked backward only with backward_tracking
    [6, 47.75, 12.5],
])

CASES: tuple[Case, ...] = (
    Case("offline_short", "offline", (0, 12), _OFFLINE_QUERIES, backward=True),
    Case("offline_forward", "offline", (0, 12), _OFFLINE_QUERIES, backward=False),
    Case("online_short", "online", (0, 10), _queries([
        [0, 6.0, 6.0],
        [0, 30.0, 22.0],
        [0, 58.5, 17.25],
        [0, 14.0, 41.0],
    ]), support_grid=True),
    Case("online_long", "online", (0, 37), _queries([
        [0, 8.0, 10.0],
        [0, 22.0, 21.5],  # under the occluder's path (rows 16..27)
        [0, 44.0, 33.0],
        [0, 60.0, 4.0],
        [20, 26.0, 20.0],  # queries inside the third window, on a frame the occluder is in
        [20, 50.25, 38.5],
    ]), support_grid=False),
)


def case_path(case: Case) -> Path:
    return FIXTURE_DIR / f"{case.name}.npz"


def clip(case: Case) -> np.ndarray:
    """The case's frames of ``video()``, uint8 ``[T, 48, 64, 3]``."""
    start, stop = case.frames
    return video()[start:stop]


def checksum(array) -> np.ndarray:
    """Float64 sum and sum of squares: catches drift in generated inputs and weights."""
    a = np.asarray(array, np.float64)
    return np.array([a.sum(), (a * a).sum()])


def weights_checksum(state_dict: Mapping[str, "object"]) -> np.ndarray:
    """``checksum`` of every floating tensor but ``time_emb``, keys in sorted order (so it does not
    depend on the modules' declaration order)."""
    parts = [
        np.asarray(value.detach().cpu().numpy(), np.float64).ravel()
        for key, value in sorted(state_dict.items())
        if value.dtype.is_floating_point and not key.endswith("time_emb")
    ]
    return checksum(np.concatenate(parts))
