"""Result writers: palette PNGs, atomic files, staged result folders and tracks.json."""
from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samtrack.errors import InputError
from samtrack.outputs import StagedOutputDir, TracksRecorder, atomic_write, read_label_png, write_label_png
from samtrack.palette import davis_palette
from samtrack.pipeline import FrameResult, ObjectPoints
from samtrack.video import VideoInfo


class Boom(Exception):
    pass


# ---------------------------------------------------------------------- label PNGs
def test_label_png_round_trip_is_indexed_with_davis_palette(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 256, size=(37, 53), dtype=np.uint8)
    labels[0, :3] = (0, 1, 255)
    path = tmp_path / "00000.png"
    write_label_png(path, labels)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "P"
        palette = np.array(image.getpalette(), np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(palette, davis_palette())
    back = read_label_png(path)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels)
    # Non-contiguous input (a view) is written as its values, not its memory.
    write_label_png(path, labels[:, ::2])
    np.testing.assert_array_equal(read_label_png(path), labels[:, ::2])


def test_label_png_rejects_wrong_arrays(tmp_path):
    for bad in (np.zeros((4, 4), np.int32), np.zeros((4, 4, 3), np.uint8), [[0, 1]]):
        with pytest.raises(ValueError, match="uint8"):
            write_label_png(tmp_path / "x.png", bad)
    assert list(tmp_path.iterdir()) == []


def test_read_label_png_binary_grey(tmp_path):
    mask = np.zeros((10, 12), np.uint8)
    mask[2:5, 3:9] = 255
    mask[8, 8] = 7
    Image.fromarray(mask).save(tmp_path / "l.png")
    expected = (mask > 0).astype(np.uint8)
    np.testing.assert_array_equal(read_label_png(tmp_path / "l.png"), expected)
    Image.fromarray(mask > 0).save(tmp_path / "one.png")
    assert Image.open(tmp_path / "one.png").mode == "1"
    np.testing.assert_array_equal(read_label_png(tmp_path / "one.png"), expected)


def test_read_label_png_real_davis_annotation(davis16):
    gt = sorted((davis16 / "Annotations" / "480p").glob("*/00000.png"))[0]
    labels = read_label_png(gt)
    grey = np.asarray(Image.open(gt).convert("L"))
    assert labels.shape == grey.shape and set(np.unique(labels)) <= {0, 1}
    np.testing.assert_array_equal(labels, (grey > 0).astype(np.uint8))


# ---------------------------------------------------------------------- atomic files
def test_atomic_write_binary_and_text(tmp_path):
    with atomic_write(tmp_path / "a.bin") as f:
        f.write(b"\x00\x01")
    with atomic_write(tmp_path / "t.txt", "w") as f:
        f.write("caf\u00e9\n")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "t.txt").read_bytes() == "caf\u00e9\n".encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "t.txt"]
    with pytest.raises(ValueError):
        with atomic_write(tmp_path / "x", "a"):
            pass


def test_atomic_write_permissions_follow_umask(tmp_path):
    (tmp_path / "plain").write_bytes(b"")
    with atomic_write(tmp_path / "atomic") as f:
        f.write(b"")
    assert (tmp_path / "atomic").stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_atomic_write_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(Boom):
        with atomic_write(target, "w") as f:
            f.write("half")
            raise Boom
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_failure_keeps_existing_file(tmp_path):
    target = tmp_path / "out.png"
    write_label_png(target, np.ones((4, 4), np.uint8))
    before = target.read_bytes()
    with pytest.raises(Boom):
        with atomic_write(target) as f:
            f.write(b"garbage")
            raise Boom
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
    write_label_png(target, np.full((4, 4), 2, np.uint8))  # success replaces it
    assert read_label_png(target).max() == 2
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


# ---------------------------------------------------------------------- staged folders
def test_staged_dir_creates_nothing_before_enter_and_publishes_on_success(tmp_path):
    target = tmp_path / "deep" / "results"
    staged = StagedOutputDir(target)
    assert list(tmp_path.iterdir()) == []
    with staged as staging:
        assert staging.name == f".results.partial-{os.getpid()}"
        assert staging.parent == target.parent.resolve() and staging.is_dir()
        assert not target.exists()
        (staging / "masks").mkdir()
        write_label_png(staging / "masks" / "00000.png", np.zeros((3, 3), np.uint8))
    assert (target / "masks" / "00000.png").is_file()
    assert [p.name for p in target.parent.iterdir()] == ["results"]


def test_staged_dir_failure_removes_staging_and_keeps_target(tmp_path):
    target = tmp_path / "results"
    with pytest.raises(Boom):
        with StagedOutputDir(target) as staging:
            (staging / "half.txt").write_text("x")
            raise Boom
    assert list(tmp_path.iterdir()) == []

    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(Boom):
        with StagedOutputDir(target) as staging:
            (staging / "new.txt").write_text("new")
            raise Boom
    assert [p.name for p in tmp_path.iterdir()] == ["results"]
    assert [p.name for p in target.iterdir()] == ["old.txt"]


def test_staged_dir_replaces_existing_target(tmp_path):
    target = tmp_path / "results"
    target.mkdir()
    (target / "old.txt").write_text("old")
    (target / "sub").mkdir()
    with StagedOutputDir(target) as staging:
        (staging / "new.txt").write_text("new")
        assert (target / "old.txt").exists()  # the old results stay until the new ones are done
    assert [p.name for p in tmp_path.iterdir()] == ["results"]
    assert [p.name for p in target.iterdir()] == ["new.txt"]


def test_staged_dir_refuses_a_file_target(tmp_path):
    target = tmp_path / "results"
    target.write_text("not a folder")
    with pytest.raises(InputError, match="exists and is not a folder"):
        with StagedOutputDir(target):
            pass
    assert target.read_text() == "not a folder"
    assert [p.name for p in tmp_path.iterdir()] == ["results"]


# ---------------------------------------------------------------------- tracks.json
def _points(xy, visible, labels) -> ObjectPoints:
    return ObjectPoints(np.array(xy, np.float32), np.array(visible, bool), np.array(labels, np.int32))


def test_tracks_json_round_trip(tmp_path):
    video = VideoInfo(Path("clips/bear.mp4"), n_frames=90, fps=24.0, height=480, width=854)
    recorder = TracksRecorder(video, {1: "bear", 2: None, 9: "never seen"})
    recorder.add(FrameResult(
        frame_index=4,
        label_map=np.zeros((480, 854), np.uint8),
        points={2: _points([[1.0, 2.0]], [True], [1]), 1: _points([[412.123, 230.5], [100.0, 50.004]], [True, False], [1, 0])},
        scores={1: 0.95312, 2: 0.5},
    ))
    recorder.add(FrameResult(frame_index=0, label_map=np.zeros((480, 854), np.uint8),
                             points={1: _points([[3.0, 4.0]], [True], [1])}))
    recorder.add(FrameResult(frame_index=8, label_map=np.zeros((480, 854), np.uint8)))
    with pytest.raises(ValueError, match="frame 4 was already recorded"):
        recorder.add(FrameResult(frame_index=4, label_map=np.zeros((480, 854), np.uint8)))

    path = tmp_path / "tracks.json"
    recorder.write(path)
    data = json.loads(path.read_text())
    assert data == recorder.to_dict()
    assert data["version"] == 1
    assert data["video"] == {"path": str(Path("clips/bear.mp4")), "width": 854, "height": 480, "fps": 24.0, "n_frames": 90}
    assert data["frames"] == [0, 4, 8]
    assert [(o["id"], o["name"]) for o in data["objects"]] == [(1, "bear"), (2, None), (9, "never seen")]
    bear, other, unseen = data["objects"]
    assert [f["frame"] for f in bear["frames"]] == [0, 4]
    assert bear["frames"][0] == {"frame": 0, "score": None, "points": [[3.0, 4.0]], "visible": [True], "labels": [1]}
    assert bear["frames"][1] == {
        "frame": 4, "score": 0.953, "points": [[412.12, 230.5], [100.0, 50.0]], "visible": [True, False], "labels": [1, 0],
    }
    assert other["frames"] == [{"frame": 4, "score": 0.5, "points": [[1.0, 2.0]], "visible": [True], "labels": [1]}]
    assert unseen["frames"] == []
    assert [p.name for p in tmp_path.iterdir()] == ["tracks.json"]


def test_tracks_recorder_holds_only_points():
    # A long video's records must stay small: no masks kept, no per-point Python objects.
    video = VideoInfo(Path("v.mp4"), n_frames=5000, fps=30.0, height=1080, width=1920)
    recorder = TracksRecorder(video, {1: None, 2: None})
    label_map = np.zeros((1080, 1920), np.uint8)
    xy = np.random.default_rng(0).uniform(0, 1000, (9, 2)).astype(np.float32)
    visible, labels = np.ones(9, bool), np.array([1] * 8 + [0], np.int32)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for frame in range(5000):
            points = {o: ObjectPoints(xy, visible, labels) for o in (1, 2)}
            recorder.add(FrameResult(frame_index=frame, label_map=label_map, points=points, scores={1: 0.9, 2: 0.8}))
        per_record = (tracemalloc.get_traced_memory()[0] - before) / 10000
    finally:
        tracemalloc.stop()
    assert per_record < 600  # 9 points: 144 bytes of coordinates, the rest is bookkeeping
    xy[:] = -1  # the recorder keeps copies, not views of the pipeline's arrays
    assert recorder.to_dict()["objects"][0]["frames"][0]["points"][0][0] >= 0
