"""Query point sampling: every method on synthetic masks with known answers and on real DAVIS masks."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from samtrack.config import SamplingConfig
from samtrack.sampling import PointSampler, sample_points, thin_parts

from .conftest import load_frame, load_gt

METHODS = ("random", "kmedoids", "shi-tomasi", "mixed")
H, W = 120, 160


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _pixels(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of points that must sit exactly on pixel centres."""
    assert points.dtype == np.float32 and points.ndim == 2 and points.shape[1] == 2
    assert np.array_equal(points, np.rint(points)), "points are not integer pixel positions"
    return points[:, 1].astype(int), points[:, 0].astype(int)


def _assert_in(points: np.ndarray, region: np.ndarray) -> None:
    rows, cols = _pixels(points)
    assert region[rows, cols].all(), f"points outside the region: {points[~region[rows, cols]]}"


def _assert_distinct(points: np.ndarray) -> None:
    assert len(np.unique(points, axis=0)) == len(points), f"duplicate points: {points}"


def _noise_image(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _disk(cx: int, cy: int, r: int, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


@pytest.mark.parametrize("method", METHODS)
def test_points_are_distinct_pixels_inside_the_mask(method):
    mask = _disk(70, 60, 35)
    points = sample_points(mask, 8, method, _rng(), _noise_image())
    assert points.shape == (8, 2)
    _assert_in(points, mask)
    _assert_distinct(points)


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_gives_same_points(method):
    mask, image = _disk(70, 60, 35), _noise_image()
    a = sample_points(mask, 8, method, _rng(7), image)
    b = sample_points(mask, 8, method, _rng(7), image)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method", ("random", "kmedoids", "mixed"))
def test_different_seeds_give_different_points(method):
    # Shi-Tomasi alone is seed-independent when the mask has enough corners; the other methods
    # draw pixels (or the k-medoids subsample) from the rng.
    mask, image = _disk(70, 60, 35), _noise_image()
    runs = {sample_points(mask, 8, method, _rng(seed), image).tobytes() for seed in range(4)}
    assert len(runs) > 1


def test_random_covers_the_mask_uniformly():
    mask = np.zeros((H, W), bool)
    mask[20:100, 20:140] = True
    points = np.concatenate([sample_points(mask, 50, "random", _rng(s)) for s in range(40)])
    _assert_in(points, mask)
    # Left and right halves of the mask are equally likely (2000 draws: 5 sigma is about 112).
    left = np.count_nonzero(points[:, 0] < 80)
    assert abs(left - 1000) < 112


@pytest.mark.parametrize("method", METHODS)
def test_one_pixel_wide_line(method):
    mask = np.zeros((H, W), bool)
    mask[50, 10:150] = True
    points = sample_points(mask, 8, method, _rng(), _noise_image())
    assert points.shape == (8, 2)
    _assert_in(points, mask)
    _assert_distinct(points)


@pytest.mark.parametrize("method", METHODS)
def test_mask_smaller_than_n_returns_every_pixel(method):
    mask = np.zeros((H, W), bool)
    mask[[5, 60, 119], [0, 80, 159]] = True
    points = sample_points(mask, 8, method, _rng(), _noise_image())
    assert sorted(map(tuple, points.tolist())) == [(0.0, 5.0), (80.0, 60.0), (159.0, 119.0)]


@pytest.mark.parametrize("method", METHODS)
def test_single_pixel(method):
    mask = np.zeros((H, W), bool)
    mask[33, 44] = True
    points = sample_points(mask, 8, method, _rng(), _noise_image())
    np.testing.assert_array_equal(points, np.float32([[44, 33]]))


@pytest.mark.parametrize("method", METHODS)
def test_empty_mask_gives_no_points(method):
    points = sample_points(np.zeros((H, W), bool), 8, method, _rng(), _noise_image())
    assert points.shape == (0, 2) and points.dtype == np.float32


@pytest.mark.parametrize("method", METHODS)
def test_mask_exactly_n_pixels_and_n_zero(method):
    mask = _disk(70, 60, 35)
    assert sample_points(mask, 0, method, _rng(), _noise_image()).shape == (0, 2)
    small = np.zeros((H, W), bool)
    small[10, 10:18] = True
    points = sample_points(small, 8, method, _rng(), _noise_image())
    assert points.shape == (8, 2)
    _assert_in(points, small)
    _assert_distinct(points)


def test_kmedoids_puts_one_medoid_in_each_of_two_far_blobs():
    mask = _disk(25, 60, 15) | _disk(135, 60, 15)
    for seed in range(5):
        points = sample_points(mask, 2, "kmedoids", _rng(seed))
        assert sorted(points[:, 0] < 80) == [False, True], points
        # The medoid of a disk is near its centre.
        centres = np.float32([[25, 60], [135, 60]])
        assert np.abs(np.sort(points, axis=0) - centres).max() <= 4


def test_kmedoids_spreads_points_more_evenly_than_random():
    # Largest distance from a mask pixel to its nearest point: medoids minimise the mean of it,
    # which keeps the worst case low too; random points leave holes.
    mask = np.zeros((H, W), bool)
    mask[10:110, 10:150] = True
    pix = np.argwhere(mask)[:, ::-1].astype(np.float32)

    def coverage(points):
        return np.sqrt(((pix[:, None] - points[None]) ** 2).sum(-1)).min(1).mean()

    km = np.mean([coverage(sample_points(mask, 8, "kmedoids", _rng(s))) for s in range(5)])
    rnd = np.mean([coverage(sample_points(mask, 8, "random", _rng(s))) for s in range(5)])
    assert km < 0.85 * rnd


def test_kmedoids_subsample_smaller_than_n_still_gives_n_points():
    mask = _disk(70, 60, 35)
    points = sample_points(mask, 8, "kmedoids", _rng(), kmedoids_max_pixels=3)
    assert points.shape == (8, 2)
    _assert_in(points, mask)
    _assert_distinct(points)


def test_kmedoids_on_a_grid_subsample_covers_the_mask_as_well_with_fewer_pixels():
    # The grid thins the mask evenly, so 400 pixels on it place the medoids as well as 1000
    # drawn at random (on DAVIS masks: 24.3 px mean distance against 24.5, 6x cheaper), while
    # 100 random pixels, unevenly spread, place them worse.
    mask = _disk(70, 60, 45) | _disk(130, 40, 20)
    pix = np.argwhere(mask)[:, ::-1].astype(np.float32)

    def coverage(subsample, pixels):
        return np.mean([np.sqrt(((pix[:, None] - sample_points(mask, 8, "kmedoids", _rng(s), kmedoids_max_pixels=pixels,
                                                               kmedoids_subsample=subsample)[None]) ** 2).sum(-1)).min(1).mean()
                        for s in range(6)])

    grid = coverage("grid", 400)
    assert grid <= 1.02 * coverage("random", 1000)
    assert grid < coverage("random", 40)


@pytest.mark.parametrize("pixels", [400, 50, 9, 3])
def test_kmedoids_grid_subsample_gives_n_distinct_points_inside_the_mask(pixels):
    # 3 leaves fewer grid pixels than points (then a random subsample of n), 9 a coarse grid.
    mask = _disk(70, 60, 35) & ~_disk(70, 60, 12)
    points = sample_points(mask, 8, "kmedoids", _rng(), kmedoids_max_pixels=pixels, kmedoids_subsample="grid")
    assert points.shape == (8, 2)
    _assert_in(points, mask)
    _assert_distinct(points)
    again = sample_points(mask, 8, "kmedoids", _rng(), kmedoids_max_pixels=pixels, kmedoids_subsample="grid")
    assert np.array_equal(points, again)


def test_grid_subset_thins_evenly_to_at_most_the_size():
    from samtrack.sampling import _grid_subset

    rows, cols = np.nonzero(np.ones((100, 100), bool))
    subset = _grid_subset(rows, cols, 400, 8, _rng())
    assert len(subset) == 400  # stride 5 from any offset: 20 x 20
    assert len(np.unique(rows[subset] % 5)) == 1 and len(np.unique(cols[subset] % 5)) == 1
    assert _grid_subset(rows, cols, 20_000, 8, _rng()) is None  # every pixel fits


def _squares_image() -> tuple[np.ndarray, np.ndarray]:
    """Flat grey image with four bright squares; returns the image and their 16 corners (x, y)."""
    image = np.full((H, W, 3), 60, np.uint8)
    corners = []
    for x, y in ((30, 25), (90, 25), (30, 70), (90, 70)):
        image[y : y + 20, x : x + 20] = 220
        corners += [(x, y), (x + 19, y), (x, y + 19), (x + 19, y + 19)]
    return image, np.float32(corners)


def test_shi_tomasi_picks_corners_of_a_textured_region():
    image, corners = _squares_image()
    mask = np.zeros((H, W), bool)
    mask[10:105, 15:130] = True
    points = sample_points(mask, 8, "shi-tomasi", _rng(), image)
    assert points.shape == (8, 2)
    _assert_distinct(points)
    nearest = np.sqrt(((points[:, None] - corners[None]) ** 2).sum(-1)).min(1)
    assert (nearest <= 2).all(), f"not at square corners: {points[nearest > 2]}"


def test_shi_tomasi_corners_are_spread_over_the_mask():
    # A fine checkerboard in one corner of the mask has many more strong corners than needed;
    # the minimum distance (diameter / n, as in SAM-PT) sends most points elsewhere.
    image, _ = _squares_image()
    image[12:36, 17:41] = np.kron((np.indices((6, 6)).sum(0) % 2) * 255, np.ones((4, 4)))[..., None]
    mask = np.zeros((H, W), bool)
    mask[10:105, 15:130] = True
    points = sample_points(mask, 8, "shi-tomasi", _rng(), image)
    gaps = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1)) + np.eye(8) * 1e9
    assert gaps.min() >= np.hypot(126 - 18, 101 - 13) / 8
    in_board = (points[:, 0] < 41) & (points[:, 1] < 36)
    assert 1 <= in_board.sum() <= 4  # at most a 2 x 2 grid of them fits in the 24 px board


def test_shi_tomasi_skips_corners_on_the_mask_boundary():
    # The mask is exactly one bright square, so its strongest corners are on the mask boundary,
    # where the mask usually ends and the background begins; erosion keeps points off them.
    image = np.full((H, W, 3), 60, np.uint8)
    image[20:100, 40:120] = 220
    image[50:70, 70:90] = 130  # weaker texture well inside
    mask = np.zeros((H, W), bool)
    mask[20:100, 40:120] = True
    points = sample_points(mask, 4, "shi-tomasi", _rng(), image, erode=3)
    rows, cols = _pixels(points)
    depth = cv2.distanceTransform(mask.view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    assert (depth[rows, cols] > 3).all()
    unroded = sample_points(mask, 4, "shi-tomasi", _rng(), image, erode=0)
    rows, cols = _pixels(unroded)
    assert (depth[rows, cols] <= 2).any(), "without erosion the boundary corners should win"


def test_shi_tomasi_tops_up_a_textureless_region_with_random_points():
    image = np.full((H, W, 3), 90, np.uint8)
    mask = _disk(70, 60, 35)
    points = sample_points(mask, 8, "shi-tomasi", _rng(), image)
    assert points.shape == (8, 2)
    _assert_in(points, mask)
    _assert_distinct(points)
    # With no corner at all the points are the rng's, so they follow the seed.
    other = sample_points(mask, 8, "shi-tomasi", _rng(1), image)
    assert not np.array_equal(points, other)


def test_mixed_follows_sam_pt_split():
    # n=8: 8 // 4 = 2 k-medoids, then 8 // 3 = 2 Shi-Tomasi corners, then 4 random points.
    image, corners = _squares_image()
    mask = np.zeros((H, W), bool)
    mask[10:105, 15:130] = True
    points = sample_points(mask, 8, "mixed", _rng(), image)
    assert points.shape == (8, 2)
    _assert_in(points, mask)
    _assert_distinct(points)
    np.testing.assert_array_equal(points[:2], sample_points(mask, 2, "kmedoids", _rng(), image))
    nearest = np.sqrt(((points[2:4, None] - corners[None]) ** 2).sum(-1)).min(1)
    assert (nearest <= 2).all()


def test_mixed_points_stay_distinct_when_the_mask_is_barely_larger_than_n():
    # 9 pixels for 8 points: k-medoids, Shi-Tomasi and random would collide if each drew from
    # the whole mask.
    image = _noise_image()
    mask = np.zeros((H, W), bool)
    mask[40:43, 40:43] = True
    for seed in range(10):
        points = sample_points(mask, 8, "mixed", _rng(seed), image, erode=0)
        assert points.shape == (8, 2)
        _assert_in(points, mask)
        _assert_distinct(points)


def test_mixed_with_one_point_is_random():
    mask, image = _disk(70, 60, 35), _noise_image()
    np.testing.assert_array_equal(
        sample_points(mask, 1, "mixed", _rng(3), image), sample_points(mask, 1, "random", _rng(3))
    )


def test_bad_arguments_are_value_errors():
    mask = _disk(70, 60, 35)
    with pytest.raises(ValueError, match="needs the image"):
        sample_points(mask, 8, "shi-tomasi", _rng())
    with pytest.raises(ValueError, match="needs the image"):
        sample_points(mask, 8, "mixed", _rng())
    with pytest.raises(ValueError, match="uint8"):
        sample_points(mask, 8, "shi-tomasi", _rng(), np.zeros((H, W + 1, 3), np.uint8))
    with pytest.raises(ValueError, match="unknown point sampling method"):
        sample_points(mask, 8, "grid", _rng())
    with pytest.raises(ValueError, match="2-D"):
        sample_points(mask[None], 8, "random", _rng())
    with pytest.raises(ValueError, match="n must be"):
        sample_points(mask, -1, "random", _rng())


def _sampler(**kwargs) -> PointSampler:
    return PointSampler(SamplingConfig(**kwargs))


def test_sample_gives_positives_then_negatives():
    mask, image = _disk(70, 60, 25), _noise_image()
    points, labels = _sampler(n_positive=8, n_negative=3).sample(mask, image, _rng())
    assert points.shape == (11, 2) and points.dtype == np.float32
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, [1] * 8 + [0] * 3)
    _assert_in(points[:8], mask)
    _assert_in(points[8:], ~mask)


@pytest.mark.parametrize("method", ("random", "kmedoids", "shi-tomasi"))
def test_negatives_stay_in_a_band_around_the_mask(method):
    mask, image = _disk(70, 60, 15), _noise_image()
    band = 10
    sampler = _sampler(negative_method=method, n_negative=40, negative_band=band)
    distance = cv2.distanceTransform((~mask).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    for seed in range(3):
        negatives = sampler.negatives(mask, image, _rng(seed))
        assert negatives.shape == (40, 2)
        _assert_distinct(negatives)
        rows, cols = _pixels(negatives)
        assert (distance[rows, cols] > 0).all() and (distance[rows, cols] <= band).all()


def test_mixed_negatives_come_from_anywhere_outside_as_in_sam_pt():
    mask, image = _disk(70, 60, 15), _noise_image()
    band = 10
    sampler = _sampler(negative_method="mixed", n_negative=40, negative_band=band)
    distance = cv2.distanceTransform((~mask).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    negatives = sampler.negatives(mask, image, _rng())
    rows, cols = _pixels(negatives)
    assert (distance[rows, cols] > 0).all()
    assert (distance[rows, cols] > band).any()
    np.testing.assert_array_equal(sampler.negative_region(mask), ~mask)


def test_negatives_avoid_forbidden_pixels_and_fall_back_when_the_band_is_forbidden():
    mask, image = _disk(70, 60, 15), _noise_image()
    band = 10
    distance = cv2.distanceTransform((~mask).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    forbidden = np.zeros((H, W), bool)
    forbidden[:, :70] = True
    for method in METHODS:
        sampler = _sampler(negative_method=method, n_negative=30, negative_band=band)
        negatives = sampler.negatives(mask, image, _rng(), forbidden=forbidden)
        assert len(negatives) == 30
        _assert_in(negatives, ~mask & ~forbidden)
    # The whole band is forbidden (e.g. void around the object): anywhere outside will do.
    ring = (distance > 0) & (distance <= band)
    sampler = _sampler(negative_method="random", n_negative=5, negative_band=band)
    negatives = sampler.negatives(mask, image, _rng(), forbidden=ring)
    assert len(negatives) == 5
    _assert_in(negatives, ~mask & ~ring)


def test_mask_covering_the_image_has_no_negatives():
    mask, image = np.ones((H, W), bool), _noise_image()
    for method in METHODS:
        sampler = _sampler(positive_method=method, negative_method=method, n_negative=3)
        assert sampler.negatives(mask, image, _rng()).shape == (0, 2)
        points, labels = sampler.sample(mask, image, _rng())
        assert points.shape == (8, 2) and (labels == 1).all()


def _kite() -> tuple[np.ndarray, np.ndarray]:
    """A disc (the body) with a 2-pixel line (its string) running from it; and the line alone."""
    body = _disk(40, 60, 20)
    line = np.zeros((H, W), bool)
    line[59:61, 60:150] = True
    return body | line, line & ~body


def test_thin_parts_are_the_line_not_the_blob_edges():
    mask, line = _kite()
    thin = thin_parts(mask, 9)
    # All of the line is thin; of the disc, at most the few pixels where the line meets it.
    assert thin[line].mean() > 0.95
    assert np.count_nonzero(thin & ~line) <= 10
    # A blob alone (a square with corners an opening rounds off) has no thin parts.
    square = np.zeros((H, W), bool)
    square[20:80, 30:100] = True
    assert not thin_parts(square, 9).any()


def test_thin_points_add_positives_on_the_thin_parts():
    mask, line = _kite()
    image = _noise_image()
    plain = _sampler(n_positive=8, n_negative=1).sample(mask, image, _rng())[0][:8]
    points, labels = _sampler(n_positive=8, n_negative=1, thin_points=3).sample(mask, image, _rng())
    np.testing.assert_array_equal(labels, [1] * 11 + [0])
    np.testing.assert_array_equal(points[:8], plain)  # the usual positives are unchanged
    _assert_in(points[8:11], line)
    _assert_distinct(points[:11])
    # No thin part: no extra points.
    points, labels = _sampler(n_positive=8, n_negative=1, thin_points=3).sample(_disk(70, 60, 25), image, _rng())
    assert (labels == 1).sum() == 8


def test_sample_on_an_empty_mask_is_a_clear_error():
    with pytest.raises(ValueError, match="empty mask"):
        _sampler().sample(np.zeros((H, W), bool), _noise_image(), _rng())


def test_positives_follow_the_config():
    mask, image = _disk(70, 60, 35), _noise_image()
    sampler = _sampler(positive_method="kmedoids", n_positive=5, kmedoids_max_pixels=200)
    expected = sample_points(mask, 5, "kmedoids", _rng(4), kmedoids_max_pixels=200)
    np.testing.assert_array_equal(sampler.positives(mask, image, _rng(4)), expected)


@pytest.mark.parametrize("seq", ("bear", "soccerball", "lucia"))
def test_real_davis_masks(davis16, seq):
    mask, image = load_gt(davis16, seq, 0), load_frame(davis16, seq, 0)
    for method in METHODS:
        points = sample_points(mask, 8, method, _rng(), image)
        assert points.shape == (8, 2), method
        _assert_in(points, mask)
        _assert_distinct(points)
        sampler = _sampler(negative_method=method, n_negative=4)
        negatives = sampler.negatives(mask, image, _rng())
        assert negatives.shape == (4, 2), method
        _assert_in(negatives, ~mask)
        _assert_distinct(negatives)


def test_hole_points_sit_in_the_largest_enclosed_holes_farthest_from_the_mask():
    from samtrack.sampling import hole_points

    # Two wheels (rings) joined by a bar; the background left and right of it touches the border.
    mask = (_disk(40, 60, 25) & ~_disk(40, 60, 12)) | (_disk(120, 60, 25) & ~_disk(120, 60, 8))
    mask[55:65, 60:100] = True
    points = hole_points(mask, 2, 20)
    assert points.dtype == np.float32 and points.shape == (2, 2)
    # The larger hole first, each point at its hole's centre, on background.
    assert np.abs(points[0] - [40, 60]).max() <= 1 and np.abs(points[1] - [120, 60]).max() <= 1
    assert not mask[points[:, 1].astype(int), points[:, 0].astype(int)].any()
    assert len(hole_points(mask, 1, 20)) == 1
    assert np.abs(hole_points(mask, 2, 300)[0] - [40, 60]).max() <= 1 and len(hole_points(mask, 2, 300)) == 1  # the small hole is under 300 px
    assert hole_points(_disk(70, 60, 30), 2, 1).shape == (0, 2)  # no hole


def test_hole_negatives_add_negatives_in_the_holes():
    mask = _disk(70, 60, 40) & ~_disk(70, 60, 15)
    xy, labels = _sampler(hole_negatives=1, hole_min_area=50).sample(mask, _noise_image(), _rng())
    negatives = xy[labels == 0]
    assert len(negatives) == 2  # the mixed one, and the hole's
    assert np.abs(negatives[-1] - [70, 60]).max() <= 1
