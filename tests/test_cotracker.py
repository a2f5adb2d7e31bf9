"""CoTracker3's plumbing with random weights: strict loading, the official layout of the
state_dict, backward tracking, the online session's bounded memory, the tracker plugin and its
registry. Random weights make the tracks meaningless, so these tests check how tracks are
computed and combined, never how good they are; equality with the official code is
``test_cotracker_golden.py``'s job."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("SAMTRACK_REQUIRE_TORCH") == "1":
    import torch  # noqa: F401  (CI installs the torch extra: a missing torch must fail here)
torch = pytest.importorskip("torch", reason="the torch extra is not installed")

from samtrack.config import CoTrackerConfig, TrackerConfig, load_config  # noqa: E402
from samtrack.errors import ConfigError, WeightsError  # noqa: E402
from samtrack.trackers import LEARNED, build_tracker, resolve_name  # noqa: E402
from samtrack.trackers.cotracker.build import build_cotracker  # noqa: E402
from samtrack.trackers.cotracker.modeling import CoTrackerThree  # noqa: E402
from samtrack.trackers.cotracker.predictor import OnlineSession, grid_points  # noqa: E402
from samtrack.trackers.cotracker3 import CoTracker3Tracker  # noqa: E402

KEYS = Path(__file__).parent / "fixtures" / "cotracker3_state_dict_keys.json"
# A small model resolution and one update per window keep these plumbing tests fast; nothing in
# the code depends on either.
SMALL = (64, 96)


def small_tracker(online: bool, **config) -> CoTracker3Tracker:
    torch.manual_seed(0)
    model = CoTrackerThree(window_len=16 if online else 60, model_resolution=SMALL).eval()
    return CoTracker3Tracker(model, online, CoTrackerConfig(iters=1, **config))


def texture_clip(n: int, size: tuple[int, int] = (48, 64), step: float = 1.0) -> list[np.ndarray]:
    """A smooth random texture translating right by ``step`` px a frame."""
    rng = np.random.default_rng(3)
    h, w = size
    big = rng.integers(0, 255, (h // 4 + 2, (w + int(n * step)) // 4 + 2, 3)).astype(np.float32)
    import cv2

    big = cv2.resize(big, (big.shape[1] * 4, big.shape[0] * 4), interpolation=cv2.INTER_CUBIC)
    return [np.clip(big[:h, int(round(n * step - t * step)) :][:, :w], 0, 255).astype(np.uint8) for t in range(n)]


def test_state_dict_has_the_official_layout():
    expected = json.loads(KEYS.read_text())
    for mode, window in (("offline", 60), ("online", 16)):
        ours = [[k, list(v.shape)] for k, v in CoTrackerThree(window_len=window).state_dict().items()]
        assert ours == expected[mode], mode


def test_strict_loading_names_the_bad_key(tmp_path):
    good = CoTrackerThree(window_len=16).state_dict()
    path = tmp_path / "ok.pth"
    torch.save(good, path)
    build_cotracker("cotracker3-online", path)  # loads
    broken = dict(good)
    broken.pop("corr_mlp.fc1.weight")
    broken["extra.weight"] = torch.zeros(1)
    torch.save(broken, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match=r"missing \(corr_mlp.fc1.weight\).*unexpected \(extra.weight\)"):
        build_cotracker("cotracker3-online", tmp_path / "bad.pth")
    # The offline model's time embedding has 60 rows: an online checkpoint does not fit it.
    with pytest.raises(WeightsError, match="mis-shaped.*time_emb"):
        build_cotracker("cotracker3-offline", path)


def test_support_grid_matches_the_official_layout():
    grid = grid_points(6, (384, 512))
    assert grid.shape == (36, 2)
    assert torch.allclose(grid[0], torch.tensor([8.0, 8.0])) and torch.allclose(grid[-1], torch.tensor([504.0, 376.0]))
    assert torch.allclose(grid[1] - grid[0], torch.tensor([99.2, 0.0]))  # row by row, x first


@pytest.mark.parametrize("online", [False, True], ids=["offline", "online"])
def test_mid_clip_query_tracks_both_ways_symmetrically(online):
    # Reversing the clip turns the forward pass into the backward one and back: tracks of a
    # query in the middle must be the same, frame for frame, mirrored. (Without a support grid:
    # the official one sits on frame 0, which reversing moves.)
    frames = texture_clip(20)
    tracker = small_tracker(online, support_grid=0)
    queries = np.array([[9, 20.0, 20.0], [9, 40.0, 30.0], [0, 10.0, 10.0]], np.float32)
    there = tracker.track(frames, queries[:2])
    flipped = queries[:2].copy()
    flipped[:, 0] = len(frames) - 1 - flipped[:, 0]
    back = tracker.track(frames[::-1], flipped)
    np.testing.assert_allclose(there.points, back.points[::-1], atol=1e-3)
    np.testing.assert_array_equal(there.visible, back.visible[::-1])
    np.testing.assert_allclose(there.confidence, back.confidence[::-1], atol=1e-5)
    # On its own frame a query is where it was asked for, and visible.
    out = tracker.track(frames, queries)
    for j, (t, x, y) in enumerate(queries):
        assert out.visible[int(t), j] and np.allclose(out.points[int(t), j], (x, y))
    assert out.points.shape == (20, 3, 2) and out.confidence.min() >= 0 and out.confidence.max() <= 1


def test_online_session_keeps_at_most_one_window_of_frames():
    torch.manual_seed(0)
    model = CoTrackerThree(window_len=16, model_resolution=SMALL).eval()
    frames = texture_clip(44)
    queries = torch.tensor([[[0, 10.0, 10.0], [20, 30.0, 20.0]]])
    session = OnlineSession(model, queries, frames[0].shape[:2], iters=1)
    emitted, held, state_sizes = [], [], set()
    for t, frame in enumerate(frames):
        for index, _ in session.push(torch.from_numpy(frame).permute(2, 0, 1)[None].float()):
            emitted.append((t, index))
        held.append(session.buffered)
        if session.state.overlap is not None:
            state_sizes.add(tuple(session.state.overlap[0].shape) + tuple(s.numel() for s in session.state.support))
    emitted += [(len(frames), index) for index, _ in session.finish()]
    assert max(held) <= 16
    assert [index for _, index in emitted] == list(range(44))
    # Frames come out as the window moves past them, not at the end.
    assert max(t - index for t, index in emitted[:-8]) <= 16
    assert len(state_sizes) == 1  # what is kept between windows does not grow with the clip


def test_online_session_equals_one_shot_tracking_of_a_short_clip():
    # A clip shorter than the window is one padded window; pushing it frame by frame must give
    # the same tracks as the plugin's track() over the same frames.
    tracker = small_tracker(online=True)
    frames = texture_clip(10)
    queries = np.array([[0, 12.0, 12.0], [0, 30.0, 25.0]], np.float32)
    a = tracker.track(frames, queries)
    b = tracker.track(list(frames), queries)
    np.testing.assert_array_equal(a.points, b.points)
    assert a.points.shape == (10, 2, 2)


def test_registry_and_auto_choice(monkeypatch):
    assert set(LEARNED) == {"cotracker3", "cotracker3-online"}
    monkeypatch.setattr("samtrack.torch_models.cuda_available", lambda: False)
    assert resolve_name("auto") == ("lk", "auto: no CUDA device")
    monkeypatch.setattr("samtrack.torch_models.cuda_available", lambda: True)
    assert resolve_name("auto")[0] == "cotracker3"
    assert resolve_name("lk") == ("lk", "")
    with pytest.raises(ConfigError, match="unknown tracker 'pips'"):
        build_tracker(TrackerConfig(name="pips"))


def test_checkpoint_option_loads_a_file_and_names_a_missing_one(tmp_path):
    path = tmp_path / "scaled_online.pth"
    torch.save(CoTrackerThree(window_len=16).state_dict(), path)
    lines = []
    config = TrackerConfig(name="cotracker3-online", cotracker=CoTrackerConfig(checkpoint=str(path), device="cpu"))
    tracker = build_tracker(config, log=lines.append)
    assert tracker.name == "cotracker3-online" and tracker.redetects
    assert any("CC BY-NC 4.0" in line and str(path) in line for line in lines)
    config.cotracker.checkpoint = str(tmp_path / "absent.pth")
    with pytest.raises(WeightsError, match="absent.pth"):
        build_tracker(config)


def test_presets_pick_cotracker_settings(monkeypatch):
    from samtrack.config import default_preset

    config = load_config("sam_pt_cotracker")
    assert config.tracker.name == "cotracker3" and config.tracking_window == 60 and config.reinit.every == 0
    assert config.sampling.n_positive == 16 and config.decode.refine_iters == 12
    assert config.tracker.cotracker.visibility_threshold == 0.7 and config.tracker.cotracker.support_grid == 2
    monkeypatch.setattr("samtrack.torch_models.cuda_available", lambda: False)
    assert default_preset() == ("samtrack", "tracker lk (auto: no CUDA device), preset samtrack")
    assert default_preset("cotracker3-online") == ("sam_pt_cotracker", "tracker cotracker3-online, preset sam_pt_cotracker")
    assert load_config("samtrack").tracker.name == "lk"
    monkeypatch.setattr("samtrack.torch_models.cuda_available", lambda: True)
    assert default_preset() == ("sam_pt_cotracker", "tracker cotracker3 (auto: CUDA device found), preset sam_pt_cotracker")
    assert default_preset("lk") == ("samtrack", "")


@pytest.mark.parametrize("tracker", ["cotracker3", "cotracker3-online"])
def test_samtrack_run_with_cotracker(tracker, mobilesam_checkpoint, tmp_path, capsys):
    # Random weights: this checks that the tracker runs inside `samtrack run` and writes every
    # output, not what the masks look like.
    from samtrack.cli import main

    from .conftest import REPO

    checkpoint = tmp_path / "random.pth"
    torch.manual_seed(0)
    torch.save(CoTrackerThree(window_len=16 if tracker.endswith("online") else 60).state_dict(), checkpoint)
    out = tmp_path / "out"
    code = main(["run", str(REPO / "examples" / "bear.mp4"), "--points", str(REPO / "examples" / "clicks.json"),
                 "--out", str(out), "--tracker", tracker, "--checkpoint", str(mobilesam_checkpoint),
                 "--segmenter", "mobilesam-onnx", "--max-frames", "3", "--set", "tracker.cotracker.iters=1",
                 "--tracker-checkpoint", str(checkpoint), "--set", "decode.refine_iters=0"])
    assert code == 0
    err = capsys.readouterr().err
    assert f"tracker {tracker}, preset sam_pt_cotracker" in err and "CC BY-NC 4.0" in err
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    tracks = json.loads((out / "tracks.json").read_text())
    assert len(tracks["objects"][0]["frames"]) == 3
