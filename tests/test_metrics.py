"""J, F and their statistics: reproduce the official DAVIS numbers, plus hand-made cases."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samtrack.eval import metrics
from samtrack.eval.metrics import boundary_f, db_statistics, region_similarity

# Frame size of DAVIS 480p: the default tolerance there is ceil(0.008 * hypot(480, 854)) = 8.
H, W = 480, 854


def _load_stack(folder: Path, frames: range, *, convert_l: bool) -> np.ndarray:
    def load(i: int) -> np.ndarray:
        image = Image.open(folder / f"{i:05d}.png")
        return np.asarray(image.convert("L") if convert_l else image) > 0

    return np.stack([load(i) for i in frames])


def test_reproduces_official_per_frame_values(davis16: Path, davis16_ref: Path) -> None:
    """THE equivalence test: J and F of the published FSEG results against the ground truth,
    every frame of the 14 sequences, equal the official per-frame numbers.

    The official values are rounded to 3 decimals, so an exact implementation is within 0.0005
    of each (up to float noise); that is what is asserted (stricter than the 0.001 contract).
    """
    reference = json.loads((davis16_ref / "fseg_per_frame.json").read_text())
    sequences = (davis16 / "dev.txt").read_text().split()
    assert len(sequences) == 14
    worst = 0.0
    for seq in sequences:
        n = len(list((davis16 / "Annotations" / "480p" / seq).glob("*.png")))
        frames = range(1, n - 1)  # official semi-supervised protocol: first and last left out
        gt = _load_stack(davis16 / "Annotations" / "480p" / seq, frames, convert_l=True)
        pred = _load_stack(davis16_ref / "fseg" / seq, frames, convert_l=False)
        j, f = region_similarity(gt, pred), boundary_f(gt, pred)
        ref_j = np.array(reference[seq]["J"], dtype=np.float64)
        ref_f = np.array(reference[seq]["F"], dtype=np.float64)
        assert j.shape == ref_j.shape and f.shape == ref_f.shape, seq
        worst = max(worst, np.abs(j - ref_j).max(), np.abs(f - ref_f).max())
        assert np.abs(j - ref_j).max() <= 0.0005 + 1e-9, seq
        assert np.abs(f - ref_f).max() <= 0.0005 + 1e-9, seq
    assert worst <= 0.001


# ---------------------------------------------------------------- footprint and boundary map


def test_disk_matches_skimage_definition() -> None:
    # skimage.morphology.disk(r): offsets in arange(-r, r + 1), kept where x^2 + y^2 <= r^2.
    plus = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)
    disk3 = np.array(
        [
            [0, 0, 0, 1, 0, 0, 0],
            [0, 1, 1, 1, 1, 1, 0],
            [0, 1, 1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1, 1, 1],
            [0, 1, 1, 1, 1, 1, 0],
            [0, 1, 1, 1, 1, 1, 0],
            [0, 0, 0, 1, 0, 0, 0],
        ],
        np.uint8,
    )
    np.testing.assert_array_equal(metrics.disk(1), plus)
    np.testing.assert_array_equal(metrics.disk(3), disk3)
    # The evaluator's radius at 480p is the float ceil(...) = 8.0; lattice points in a circle
    # of radius 8 (Gauss circle problem): 197, on a 17 x 17 grid.
    disk8 = metrics.disk(8.0)
    assert disk8.shape == (17, 17) and int(disk8.sum()) == 197
    np.testing.assert_array_equal(disk8, disk8.T)
    np.testing.assert_array_equal(disk8, disk8[::-1])


def _reference_boundary(mask: np.ndarray) -> np.ndarray:
    """seg2bmap's rule spelled out pixel by pixel: compare with the right, lower and
    lower-right neighbours that exist (last row: right only; last column: lower only)."""
    h, w = mask.shape
    out = np.zeros_like(mask, dtype=bool)
    for y in range(h):
        for x in range(w):
            if y == h - 1 and x == w - 1:
                continue
            if y == h - 1:
                neighbours = [mask[y, x + 1]]
            elif x == w - 1:
                neighbours = [mask[y + 1, x]]
            else:
                neighbours = [mask[y, x + 1], mask[y + 1, x], mask[y + 1, x + 1]]
            out[y, x] = any(n != mask[y, x] for n in neighbours)
    return out


def test_boundary_map_follows_seg2bmap_rule_including_borders() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((4, 9, 13)) > 0.6
    masks[1] = True  # full frame: no boundary at all
    masks[2, :, :4] = True  # touches the top, left and bottom borders
    bmaps = metrics.boundary_map(masks)
    for mask, bmap in zip(masks, bmaps):
        np.testing.assert_array_equal(bmap, _reference_boundary(mask))
    assert not bmaps[1].any()

    single = np.zeros((5, 5), bool)
    single[2, 2] = True
    # The boundary sits half a pixel towards the origin: the 2x2 blocks that contain (2, 2).
    assert set(zip(*np.nonzero(metrics.boundary_map(single)))) == {(1, 1), (1, 2), (2, 1), (2, 2)}


def _reference_f(gt: np.ndarray, pred: np.ndarray, radius: float) -> float:
    """Brute-force F of one frame: a boundary pixel matches when a pixel of the other
    boundary lies at Euclidean distance <= radius."""
    gb, pb = np.argwhere(_reference_boundary(gt)), np.argwhere(_reference_boundary(pred))
    if len(gb) == 0 or len(pb) == 0:
        return 1.0 if len(gb) == len(pb) else 0.0
    d2 = ((pb[:, None, :] - gb[None, :, :]) ** 2).sum(-1)
    precision = float((d2.min(axis=1) <= radius**2).mean())
    recall = float((d2.min(axis=0) <= radius**2).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize("bound_th, radius", [(3, 3), (0.1, 4)])  # 0.1 * hypot(20, 30) = 3.6
def test_boundary_f_matches_brute_force(bound_th: float, radius: int) -> None:
    rng = np.random.default_rng(1)
    # Blobs, some touching the image border, so that the frame stacking used for speed would
    # show if one frame's dilation leaked into the next.
    gt = np.zeros((6, 20, 30), bool)
    pred = np.zeros_like(gt)
    for t in range(6):
        y, x = rng.integers(0, 14), rng.integers(0, 24)
        gt[t, y : y + rng.integers(3, 8), x : x + rng.integers(3, 8)] = True
        pred[t] = np.roll(gt[t], tuple(rng.integers(-4, 5, size=2)), axis=(0, 1))
        pred[t] |= rng.random((20, 30)) > 0.97
    gt[5, -3:] = True  # bottom rows of the last frame
    pred[0, :2] = True  # top rows of the first frame
    f = boundary_f(gt, pred, bound_th=bound_th)
    expected = [_reference_f(g, p, radius) for g, p in zip(gt, pred)]
    np.testing.assert_allclose(f, expected, rtol=0, atol=1e-12)
    # One frame at a time gives the same as the stack.
    np.testing.assert_allclose([boundary_f(g, p, bound_th=bound_th) for g, p in zip(gt, pred)], f)


# ---------------------------------------------------------------- hand-made cases


def _band(top: int, height: int) -> np.ndarray:
    """A full-width horizontal band: its boundary is exactly two full rows."""
    mask = np.zeros((H, W), bool)
    mask[top : top + height] = True
    return mask


def test_identical_masks_score_one() -> None:
    mask = np.zeros((2, H, W), bool)
    mask[:, 100:200, 300:450] = True
    np.testing.assert_array_equal(region_similarity(mask, mask), [1.0, 1.0])
    np.testing.assert_array_equal(boundary_f(mask, mask), [1.0, 1.0])


def test_disjoint_masks_score_zero() -> None:
    gt, pred = np.zeros((H, W), bool), np.zeros((H, W), bool)
    gt[10:60, 10:60] = True
    pred[300:350, 600:650] = True
    assert region_similarity(gt, pred) == 0.0
    assert boundary_f(gt, pred) == 0.0


@pytest.mark.parametrize("shift", [1, 8, 9, 20])
def test_shift_within_tolerance_keeps_f_at_one(shift: int) -> None:
    gt, pred = _band(100, 100), _band(100 + shift, 100)
    # IoU of two bands of height 100 offset by `shift` rows.
    assert region_similarity(gt, pred) == pytest.approx((100 - shift) / (100 + shift))
    # Each boundary row of one band is `shift` rows from the other's: matched iff shift <= 8.
    assert boundary_f(gt, pred) == (1.0 if shift <= 8 else 0.0)


def test_partial_boundary_match() -> None:
    # Ground truth: band rows 100..199 (boundary rows 99 and 199). Prediction: rows 100..249
    # (boundary rows 99 and 249): precision 1/2, recall 1/2, F = 1/2.
    gt, pred = _band(100, 100), _band(100, 150)
    assert boundary_f(gt, pred) == pytest.approx(0.5)
    assert region_similarity(gt, pred) == pytest.approx(100 / 150)


def test_empty_cases() -> None:
    empty = np.zeros((H, W), bool)
    blob = np.zeros((H, W), bool)
    blob[200:260, 400:480] = True
    assert region_similarity(empty, empty) == 1.0 and boundary_f(empty, empty) == 1.0
    assert region_similarity(blob, empty) == 0.0 and boundary_f(blob, empty) == 0.0
    assert region_similarity(empty, blob) == 0.0 and boundary_f(empty, blob) == 0.0


def test_objects_absent_in_some_frames() -> None:
    gt = np.zeros((4, H, W), bool)
    pred = np.zeros_like(gt)
    gt[0, 50:150, 50:150] = pred[0, 50:150, 50:150] = True  # present, found
    # frame 1: absent and correctly not predicted
    pred[2, 50:150, 50:150] = True  # absent, but predicted
    gt[3, 50:150, 50:150] = True  # present, missed
    np.testing.assert_array_equal(region_similarity(gt, pred), [1.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(boundary_f(gt, pred), [1.0, 1.0, 0.0, 0.0])


def test_void_pixels_are_excluded() -> None:
    gt = np.zeros((H, W), bool)
    gt[100:200, 100:200] = True
    pred = gt.copy()
    pred[100:200, 200:300] = True  # extra region, all of it void
    void = np.zeros((H, W), bool)
    void[:, 200:300] = True
    assert region_similarity(gt, pred) == pytest.approx(0.5)
    assert boundary_f(gt, pred) < 1.0
    assert region_similarity(gt, pred, void) == 1.0
    assert boundary_f(gt, pred, void) == 1.0
    # Void also removes ground truth: an object entirely in void leaves an empty union.
    assert region_similarity(void, np.zeros_like(void), void) == 1.0


def test_single_frame_gives_0d_and_bad_shapes_raise() -> None:
    mask = _band(10, 20)
    assert region_similarity(mask, mask).shape == ()
    assert boundary_f(mask, mask).shape == ()
    with pytest.raises(ValueError):
        region_similarity(mask, mask[:-1])
    with pytest.raises(ValueError):
        boundary_f(mask, mask, void=mask[:-1])


# ---------------------------------------------------------------- statistics


def test_statistics_short_sequence() -> None:
    # T = 4: edges round(linspace(1, 4, 5) + 1e-10) - 1 = [0, 1, 2, 2, 3]; the first bin is
    # frames 0..1, the last bin frames 2..3.
    stats = db_statistics(np.array([1.0, 0.8, 0.4, 0.2]))
    assert stats.mean == pytest.approx(0.6)
    assert stats.recall == pytest.approx(0.5)
    assert stats.decay == pytest.approx(0.9 - 0.3)


def test_statistics_300_frames_do_not_overflow() -> None:
    # T = 300: edges round([1, 75.75, 150.5, 225.25, 300] + 1e-10) - 1 = [0, 75, 150, 224, 299].
    # The official code stores them as uint8 (299 -> 43), which empties the last bin; here the
    # first bin is frames 0..75 and the last 224..299.
    values = np.arange(300) / 299
    stats = db_statistics(values)
    assert stats.mean == pytest.approx(0.5)
    assert stats.recall == pytest.approx(150 / 300)  # i / 299 > 0.5 for i = 150 .. 299
    first_mean, last_mean = 37.5 / 299, 261.5 / 299  # means of 0..75 and 224..299, over 299
    assert stats.decay == pytest.approx(first_mean - last_mean)
    assert math.isfinite(stats.decay)


def test_statistics_ignore_nan_in_mean_and_empty_input() -> None:
    stats = db_statistics(np.array([1.0, np.nan, 0.0, 1.0]))
    assert stats.mean == pytest.approx(2 / 3)
    assert stats.recall == pytest.approx(0.5)  # NaN is not above 0.5
    assert all(math.isnan(v) for v in db_statistics(np.array([])))
