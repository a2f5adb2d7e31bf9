"""SAM's input transforms: the one place that maps frames and prompts into the model's frame.

SAM-family encoders take a ``1024 x 1024`` input: the frame resized so that its longest side is
1024 (aspect ratio kept), normalised with ImageNet statistics in 0-255 units, and zero-padded
on the right and bottom. Prompts (points, boxes) must be mapped by the same resize. Masks go
back by :func:`upscale_logits` (SAM's own ONNX decoder does that in its graph, to
``orig_im_size``).

Coordinates are (x, y) float pixels in SAM's convention: a point is scaled by ``new / old`` per
axis, which treats pixel ``i`` as covering ``[i, i + 1)``. OpenCV's ``INTER_LINEAR`` uses the
same half-pixel-centred geometry, so image content and prompts stay aligned (the tests check
this). A point given as a pixel index (pixel ``i``'s centre at ``x = i``, as points sampled from
a mask are) lands ``0.5 * (scale - 1)`` resized pixels off its exact image, 0.1 px for DAVIS
frames: far below what changes a mask, and SAM was trained with this convention.

Resizing uses ``cv2.resize(..., INTER_LINEAR)``, while SAM's reference code resizes with
PIL's bilinear filter. For upscaling (e.g. 854x480 DAVIS frames to 1024x576) the two are the
same interpolation and differ only in rounding: at most 1 grey level, mean absolute difference
0.24 on DAVIS bear/00000. For downscaling, PIL's filter widens with the scale factor
(anti-aliasing) while ``INTER_LINEAR`` does not, so frames larger than 1024 are shrunk with
``INTER_AREA``, which also averages over the source footprint: on a 1920x1080 frame its mean
absolute difference to PIL is 0.76 (2.0 with added pixel noise) against 1.31 (6.1) for
``INTER_LINEAR``.

Models of the SAM family differ in a few of these choices, which :class:`InputSpec` names: the
encoder's input size (EfficientViT-SAM L: 512) may differ from the frame prompts and masks are
in (always SAM's 1024), and EfficientSAM stretches the frame to its square input (bilinear,
without anti-aliasing, as ``F.interpolate``) instead of keeping its aspect, so prompts scale by
a different factor per axis.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Sequence

import cv2
import numpy as np

if TYPE_CHECKING:
    from .base import Prompt

IMAGE_SIZE = 1024
# The image encoders' output stride: an embedding cell covers 16 x 16 input pixels, so unpadded
# inputs are padded to multiples of it.
PATCH = 16
# Prompts with at least this many tokens (points, box corners, SAM's padding point) take the
# single-mask output; shorter, ambiguous ones the best multimask output.
SINGLE_MASK_MIN_TOKENS = 3
# ImageNet statistics in 0-255 units, as SAM was trained with (RGB order).
PIXEL_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
PIXEL_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


@dataclass(frozen=True)
class InputSpec:
    """How one model of the SAM family takes its frames and prompts (defaults: SAM's).

    Attributes:
        encoder_size: the encoder input's side: the longest side of the resized frame, which is
            zero-padded to the square (EfficientViT-SAM L: 512).
        prompt_size: the side of the square frame that prompt coordinates and the low-res masks
            refer to (the prompt encoder's input size; 1024 for every released model).
        resize: ``longest_side`` (aspect kept, padded) or ``square`` (stretched to the square).
        pixel_mean, pixel_std: per-channel normalisation in 0-255 units, RGB.
        any_aspect: the encoder also runs on inputs padded only to multiples of 16 (unpadded).
        mask_prompts: the prompt encoder takes a low-res mask prompt.
        prompt_length: None: SAM's prompts (a "not a point" token when there is no box, batches
            padded with masked-out tokens); an int: every prompt has exactly this many tokens,
            padded with "invalid" points at (-1, -1) that take part in attention and cut after it
            (EfficientSAM: 6). Box corners then come first, so a long prompt keeps its box.
        upscale: ``sam``: low-res masks go up to ``prompt_size``, lose the padding and go to the
            frame's size (bilinear); ``bicubic``: straight to the frame's size (EfficientSAM).
    """

    encoder_size: int = IMAGE_SIZE
    prompt_size: int = IMAGE_SIZE
    resize: Literal["longest_side", "square"] = "longest_side"
    pixel_mean: tuple[float, float, float] = tuple(PIXEL_MEAN.tolist())
    pixel_std: tuple[float, float, float] = tuple(PIXEL_STD.tolist())
    any_aspect: bool = True
    mask_prompts: bool = True
    prompt_length: int | None = None
    upscale: Literal["sam", "bicubic"] = "sam"

    def input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """``(h, w)`` of the frame inside the ``prompt_size`` square (what
        :attr:`ImageEmbedding.input_size <samtrack.segmenters.base.ImageEmbedding.input_size>` holds)."""
        if self.resize == "square":
            return self.prompt_size, self.prompt_size
        return resized_shape(*original_size, self.prompt_size)


SAM_INPUTS = InputSpec()


def resized_shape(height: int, width: int, long_side: int = IMAGE_SIZE) -> tuple[int, int]:
    """``(h, w)`` of a ``height x width`` frame whose longest side is scaled to ``long_side``.

    Rounds half up, exactly as SAM does, so that sizes (and hence prompts) agree with it.
    """
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_longest_side(image: np.ndarray, long_side: int = IMAGE_SIZE) -> np.ndarray:
    """Resize a ``[H, W, C]`` image so that its longest side is ``long_side`` (aspect kept)."""
    height, width = image.shape[:2]
    new_h, new_w = resized_shape(height, width, long_side)
    if (new_h, new_w) == (height, width):
        return image
    # INTER_AREA when shrinking: it anti-aliases like the PIL filter SAM was trained with.
    interpolation = cv2.INTER_AREA if new_h < height else cv2.INTER_LINEAR
    return cv2.resize(image, (new_w, new_h), interpolation=interpolation)


def padded_shape(input_size: tuple[int, int], size: int = IMAGE_SIZE, multiple: int | None = None) -> tuple[int, int]:
    """The encoder input's ``(H, W)`` for a frame resized to ``input_size``: the ``size`` square,
    or, with ``multiple``, each side padded only up to a multiple of it (an encoder that runs at
    any aspect then encodes no square padding)."""
    if multiple is None:
        return size, size
    return tuple(-(-side // multiple) * multiple for side in input_size)


def preprocess(
    image: np.ndarray, size: int = IMAGE_SIZE, multiple: int | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Turn an RGB frame into the encoder's input.

    Args:
        image: uint8 ``[H, W, 3]`` RGB.
        size: the encoder's input size (the longest side after resizing).
        multiple: None pads to the ``size x size`` square (SAM); otherwise each side is padded
            only to a multiple of this (see :func:`padded_shape`).

    Returns:
        ``(tensor, input_size)``: float32 ``[1, 3, H, W]`` (normalised, zero-padded
        right/bottom; padding is 0 *after* normalisation, as in SAM) and ``(h, w)`` of the
        resized frame inside the padding.
    """
    resized = resize_longest_side(image, size)
    h, w = resized.shape[:2]
    tensor = np.zeros((1, 3, *padded_shape((h, w), size, multiple)), dtype=np.float32)
    # Write each channel straight into its padded NCHW slot: no HWC float copy of the frame.
    for c in range(3):
        plane = tensor[0, c, :h, :w]
        np.subtract(resized[:, :, c], PIXEL_MEAN[c], out=plane, dtype=np.float32)
        plane /= PIXEL_STD[c]
    return tensor, (h, w)


def preprocess_spec(
    image: np.ndarray, spec: InputSpec, multiple: int | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`preprocess` for the model ``spec`` describes: float32 ``[1, 3, H, W]`` and the
    frame's ``(h, w)`` in the prompt frame (``spec.input_size``)."""
    size = spec.encoder_size
    if spec.resize == "square":
        if multiple is not None:
            raise ValueError("a model that stretches frames to its square input has no unpadded input")
        # In float, as the reference interpolates its [0, 1] tensor (bilinear, no anti-aliasing,
        # half-pixel centres: what INTER_LINEAR computes).
        resized = image if image.shape[:2] == (size, size) else cv2.resize(
            image.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    else:
        resized = resize_longest_side(image, size)
    h, w = resized.shape[:2]
    tensor = np.zeros((1, 3, *padded_shape((h, w), size, multiple)), dtype=np.float32)
    for c in range(3):
        plane = tensor[0, c, :h, :w]
        np.subtract(resized[:, :, c], np.float32(spec.pixel_mean[c]), out=plane, dtype=np.float32)
        plane /= np.float32(spec.pixel_std[c])
    return tensor, spec.input_size(image.shape[:2])


def apply_coords(coords: np.ndarray, original_size: tuple[int, int], long_side: int = IMAGE_SIZE,
                 square: bool = False) -> np.ndarray:
    """Map float ``[..., 2]`` (x, y) pixels of an ``original_size = (H, W)`` frame into the
    resized frame (``square``: the frame stretched to ``long_side x long_side``); returns a new
    float32 array. Boxes map as their two corners."""
    height, width = original_size
    new_h, new_w = (long_side, long_side) if square else resized_shape(height, width, long_side)
    scale = np.array([new_w / width, new_h / height], dtype=np.float32)
    return np.asarray(coords, dtype=np.float32) * scale


def prompt_tokens(
    points: np.ndarray | None, labels: np.ndarray | None, box: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Stack points and box corners into SAM's prompt tokens: float32 ``[M, 2]`` (x, y), in the
    coordinates they were given in, and float32 ``[M]`` labels (1/0 points, 2/3 box corners, -1
    the padding point SAM adds when there is no box).

    Raises:
        ValueError: no prompt at all, or prompts of the wrong shape or label values.
    """
    if points is None and box is None:
        raise ValueError("decode needs points or a box")
    coords, kinds = [], []
    if points is not None:
        points = np.asarray(points, dtype=np.float32)
        if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
            raise ValueError(f"points must be [N, 2] with N >= 1, got {points.shape}")
        if labels is None:
            raise ValueError("points need labels (1 positive, 0 negative)")
        labels = np.asarray(labels)
        if labels.shape != (len(points),):
            raise ValueError(f"labels must be [{len(points)}], got {labels.shape}")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("labels must be 1 (positive) or 0 (negative)")
        coords.append(points)
        kinds.append(labels.astype(np.float32))
    elif labels is not None:
        raise ValueError("labels given without points")
    if box is not None:
        box = np.asarray(box, dtype=np.float32)
        if box.shape != (4,):
            raise ValueError(f"box must be [4] (x0, y0, x1, y1), got {box.shape}")
        coords.append(box.reshape(2, 2))
        kinds.append(np.array([2, 3], dtype=np.float32))
    else:
        # SAM's prompt encoder pads point prompts that come without a box (its ONNX export
        # leaves that padding point to the caller).
        coords.append(np.zeros((1, 2), dtype=np.float32))
        kinds.append(np.array([-1], dtype=np.float32))
    return np.concatenate(coords), np.concatenate(kinds)


def batch_prompt_tokens(
    prompts: "Sequence[Prompt]", original_size: tuple[int, int], long_side: int = IMAGE_SIZE,
    spec: InputSpec | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every prompt set's tokens (:func:`prompt_tokens`) mapped into the resized frame and padded
    to one length with SAM's "not a point" token: float32 coords ``[B, N, 2]`` and labels
    ``[B, N]``, and bool ``[B, N]``, False where a row was padded (for the attention mask).

    With a ``spec`` of fixed ``prompt_length`` (EfficientSAM), the tokens are laid out as that
    model's reference does instead (see :class:`InputSpec`); the bool array then marks the real
    tokens, but every token takes part in attention."""
    if spec is not None and spec.prompt_length is not None:
        return _fixed_length_tokens(prompts, original_size, spec)
    if spec is not None:
        long_side = spec.prompt_size
    tokens = [prompt_tokens(p.points, p.labels, p.box) for p in prompts]
    n = max(len(c) for c, _ in tokens)
    coords = np.zeros((len(tokens), n, 2), np.float32)
    labels = np.full((len(tokens), n), -1, np.float32)
    valid = np.zeros((len(tokens), n), bool)
    for i, (c, kinds) in enumerate(tokens):
        coords[i, : len(c)] = apply_coords(c, original_size, long_side)
        labels[i, : len(c)] = kinds
        valid[i, : len(c)] = True
    return coords, labels, valid


def _fixed_length_tokens(
    prompts: "Sequence[Prompt]", original_size: tuple[int, int], spec: InputSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = spec.prompt_length
    coords = np.full((len(prompts), n, 2), -1.0, np.float32)
    labels = np.full((len(prompts), n), -1, np.float32)
    real = np.zeros((len(prompts), n), bool)
    square = spec.resize == "square"
    for i, p in enumerate(prompts):
        c, kinds = prompt_tokens(p.points, p.labels, p.box)
        keep = kinds != -1  # SAM's padding point: this layout pads with its own invalid points
        c, kinds = c[keep], kinds[keep]
        order = np.argsort(kinds < 2, kind="stable")  # box corners (2, 3) first, points after
        c, kinds = c[order][:n], kinds[order][:n]
        coords[i, : len(c)] = apply_coords(c, original_size, spec.prompt_size, square=square)
        labels[i, : len(c)] = kinds
        real[i, : len(c)] = True
    return coords, labels, real


def batch_mask_inputs(prompts: "Sequence[Prompt]", shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The prompt sets' low-res mask prompts stacked, float32 ``[B, 1, *shape]`` (zeros where a
    set has none), and bool ``[B]``: which sets have one."""
    stack = np.zeros((len(prompts), 1, *shape), np.float32)
    given = np.array([p.mask_input is not None for p in prompts])
    for i, p in enumerate(prompts):
        if p.mask_input is not None:
            mask = np.asarray(p.mask_input, np.float32)
            if mask.shape != tuple(shape):
                raise ValueError(f"mask_input must be {list(shape)} for this embedding, got {mask.shape}")
            stack[i, 0] = mask
    return stack, given


def single_mask_index(iou: np.ndarray, n_tokens: np.ndarray) -> np.ndarray:
    """Which of SAM's four outputs (``iou``: ``[B, 4]`` predicted IoUs) a single-mask decode
    returns for prompts of ``n_tokens`` ``[B]`` real tokens: SAM's ONNX export's rule."""
    best_multi = iou[:, 1:].argmax(axis=1) + 1
    return np.where(n_tokens >= SINGLE_MASK_MIN_TOKENS, 0, best_multi)


def upscale_logits(low_res: np.ndarray, input_size: tuple[int, int], original_size: tuple[int, int]) -> np.ndarray:
    """float32 ``[4h, 4w]`` low-res logits of an ``h x w`` embedding -> ``[H, W]`` logits at the
    frame's original size, as SAM's postprocessing: bilinear up to the encoder input (16 x the
    embedding, padding included), crop to the resized frame (``input_size``), bilinear to the
    frame. ``cv2.resize`` samples as ``F.interpolate(align_corners=False)`` without
    anti-aliasing (within 1e-4 of SAM's graph on DAVIS frames)."""
    height, width = original_size
    up = cv2.resize(low_res, (4 * low_res.shape[1], 4 * low_res.shape[0]), interpolation=cv2.INTER_LINEAR)
    up = up[: input_size[0], : input_size[1]]
    return cv2.resize(up, (width, height), interpolation=cv2.INTER_LINEAR)
