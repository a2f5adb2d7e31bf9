"""The Lucas-Kanade tracker on synthetic motion with known ground truth, and on real DAVIS frames."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from samtrack.config import LKConfig, TrackerConfig
from samtrack.trackers import build_tracker
from samtrack.trackers.base import PointTracker
from samtrack.trackers.lk import LucasKanadeTracker

from .conftest import load_frame, load_gt

H, W, T = 240, 320, 10


def _texture(seed: int = 0) -> np.ndarray:
    """Smooth random RGB texture: blurred noise has gradients everywhere at LK's scale."""
    noise = np.random.default_rng(seed).random((H, W, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.0)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min()) * 255
    return smooth.astype(np.uint8)


def _translations(dx: float, dy: float) -> list[np.ndarray]:
    return [np.array([[1.0, 0.0, dx * t], [0.0, 1.0, dy * t]]) for t in range(T)]


def _rotations(degrees: float, centre: tuple[float, float]) -> list[np.ndarray]:
    return [cv2.getRotationMatrix2D(centre, degrees * t, 1.0) for t in range(T)]


def _warp(base: np.ndarray, mats: list[np.ndarray]) -> list[np.ndarray]:
    """Frame t is ``base`` moved by ``mats[t]`` (a 2x3 map from base to frame pixels)."""
    # Reflected borders keep the texture going, so only the tracker is being tested.
    return [cv2.warpAffine(base, m, (W, H), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT) for m in mats]


def _true_tracks(mats: list[np.ndarray], query_t: int, xy: np.ndarray) -> np.ndarray:
    """Where the base pixel seen at ``xy`` on frame ``query_t`` is on every frame: ``[T, N, 2]``."""
    inverse = cv2.invertAffineTransform(mats[query_t])
    base_xy = xy @ inverse[:, :2].T + inverse[:, 2]
    return np.stack([base_xy @ m[:, :2].T + m[:, 2] for m in mats])


def _grid() -> np.ndarray:
    xs, ys = np.meshgrid(np.linspace(60, 260, 6), np.linspace(50, 190, 5))
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def _queries(query_t: int, xy: np.ndarray) -> np.ndarray:
    return np.concatenate([np.full((len(xy), 1), query_t), xy], axis=1).astype(np.float32)


MOTIONS = {
    "translation": _translations(0.37, -0.61),
    "rotation": _rotations(1.5, (160.3, 120.7)),
}


@pytest.mark.parametrize("motion", sorted(MOTIONS))
@pytest.mark.parametrize("query_t", [0, T // 2, T - 1])
def test_tracks_known_motion_from_any_query_frame(motion: str, query_t: int) -> None:
    mats = MOTIONS[motion]
    xy = _grid()
    tracks = LucasKanadeTracker().track(_warp(_texture(), mats), _queries(query_t, xy))

    assert tracks.points.shape == (T, len(xy), 2) and tracks.points.dtype == np.float32
    error = np.linalg.norm(tracks.points - _true_tracks(mats, query_t, xy), axis=2)
    assert tracks.visible.all()
    assert np.median(error) < 0.5
    assert np.percentile(error, 90) < 1.5
    # The query frame is given back exactly, and tracking reaches both ends of the window
    # (where frame-to-frame drift has piled up the most).
    np.testing.assert_array_equal(tracks.points[query_t], xy.astype(np.float32))
    assert np.median(error[0]) < 1.0 and np.median(error[-1]) < 1.0


def test_mixed_query_frames_in_one_call() -> None:
    mats = MOTIONS["rotation"]
    frames = _warp(_texture(), mats)
    xy = _grid()
    query_ts = np.array([0, 3, 9] * 10)
    queries = np.concatenate([query_ts[:, None], xy], axis=1).astype(np.float32)
    tracks = LucasKanadeTracker().track(frames, queries)

    truth = np.stack(
        [_true_tracks(mats, int(t), xy[i : i + 1])[:, 0] for i, t in enumerate(query_ts)], axis=1
    )
    error = np.linalg.norm(tracks.points - truth, axis=2)
    assert tracks.visible.all()
    assert np.median(error) < 0.5
    for t in (0, 3, 9):
        assert np.median(error[:, query_ts == t]) < 0.5


def test_longest_side_tracks_downscaled_but_answers_in_input_pixels() -> None:
    mats = MOTIONS["translation"]
    xy = _grid()
    tracker = LucasKanadeTracker(LKConfig(longest_side=W // 2))
    tracks = tracker.track(_warp(_texture(), mats), _queries(T // 2, xy))

    error = np.linalg.norm(tracks.points - _true_tracks(mats, T // 2, xy), axis=2)
    assert tracks.visible.all()
    assert np.median(error) < 0.5


def test_occluded_point_is_lost_for_good() -> None:
    """A flat grey bar sweeps right over the point at 15 px/frame while the texture drifts."""
    mats = _translations(0.3, 0.2)
    frames = _warp(_texture(), mats)
    bar_width, speed, start = 50, 15, 100
    for t, frame in enumerate(frames):
        right = start + speed * t
        frame[60:180, max(0, right - bar_width) : right] = 128
    # One point in the bar's path, three far from it (beside, above and below the bar).
    queries = np.array([[0, 160, 120], [0, 285, 120], [0, 160, 30], [0, 40, 215]], np.float32)
    tracks = LucasKanadeTracker().track(frames, queries)

    # The bar's edge reaches the point at t = 4, covers it by more than half the LK window from
    # t = 5, and has passed it again by t = 8; the point must stay lost after that.
    assert tracks.visible[:4, 0].all()
    assert not tracks.visible[5:, 0].any()
    assert (tracks.confidence[5:, 0] == 0).all()
    assert tracks.visible[:, 1:].all()
    # A lost point keeps its last tracked position rather than jumping anywhere.
    np.testing.assert_array_equal(tracks.points[5:, 0], np.repeat(tracks.points[4:5, 0], T - 5, axis=0))
    assert np.isfinite(tracks.points).all()
    assert ((tracks.confidence >= 0) & (tracks.confidence <= 1)).all()
    assert (tracks.confidence[0] == 1).all()


def test_point_leaving_the_frame_is_lost() -> None:
    mats = _translations(-6.0, 0.0)
    queries = np.array([[0, 20, 120], [0, 250, 120]], np.float32)
    tracks = LucasKanadeTracker().track(_warp(_texture(), mats), queries)

    true_x = 20 - 6.0 * np.arange(T)
    assert not tracks.visible[true_x < 0, 0].any()
    assert tracks.visible[:2, 0].all()
    assert tracks.visible[:, 1].all()


def test_no_queries_and_single_frame() -> None:
    frames = _warp(_texture(), MOTIONS["translation"])
    tracker = LucasKanadeTracker()

    empty = tracker.track(frames, np.zeros((0, 3), np.float32))
    assert empty.points.shape == (T, 0, 2) and empty.visible.shape == (T, 0)

    queries = _queries(0, _grid())
    single = tracker.track(frames[:1], queries)
    assert single.points.shape == (1, len(queries), 2)
    np.testing.assert_array_equal(single.points[0], queries[:, 1:])
    assert single.visible.all()


@pytest.mark.parametrize(
    "queries",
    [np.zeros((3, 2), np.float32), np.array([[0.5, 10, 10]], np.float32), np.array([[T, 10, 10]], np.float32)],
    ids=["shape", "fractional-t", "t-out-of-window"],
)
def test_rejects_malformed_queries(queries: np.ndarray) -> None:
    with pytest.raises(ValueError):
        LucasKanadeTracker().track(_warp(_texture(), MOTIONS["translation"]), queries)


def test_registry_builds_lk_with_its_config() -> None:
    config = LKConfig(win_size=15, fb_threshold=0.8)
    tracker = build_tracker(TrackerConfig(name="lk", lk=config))
    assert isinstance(tracker, LucasKanadeTracker) and isinstance(tracker, PointTracker)
    assert tracker.name == "lk" and tracker.config is config and not tracker.redetects
    assert isinstance(build_tracker(), LucasKanadeTracker)


def test_points_on_a_davis_object_stay_on_it(davis16: Path) -> None:
    seq, last = "bear", 4
    frames = [load_frame(davis16, seq, i) for i in range(last + 1)]
    # Points well inside the object, so that the first frames cannot push them off its edge.
    interior = cv2.erode(load_gt(davis16, seq, 0).astype(np.uint8), np.ones((7, 7), np.uint8))
    ys, xs = np.nonzero(interior)
    pick = np.random.default_rng(0).choice(len(xs), 30, replace=False)
    queries = _queries(0, np.stack([xs[pick], ys[pick]], axis=1))
    tracks = LucasKanadeTracker().track(frames, queries)

    target = cv2.dilate(load_gt(davis16, seq, last).astype(np.uint8), np.ones((11, 11), np.uint8)) > 0
    visible = tracks.visible[last]
    assert visible.mean() >= 0.8
    x, y = np.round(tracks.points[last, visible]).astype(int).T
    h, w = target.shape
    assert ((x >= 0) & (x < w) & (y >= 0) & (y < h)).all()
    assert target[y, x].mean() >= 0.9
