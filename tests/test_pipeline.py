"""The SAM-PT loop's logic on synthetic clips, with a fake segmenter and a colour-keyed tracker.

The fakes are exact (the segmenter returns the coloured blob under the positive points, the
tracker follows known motion and reports a point visible only while it lies on its object's
colour), so every failure here is the loop's, not a model's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from samtrack.api import VideoPredictor
from samtrack.config import Config, load_config
from samtrack.errors import InputError
from samtrack.video import VideoInfo

from .fakes import COLOURS, BlobSegmenter, ColourTracker, RedetectingColourTracker

H, W = 120, 160
GREY = (128, 128, 128)


class SyntheticVideo:
    """Squares of known colours moving at known speeds; an optional grey occluder."""

    def __init__(self, n: int, objects: dict[int, tuple[int, int, int, int]], occluded: range = range(0)) -> None:
        # objects: id -> (x0, y0, size, dx per frame)
        self.objects = objects
        self.occluded = occluded
        self.info = VideoInfo(path=Path("synthetic.mp4"), n_frames=n, fps=10.0, height=H, width=W)

    def __len__(self) -> int:
        return self.info.n_frames

    def box(self, obj_id: int, t: int) -> tuple[int, int, int, int]:
        x0, y0, size, dx = self.objects[obj_id]
        return x0 + dx * t, y0, size, dx

    def truth(self, obj_id: int, t: int) -> np.ndarray:
        frame = self.read(t)
        return np.all(frame == COLOURS[obj_id], axis=-1)

    def read(self, index: int) -> np.ndarray:
        frame = np.full((H, W, 3), 30, np.uint8)
        for obj_id in self.objects:
            x, y, size, _ = self.box(obj_id, index)
            frame[y : y + size, x : x + size] = COLOURS[obj_id]
        if index in self.occluded:
            frame[:, 20:110] = GREY
        return frame

    def close(self) -> None:
        pass


def make_predictor(video: SyntheticVideo, *overrides: str) -> VideoPredictor:
    config = load_config(None, ["sampling.n_positive=4", "sampling.n_negative=1", "decode.refine_iters=1", *overrides])
    return VideoPredictor(config, BlobSegmenter(), ColourTracker())


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def test_tracks_a_moving_object_from_a_mask():
    video = SyntheticVideo(20, {1: (10, 40, 30, 3)})
    predictor = make_predictor(video)
    state = predictor.init_state(video)
    predictor.add_new_mask(state, 0, 1, video.truth(1, 0))
    results = list(predictor.propagate_in_video(state))
    assert [r.frame_index for r in results] == list(range(20))
    for r in results:
        assert iou(r.mask(1), video.truth(1, r.frame_index)) > 0.95, r.frame_index


def test_two_objects_never_overlap_and_other_positives_are_negatives():
    video = SyntheticVideo(12, {1: (10, 40, 30, 4), 2: (100, 40, 30, -3)})
    predictor = make_predictor(video)
    state = predictor.init_state(video)
    predictor.add_new_points_or_box(state, 0, 1, points=[[25, 55]], labels=[1])
    predictor.add_new_points_or_box(state, 0, 2, points=[[115, 55]], labels=[1])
    for r in predictor.propagate_in_video(state):
        assert set(np.unique(r.label_map)) <= {0, 1, 2}
        for obj_id in (1, 2):
            assert iou(r.mask(obj_id), video.truth(obj_id, r.frame_index)) > 0.9


@pytest.mark.parametrize("recover", [True, False])
def test_lost_object_comes_back_after_full_occlusion(recover):
    # The square is hidden on frames 5-9: every point is lost and the mask empties. With
    # recovery the object is found again from its last good mask; without, it stays empty.
    video = SyntheticVideo(30, {1: (40, 40, 40, 1)}, occluded=range(5, 10))
    predictor = make_predictor(video, "reinit.every=4", f"reinit.recover_lost={str(recover).lower()}")
    state = predictor.init_state(video)
    predictor.add_new_mask(state, 0, 1, video.truth(1, 0))
    results = {r.frame_index: r for r in predictor.propagate_in_video(state)}
    assert not results[7].mask(1).any()  # hidden: empty, not a ghost
    late = [iou(results[t].mask(1), video.truth(1, t)) for t in range(20, 30)]
    if recover:
        assert min(late) > 0.9
    else:
        assert max(late) == 0.0


@pytest.mark.parametrize("occluded", [range(3, 6), range(6, 11)], ids=["inside-a-window", "across-windows"])
def test_points_that_come_back_visible_prompt_again(occluded):
    # A grey band hides the square (and every point on it), then uncovers it. Re-sampling and
    # recovery are off, so only the tracker's own points can bring the object back: a tracker
    # that re-detects them (a learned one) does, within a window and across window starts (the
    # loop queries a recently lost point from where it was last seen); a frame-to-frame
    # tracker's lost points stay lost.
    video = SyntheticVideo(24, {1: (40, 40, 40, 1)}, occluded=occluded)
    settings = ["reinit.every=0", "reinit.recover_lost=false", "tracker.window=8"]
    results = {}
    for tracker in (RedetectingColourTracker(), ColourTracker()):
        config = load_config(None, ["sampling.n_positive=4", "sampling.n_negative=1", "decode.refine_iters=1", *settings])
        predictor = VideoPredictor(config, BlobSegmenter(), tracker)
        state = predictor.init_state(video)
        predictor.add_new_mask(state, 0, 1, video.truth(1, 0))
        results[tracker.name] = {r.frame_index: r for r in predictor.propagate_in_video(state)}
    back = range(occluded.stop, 24)
    assert not results["colour-redetect"][occluded.start + 1].mask(1).any()
    assert min(iou(results["colour-redetect"][t].mask(1), video.truth(1, t)) for t in back) > 0.9
    assert max(iou(results["colour"][t].mask(1), video.truth(1, t)) for t in back) == 0.0


def test_reinit_resamples_points_every_h_frames():
    video = SyntheticVideo(20, {1: (10, 40, 30, 2)})
    predictor = make_predictor(video, "reinit.every=5")
    state = predictor.init_state(video)
    predictor.add_new_mask(state, 0, 1, video.truth(1, 0))
    results = list(predictor.propagate_in_video(state))
    # Between re-initialisations positive points move rigidly with the square (dx = 2); after
    # t = 5 and t = 10 a new set is drawn, so t = 6 and t = 11 break the pattern.
    def positives(t):
        p = results[t].points[1]
        return p.xy[p.labels == 1]

    rigid = {t: positives(t).shape == positives(t - 1).shape and np.allclose(positives(t) - positives(t - 1), [2, 0])
             for t in range(1, 20)}
    assert not rigid[6] and not rigid[11] and not rigid[16]
    assert all(rigid[t] for t in (1, 2, 3, 4, 5, 7, 8, 9, 10, 12))


def test_object_prompted_later_is_tracked_backward_too():
    video = SyntheticVideo(16, {1: (10, 40, 30, 3), 2: (100, 70, 20, -2)})
    predictor = make_predictor(video)
    state = predictor.init_state(video)
    predictor.add_new_points_or_box(state, 0, 1, points=[[25, 55]], labels=[1])
    x, y, size, _ = video.box(2, 10)
    predictor.add_new_points_or_box(state, 10, 2, points=[[x + size / 2, y + size / 2]], labels=[1])
    results = list(predictor.segment_video(state))
    assert [r.frame_index for r in results] == list(range(16))
    for r in results:
        assert iou(r.mask(1), video.truth(1, r.frame_index)) > 0.9
        assert iou(r.mask(2), video.truth(2, r.frame_index)) > 0.9, r.frame_index


def test_correction_click_restarts_an_object():
    # Object 1's points are all lost at the occlusion; a click on frame 12 brings it back at once.
    video = SyntheticVideo(16, {1: (40, 40, 40, 1)}, occluded=range(5, 10))
    predictor = make_predictor(video, "reinit.recover_lost=false", "reinit.every=0")
    state = predictor.init_state(video)
    predictor.add_new_mask(state, 0, 1, video.truth(1, 0))
    x, y, size, _ = video.box(1, 12)
    predictor.add_new_points_or_box(state, 12, 1, points=[[x + 5, y + 5]], labels=[1])
    results = {r.frame_index: r for r in predictor.propagate_in_video(state)}
    assert not results[11].mask(1).any()
    assert all(iou(results[t].mask(1), video.truth(1, t)) > 0.9 for t in range(12, 16))


def test_prompt_on_a_skipped_frame_is_a_clear_error():
    video = SyntheticVideo(10, {1: (10, 40, 30, 1)})
    predictor = make_predictor(video, "video.stride=2")
    state = predictor.init_state(video)
    with pytest.raises(ValueError, match="frame_idx: frame 3 is not processed"):
        predictor.add_new_points_or_box(state, 3, 1, points=[[25, 55]], labels=[1])


def test_window_bounds_frames_held(monkeypatch):
    video = SyntheticVideo(40, {1: (10, 40, 30, 2)})
    predictor = make_predictor(video, "reinit.every=0", "tracker.window=6")
    seen = []
    tracker = predictor.pipeline.tracker
    original = tracker.track
    monkeypatch.setattr(tracker, "track", lambda frames, q: (seen.append(len(frames)), original(frames, q))[1])
    state = predictor.init_state(video)
    predictor.add_new_mask(state, 0, 1, video.truth(1, 0))
    results = list(predictor.propagate_in_video(state))
    assert len(results) == 40 and max(seen) == 6
    assert iou(results[-1].mask(1), video.truth(1, 39)) > 0.9


def test_default_config_matches_reinit_preset():
    assert load_config("sam_pt_reinit") == Config().validate()


class SlowEncoder(BlobSegmenter):
    def encode(self, image):
        import time

        time.sleep(0.05)
        return super().encode(image)


@pytest.mark.parametrize("preset", ["fast", "samtrack"])
def test_stage_timings_do_not_overlap(preset):
    """The encoder runs lazily, on the first stage that needs a frame's embedding; its time must
    be counted once, as the encoder's, whichever stage that is."""
    video = SyntheticVideo(6, {1: (10, 40, 30, 2)})
    overrides = ["redetect.enabled=false"] if preset == "samtrack" else []  # blobs have no feature grid
    predictor = VideoPredictor(load_config(preset, overrides), SlowEncoder(), ColourTracker())
    state = predictor.init_state(video)
    predictor.add_new_mask(state, 0, 1, video.truth(1, 0))
    list(predictor.propagate_in_video(state))
    stages = predictor.timings.seconds
    assert stages["encoder"] >= 0.25 and stages["decoder"] < 0.1, dict(stages)
    # Accepting, merging and bookkeeping the masks is a stage of its own, so that "everything
    # but the encoder" in `samtrack bench` counts it.
    assert 0 < stages["masks"] < 0.1, dict(stages)


def test_tracking_window_per_preset():
    """One window from re-initialisation to re-initialisation; the overlay's frame memory in
    `samtrack run` is sized from it."""
    assert load_config("samtrack").tracking_window == 2
    assert load_config("sam_pt_reinit").tracking_window == 9
    assert load_config("sam_pt").tracking_window == 16


def test_no_spill_folder_without_a_backward_pass(tmp_path, monkeypatch):
    # Prompted on the first frame: nothing runs backward, so nothing is made in the temp dir.
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    video = SyntheticVideo(6, {1: (10, 40, 30, 2)})
    predictor = make_predictor(video)
    state = predictor.init_state(video)
    predictor.add_new_mask(state, 0, 1, video.truth(1, 0))
    during = [len(list(tmp_path.iterdir())) for _ in predictor.segment_video(state)]
    assert during == [0] * 6
    predictor.add_new_mask(state, 3, 2, video.truth(1, 3))  # a later prompt needs the backward pass
    during = [len(list(tmp_path.iterdir())) for _ in predictor.segment_video(state)]
    assert during == [1] * 6 and list(tmp_path.iterdir()) == []  # its folder, gone afterwards
