"""SAM pre-processing and the MobileSAM ONNX segmenter on real DAVIS frames and weights."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from samtrack.errors import WeightsError
from samtrack.sampling import sample_points
from samtrack.segmenters import transforms
from samtrack.segmenters.base import ImageEmbedding, Segmenter
from samtrack.segmenters.mobilesam_onnx import MobileSamOnnx
from .conftest import load_frame, load_gt

# -- transforms ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((480, 854), (576, 1024)),
        ((854, 480), (1024, 576)),
        ((1024, 1024), (1024, 1024)),
        ((1080, 1920), (576, 1024)),
        # 5 * 1024 / 2048 = 2.5: SAM rounds half up (Python's round() would give 2).
        ((5, 2048), (3, 1024)),
    ],
)
def test_resized_shape_uses_sams_rounding(shape: tuple[int, int], expected: tuple[int, int]) -> None:
    assert transforms.resized_shape(*shape) == expected


def test_preprocess_normalises_then_zero_pads() -> None:
    image = np.zeros((480, 854, 3), np.uint8)
    image[:, 427:] = 255  # right half white
    tensor, input_size = transforms.preprocess(image)
    assert tensor.shape == (1, 3, 1024, 1024) and tensor.dtype == np.float32
    assert input_size == (576, 1024)
    black = -transforms.PIXEL_MEAN / transforms.PIXEL_STD
    white = (255 - transforms.PIXEL_MEAN) / transforms.PIXEL_STD
    np.testing.assert_allclose(tensor[0, :, :576, :400], black[:, None, None] * np.ones((1, 576, 400)), rtol=1e-6)
    np.testing.assert_allclose(tensor[0, :, :576, 600:], white[:, None, None] * np.ones((1, 576, 424)), rtol=1e-6)
    # SAM pads after normalising, so the pad is 0 (the mean colour), not black (-mean/std).
    assert not tensor[0, :, 576:, :].any()


def test_preprocess_keeps_rgb_channel_order() -> None:
    image = np.zeros((64, 32, 3), np.uint8)
    image[..., 0] = 200  # red only
    tensor, input_size = transforms.preprocess(image)
    assert input_size == (1024, 512)
    channel_means = tensor[0, :, :1024, :512].mean(axis=(1, 2))
    expected = (np.array([200, 0, 0]) - transforms.PIXEL_MEAN) / transforms.PIXEL_STD
    np.testing.assert_allclose(channel_means, expected, rtol=1e-5)


@pytest.mark.parametrize("shape", [(480, 854), (1080, 1920), (300, 200)])
def test_coords_follow_the_resized_image(shape: tuple[int, int]) -> None:
    """A blob at (x, y) in the frame lands where apply_coords says, in the resized frame."""
    height, width = shape
    centre = np.array([0.37 * width + 0.3, 0.61 * height + 0.7])
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    sigma = 0.02 * max(shape)
    blob = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma**2))
    image = np.repeat((blob * 255).round().astype(np.uint8)[..., None], 3, axis=2)

    resized = transforms.resize_longest_side(image)[..., 0].astype(np.float64)
    assert resized.shape == transforms.resized_shape(height, width)
    ry, rx = np.mgrid[0 : resized.shape[0], 0 : resized.shape[1]]
    found = np.array([(rx * resized).sum(), (ry * resized).sum()]) / resized.sum()
    # Pixel i covers [i, i + 1) in SAM's convention, so index centres sit at +0.5.
    mapped = transforms.apply_coords(centre + 0.5, shape) - 0.5
    np.testing.assert_allclose(found, mapped, atol=0.05)


def test_frame_corners_map_to_the_resized_frame() -> None:
    corners = np.array([[0, 0], [854, 480]], np.float32)
    np.testing.assert_allclose(transforms.apply_coords(corners, (480, 854)), [[0, 0], [1024, 576]], rtol=1e-6)


def test_resize_matches_pil_bilinear_when_upscaling(davis16) -> None:
    """cv2 INTER_LINEAR stands in for the PIL bilinear resize SAM uses (see transforms)."""
    from PIL import Image

    image = load_frame(davis16, "bear", 0)
    h, w = transforms.resized_shape(*image.shape[:2])
    ours = transforms.resize_longest_side(image).astype(np.int16)
    pil = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR)).astype(np.int16)
    diff = np.abs(ours - pil)
    assert diff.max() <= 1 and diff.mean() < 0.5


# -- the segmenter ---------------------------------------------------------------------------------


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def encoded(segmenter, davis16):
    """(frame, ground truth, embedding) per sequence, encoded once for the module."""
    cache: dict[str, tuple[np.ndarray, np.ndarray, ImageEmbedding]] = {}

    def get(seq: str):
        if seq not in cache:
            frame = load_frame(davis16, seq, 0)
            cache[seq] = (frame, load_gt(davis16, seq, 0), segmenter.encode(frame))
        return cache[seq]

    return get


def kmedoid_prompt(gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    points = sample_points(gt, 8, "kmedoids", np.random.default_rng(0))
    return points, np.ones(len(points), np.int64)


def gt_box(gt: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(gt)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def test_prompt_layout_follows_the_sam_onnx_export() -> None:
    """Points first, then box corners (labels 2, 3); without a box, SAM's (0, 0) / -1 padding point."""
    from samtrack.segmenters.transforms import prompt_tokens

    points = np.array([[5, 6], [7, 8]], np.float32)
    coords, labels = prompt_tokens(points, np.array([1, 0]), None)
    np.testing.assert_array_equal(coords, [[5, 6], [7, 8], [0, 0]])
    np.testing.assert_array_equal(labels, [1, 0, -1])
    coords, labels = prompt_tokens(points, np.array([1, 1]), np.array([1, 2, 3, 4]))
    np.testing.assert_array_equal(coords, [[5, 6], [7, 8], [1, 2], [3, 4]])
    np.testing.assert_array_equal(labels, [1, 1, 2, 3])
    assert coords.dtype == labels.dtype == np.float32


def test_is_a_segmenter(segmenter) -> None:
    assert isinstance(segmenter, Segmenter) and segmenter.name == "mobilesam-onnx"


def test_embedding_shapes(encoded) -> None:
    frame, _, embedding = encoded("bear")
    assert embedding.features.shape == (1, 256, 64, 64) and embedding.features.dtype == np.float32
    assert embedding.original_size == (480, 854) and embedding.input_size == (576, 1024)


@pytest.mark.parametrize("seq", ["bear", "bus"])
def test_kmedoid_points_segment_the_object(segmenter, encoded, seq: str) -> None:
    _, gt, embedding = encoded(seq)
    points, labels = kmedoid_prompt(gt)
    assert points.shape == (8, 2)
    prediction = segmenter.decode(embedding, points, labels)
    assert prediction.logits.shape == gt.shape and prediction.logits.dtype == np.float32
    assert prediction.low_res_logits.shape == (256, 256)
    assert iou(prediction.mask, gt) >= 0.8
    assert 0.5 < prediction.iou <= 1.1


def test_box_prompt_segments_the_object(segmenter, encoded) -> None:
    _, gt, embedding = encoded("bear")
    prediction = segmenter.decode(embedding, box=gt_box(gt))
    assert iou(prediction.mask, gt) >= 0.8


def test_prompts_mean_what_they_say(segmenter, encoded) -> None:
    """A point off the object segments something else; a negative point there changes nothing."""
    _, gt, embedding = encoded("bear")
    far = cv2.dilate(gt.astype(np.uint8), np.ones((61, 61), np.uint8)) == 0
    ys, xs = np.nonzero(far)
    background = np.array([[xs[len(xs) // 2], ys[len(ys) // 2]]], np.float32)
    elsewhere = segmenter.decode(embedding, background, np.array([1]))
    assert iou(elsewhere.mask, gt) < 0.2

    points, labels = kmedoid_prompt(gt)
    with_negative = segmenter.decode(
        embedding, np.concatenate([points, background]), np.concatenate([labels, [0]])
    )
    assert iou(with_negative.mask, gt) >= 0.8


def test_mask_input_round_trip(segmenter, encoded) -> None:
    _, gt, embedding = encoded("bear")
    points, labels = kmedoid_prompt(gt)
    first = segmenter.decode(embedding, points, labels)
    refined = segmenter.decode(embedding, points, labels, box=gt_box(gt), mask_input=first.low_res_logits)
    assert iou(refined.mask, gt) >= 0.8
    assert iou(refined.mask, first.mask) >= 0.9
    # The mask input is really used: a nonsense one changes the logits.
    garbage = segmenter.decode(embedding, points, labels, mask_input=np.full((256, 256), -20, np.float32))
    assert not np.allclose(garbage.logits, first.logits)


def test_decode_is_deterministic_and_leaves_inputs_alone(segmenter, encoded) -> None:
    _, gt, embedding = encoded("bear")
    points, labels = kmedoid_prompt(gt)
    kept = points.copy()
    a = segmenter.decode(embedding, points, labels)
    b = segmenter.decode(embedding, points, labels)
    np.testing.assert_array_equal(a.logits, b.logits)
    np.testing.assert_array_equal(points, kept)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "points or a box"),
        ({"points": np.zeros((2, 2), np.float32)}, "labels"),
        ({"points": np.zeros((2, 2), np.float32), "labels": np.ones(3)}, r"labels must be \[2\]"),
        ({"points": np.zeros((1, 2), np.float32), "labels": np.array([2])}, "1 .positive. or 0"),
        ({"points": np.zeros((2, 3), np.float32), "labels": np.ones(2)}, r"\[N, 2\]"),
        ({"points": np.zeros((0, 2), np.float32), "labels": np.ones(0)}, "N >= 1"),
        ({"labels": np.ones(1), "box": np.array([0, 0, 5, 5])}, "without points"),
        ({"box": np.array([0, 0, 5])}, r"box must be \[4\]"),
        ({"box": np.array([0, 0, 5, 5]), "mask_input": np.zeros((64, 64), np.float32)}, "mask_input"),
    ],
)
def test_bad_decode_calls_raise(segmenter, encoded, kwargs: dict, match: str) -> None:
    _, _, embedding = encoded("bear")
    with pytest.raises(ValueError, match=match):
        segmenter.decode(embedding, **kwargs)


@pytest.mark.parametrize(
    "image", [np.zeros((48, 64), np.uint8), np.zeros((48, 64, 4), np.uint8), np.zeros((48, 64, 3), np.float32)]
)
def test_encode_rejects_non_rgb_uint8(segmenter, image: np.ndarray) -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        segmenter.encode(image)


def test_from_checkpoint_errors_are_weights_errors(tmp_path, mobilesam_checkpoint) -> None:
    with pytest.raises(WeightsError, match=r"lacks encoder\.onnx, sam\.onnx"):
        MobileSamOnnx.from_checkpoint(str(tmp_path))
    (tmp_path / "encoder.onnx").write_bytes(b"not onnx")
    (tmp_path / "sam.onnx").symlink_to(mobilesam_checkpoint / "sam.onnx")
    with pytest.raises(WeightsError, match=r"encoder\.onnx: cannot load ONNX model"):
        MobileSamOnnx.from_checkpoint(str(tmp_path))
    (tmp_path / "encoder.onnx").unlink()
    (tmp_path / "encoder.onnx").symlink_to(mobilesam_checkpoint / "sam.onnx")
    (tmp_path / "sam.onnx").unlink()
    (tmp_path / "sam.onnx").symlink_to(mobilesam_checkpoint / "encoder.onnx")
    with pytest.raises(WeightsError, match="not a SAM ONNX decoder"):
        MobileSamOnnx.from_checkpoint(str(tmp_path))


@pytest.mark.slow
def test_speed_on_two_threads(mobilesam_checkpoint, davis16) -> None:
    """Encoder and decoder time per call on a 480p frame with 2 onnxruntime threads."""
    segmenter = MobileSamOnnx.from_checkpoint(str(mobilesam_checkpoint), threads=2)
    frame, gt = load_frame(davis16, "bear", 0), load_gt(davis16, "bear", 0)
    points, labels = kmedoid_prompt(gt)
    segmenter.decode(segmenter.encode(frame), points, labels)  # warm-up

    start = time.perf_counter()
    for _ in range(3):
        embedding = segmenter.encode(frame)
    encode_s = (time.perf_counter() - start) / 3
    start = time.perf_counter()
    for _ in range(20):
        segmenter.decode(embedding, points, labels)
    decode_s = (time.perf_counter() - start) / 20
    print(f"\nmobilesam-onnx, 2 threads, 854x480: encode {encode_s * 1000:.0f} ms, decode {decode_s * 1000:.1f} ms")
    assert encode_s < 3.0 and decode_s < 0.3


def test_a_prediction_upscaled_on_read_upscales_once_and_only_when_read() -> None:
    from samtrack.segmenters.base import UpscaledOnRead
    from samtrack.segmenters.transforms import upscale_logits

    calls = []

    def upscale(low_res):
        calls.append(1)
        # A 9 x 16 embedding: a 144 x 256 encoder input holding the frame resized to 144 x 256.
        return upscale_logits(low_res, input_size=(144, 256), original_size=(120, 213))

    low_res = np.full((36, 64), -1.0, np.float32)
    low_res[4:20, 8:40] = 1.0
    prediction = UpscaledOnRead(0.9, low_res, upscale)
    assert not calls and prediction.iou == 0.9
    mask = prediction.mask
    assert mask.shape == (120, 213) and mask.any() and not mask.all()
    # The box of the positive logits, scaled by 120/36 and 213/64.
    rows, cols = np.nonzero(mask)
    assert abs(rows.min() - 4 * 120 / 36) <= 2 and abs(rows.max() + 1 - 20 * 120 / 36) <= 2
    assert abs(cols.min() - 8 * 213 / 64) <= 2 and abs(cols.max() + 1 - 40 * 213 / 64) <= 2
    assert prediction.logits is prediction.logits
    assert len(calls) == 1
