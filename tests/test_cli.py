"""`samtrack run` end to end on real DAVIS frames, and its handling of bad input.

The end-to-end runs use the real MobileSAM weights and the real DAVIS 2016 ``bear`` sequence;
each run is shared by the tests that check one of its outputs. The bad-input tests need neither:
they prove that every user mistake is reported before a model is loaded or a file is written.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from samtrack.cli import main
from samtrack.palette import davis_palette

from .conftest import REPO, ModelLoaded, load_gt

SEQ = "bear"
N_FRAMES = 20
BEAR_MP4 = REPO / "examples" / "bear.mp4"
CLICKS = REPO / "examples" / "clicks.json"
# A patch of the large rock on the right of bear's first frame, far from the bear (x 96..464).
ROCK = (slice(60, 220), slice(590, 710))  # rows, columns


def run_captured(argv: list[str]) -> tuple[int, str]:
    """Run the CLI in-process (for module-scoped fixtures, where capsys is unavailable)."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(argv)
    return code, stdout.getvalue()


def read_labels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "P", f"{path.name}: mode {image.mode}, expected a palette PNG"
        return np.asarray(image)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def bear_slice(tmp_path_factory, davis16: Path) -> Path:
    """The first 20 frames of bear as a frame folder, and its first annotation as mask.png."""
    root = tmp_path_factory.mktemp("bear_slice")
    frames = root / "frames"
    frames.mkdir()
    for i in range(N_FRAMES):
        (frames / f"{i:05d}.jpg").symlink_to(davis16 / "JPEGImages" / "480p" / SEQ / f"{i:05d}.jpg")
    # The DAVIS 2016 annotation as it is: grey, 0 background and 255 the object.
    (root / "mask.png").write_bytes((davis16 / "Annotations" / "480p" / SEQ / "00000.png").read_bytes())
    return root


@pytest.fixture(scope="module")
def single_run(bear_slice: Path, mobilesam_checkpoint: Path) -> tuple[Path, str]:
    out = bear_slice / "out"
    code, stdout = run_captured([
        "run", str(bear_slice / "frames"), "--mask", str(bear_slice / "mask.png"), "--out", str(out),
        "--config", "fast", "--checkpoint", str(mobilesam_checkpoint), "--quiet",
    ])
    assert code == 0
    return out, stdout


# ---------------------------------------------------------------------- one object, mask prompt
def test_run_tracks_the_object(single_run, davis16: Path) -> None:
    out, _ = single_run
    ious = [iou(read_labels(out / "masks" / f"{i:05d}.png") == 1, load_gt(davis16, SEQ, i)) for i in range(1, N_FRAMES)]
    assert np.mean(ious) >= 0.7, f"mean IoU {np.mean(ious):.3f}, per frame {np.round(ious, 2).tolist()}"
    assert min(ious) >= 0.5


def test_run_writes_one_palette_png_per_frame(single_run, davis16: Path) -> None:
    out, _ = single_run
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{i:05d}.png" for i in range(N_FRAMES)]
    with Image.open(out / "masks" / "00007.png") as image:
        assert image.mode == "P"
        assert image.size == (854, 480)
        # The DAVIS palette, so that the PNGs look like the benchmark's annotations.
        assert bytes(image.getpalette()[:3 * 256]) == davis_palette().tobytes()[:3 * 256]
    for i in range(N_FRAMES):
        assert set(np.unique(read_labels(out / "masks" / f"{i:05d}.png"))) <= {0, 1}
    # The prompt mask is the answer on its own frame, pixel for pixel.
    np.testing.assert_array_equal(read_labels(out / "masks" / "00000.png") == 1, load_gt(davis16, SEQ, 0))


def test_run_writes_h264_overlay(single_run) -> None:
    out, _ = single_run
    with av.open(str(out / "overlay.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.codec_context.width, stream.codec_context.height) == (854, 480)
        frames = list(container.decode(stream))
    assert len(frames) == N_FRAMES


def test_run_writes_tracks_json(single_run, davis16: Path) -> None:
    out, _ = single_run
    tracks = json.loads((out / "tracks.json").read_text())
    assert tracks["version"] == 1
    assert tracks["video"]["n_frames"] == N_FRAMES
    assert (tracks["video"]["width"], tracks["video"]["height"]) == (854, 480)
    assert tracks["frames"] == list(range(N_FRAMES))
    [obj] = tracks["objects"]
    assert obj["id"] == 1
    assert [f["frame"] for f in obj["frames"]] == list(range(N_FRAMES))
    inside = []
    for entry in obj["frames"]:
        points = np.array(entry["points"], np.float64).reshape(-1, 2)
        visible, labels = np.array(entry["visible"], bool), np.array(entry["labels"])
        assert len(points) > 0 and len(visible) == len(points) == len(labels)
        assert set(labels.tolist()) <= {0, 1} and (labels == 1).any()
        assert ((points >= 0) & (points < [854, 480])).all()
        # Points are (x, y) in pixels of the original frame: visible positives sit on the bear.
        gt = load_gt(davis16, SEQ, entry["frame"])
        xy = np.round(points[visible & (labels == 1)]).astype(int)
        inside += gt[np.minimum(xy[:, 1], 479), np.minimum(xy[:, 0], 853)].tolist()
    assert np.mean(inside) >= 0.8


def test_run_prints_summary(single_run) -> None:
    out, stdout = single_run
    assert re.search(rf"^samtrack: {N_FRAMES} frames, 1 object\(s\), \d+\.\d+ fps -> {re.escape(str(out))}$",
                     stdout, re.M), stdout
    assert (out / "config.yaml").is_file()
    # Nothing but the results: no staging folder left beside them.
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []


# ---------------------------------------------------------------------- two objects
def test_run_two_objects_stay_apart(bear_slice: Path, davis16: Path, mobilesam_checkpoint: Path, tmp_path: Path) -> None:
    n = 12
    labels = load_gt(davis16, SEQ, 0).astype(np.uint8)
    assert not labels[ROCK].any()
    labels[ROCK] = 2
    mask = Image.fromarray(labels, mode="L").convert("P")
    mask.putpalette(davis_palette().tobytes())
    mask.save(tmp_path / "two.png")
    out = tmp_path / "out"
    code, _ = run_captured([
        "run", str(bear_slice / "frames"), "--mask", str(tmp_path / "two.png"), "--out", str(out),
        "--config", "fast", "--checkpoint", str(mobilesam_checkpoint), "--max-frames", str(n), "--quiet",
    ])
    assert code == 0
    maps = [read_labels(out / "masks" / f"{i:05d}.png") for i in range(n)]
    assert len(list((out / "masks").iterdir())) == n
    assert all(set(np.unique(m)) <= {0, 1, 2} for m in maps)
    assert sum((m == 1).any() for m in maps) >= n - 1
    assert sum((m == 2).any() for m in maps) >= n - 1
    # The rock stays the rock: it neither swallows the bear nor wanders onto it.
    ious = [iou(maps[i] == 1, load_gt(davis16, SEQ, i)) for i in range(1, n)]
    assert np.mean(ious) >= 0.6, np.round(ious, 2).tolist()
    rock_on_bear = [((maps[i] == 2) & load_gt(davis16, SEQ, i)).sum() / max((maps[i] == 2).sum(), 1) for i in range(1, n)]
    assert max(rock_on_bear) < 0.2
    tracks = json.loads((out / "tracks.json").read_text())
    assert [o["id"] for o in tracks["objects"]] == [1, 2]


# ---------------------------------------------------------------------- video file + clicks.json
def test_run_mp4_with_clicks(davis16: Path, mobilesam_checkpoint: Path, tmp_path: Path, capsys) -> None:
    n = 8
    out = tmp_path / "out"
    _earlier_result(out)
    code = main(["run", str(BEAR_MP4), "--points", str(CLICKS), "--out", str(out), "--config", "fast",
                 "--checkpoint", str(mobilesam_checkpoint), "--max-frames", str(n), "--quiet"])
    assert code == 0
    # The earlier result is replaced as a whole: its extra mask is gone.
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert re.search(rf"samtrack: {n} frames, 1 object\(s\), ", capsys.readouterr().out)
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{i:05d}.png" for i in range(n)]
    # bear.mp4 is bear's first 30 frames, re-encoded: the DAVIS annotations still apply.
    ious = [iou(read_labels(out / "masks" / f"{i:05d}.png") == 1, load_gt(davis16, SEQ, i)) for i in range(n)]
    assert np.mean(ious) >= 0.7, np.round(ious, 2).tolist()
    with av.open(str(out / "overlay.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == n
    tracks = json.loads((out / "tracks.json").read_text())
    assert tracks["objects"][0]["name"] == "bear"
    # On the prompted frame the clicks themselves are the points, in clicks.json's order.
    first = tracks["objects"][0]["frames"][0]
    clicks = json.loads(CLICKS.read_text())["objects"][0]["prompts"][0]
    assert first["points"][:4] == [*clicks["positive"], *clicks["negative"]]
    assert first["labels"][:4] == [1, 1, 1, 0]


# ---------------------------------------------------------------------- bad input
def _clicks(tmp_path: Path, name: str, obj: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"version": 1, "objects": [obj]}))
    return path


def _bad_input(case: str, tmp_path: Path) -> tuple[list[str], str]:
    """argv (without --out) for one mistake, and what the error line must name."""
    video = str(BEAR_MP4)  # 30 frames, 854x480
    good = {"id": 1, "prompts": [{"frame": 0, "positive": [[300, 300]]}]}
    if case == "clicks-unknown-key":
        path = _clicks(tmp_path, "c.json", {**good, "colour": "red"})
        return ["run", video, "--points", str(path)], "colour"
    if case == "clicks-out-of-range":
        path = _clicks(tmp_path, "c.json", {"id": 1, "prompts": [{"frame": 0, "positive": [[854, 100]]}]})
        return ["run", video, "--points", str(path)], "outside"
    if case == "clicks-negative-coordinate":
        path = _clicks(tmp_path, "c.json", {"id": 1, "prompts": [{"frame": 0, "positive": [[10, -1]]}]})
        return ["run", video, "--points", str(path)], "negative"
    if case == "clicks-frame-past-end":
        path = _clicks(tmp_path, "c.json", {"id": 1, "prompts": [{"frame": 30, "positive": [[10, 10]]}]})
        return ["run", video, "--points", str(path)], "past the end"
    if case == "clicks-frame-skipped":
        path = _clicks(tmp_path, "c.json", {"id": 1, "prompts": [{"frame": 3, "positive": [[10, 10]]}]})
        return ["run", video, "--points", str(path), "--stride", "2"], "frame 3 is not processed"
    if case == "clicks-no-positive":
        path = _clicks(tmp_path, "c.json", {"id": 1, "prompts": [{"frame": 0, "negative": [[10, 10]]}]})
        return ["run", video, "--points", str(path)], "positive point"
    if case == "clicks-missing":
        return ["run", video, "--points", str(tmp_path / "nope.json")], "no such file"
    if case == "clicks-not-json":
        path = tmp_path / "c.json"
        path.write_text("{'objects': []}")
        return ["run", video, "--points", str(path)], "not valid JSON"
    if case == "mask-empty":
        Image.new("L", (854, 480)).save(tmp_path / "m.png")
        return ["run", video, "--mask", str(tmp_path / "m.png")], "no object pixels"
    if case == "mask-wrong-size":
        Image.new("L", (100, 80), 255).save(tmp_path / "m.png")
        return ["run", video, "--mask", str(tmp_path / "m.png")], "100x80"
    if case == "mask-frame-past-end":
        Image.new("L", (854, 480), 255).save(tmp_path / "m.png")
        return ["run", video, "--mask", str(tmp_path / "m.png"), "--mask-frame", "40"], "past the end"
    if case == "video-missing":
        return ["run", str(tmp_path / "nope.mp4"), "--points", str(CLICKS)], "no such file"
    if case == "video-not-a-video":
        (tmp_path / "notes.mp4").write_text("these are my notes, not a video\n")
        return ["run", str(tmp_path / "notes.mp4"), "--points", str(CLICKS)], "cannot be opened as a video"
    if case == "video-corrupt":
        (tmp_path / "cut.mp4").write_bytes(BEAR_MP4.read_bytes()[:2048])
        return ["run", str(tmp_path / "cut.mp4"), "--points", str(CLICKS)], "cannot be opened as a video"
    if case == "start-past-end":
        return ["run", video, "--points", str(CLICKS), "--start", "30"], "past the end"
    if case == "set-unknown-key":
        return ["run", video, "--points", str(CLICKS), "--set", "decode.nonsense=1"], "decode.nonsense"
    if case == "set-bad-value":
        return ["run", video, "--points", str(CLICKS), "--set", "reinit.every=often"], "reinit.every"
    if case == "config-bad-value":
        path = tmp_path / "my.yaml"
        path.write_text("decode:\n  refine_iters: many\n")
        return ["run", video, "--points", str(CLICKS), "--config", str(path)], "decode.refine_iters"
    if case == "config-not-yaml":
        path = tmp_path / "my.yaml"
        path.write_text("decode: [unclosed\n")
        return ["run", video, "--points", str(CLICKS), "--config", str(path)], "not valid YAML"
    if case == "config-missing":
        return ["run", video, "--points", str(CLICKS), "--config", str(tmp_path / "nope.yaml")], "no such config"
    raise AssertionError(case)


BAD_INPUTS = [
    "clicks-unknown-key", "clicks-out-of-range", "clicks-negative-coordinate", "clicks-frame-past-end",
    "clicks-frame-skipped", "clicks-no-positive", "clicks-missing", "clicks-not-json", "mask-empty", "mask-wrong-size",
    "mask-frame-past-end", "video-missing", "video-not-a-video", "video-corrupt", "start-past-end",
    "set-unknown-key", "set-bad-value", "config-bad-value", "config-not-yaml", "config-missing",
]
# The file each error line must name (None: the mistake is on the command line).
NAMED = {
    "clicks": "--points", "mask": "--mask", "video": "input", "start": "input", "set": None, "config": "--config",
}


def _named_path(argv: list[str], case: str) -> str | None:
    flag = NAMED[case.split("-")[0]]
    if flag is None:
        return None
    return argv[1] if flag == "input" else argv[argv.index(flag) + 1]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _earlier_result(out: Path) -> None:
    """What an earlier `samtrack run` left in ``out`` (which a new run may replace)."""
    (out / "masks").mkdir(parents=True)
    Image.new("P", (854, 480)).save(out / "masks" / "00099.png")
    (out / "tracks.json").write_text('{"version": 1}')


@pytest.mark.parametrize("existing_out", [False, True], ids=["new-out", "existing-out"])
@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2(case: str, existing_out: bool, tmp_path: Path, no_model, capfd) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    argv, detail = _bad_input(case, inputs)
    results = tmp_path / "results"
    out = results / "out"
    if existing_out:
        _earlier_result(out)
    before = _snapshot(results) if existing_out else None

    code = main([*argv, "--out", str(out)])

    captured = capfd.readouterr()  # file descriptors, so native (FFmpeg) noise counts too
    assert code == 2
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("samtrack: error: ")
    assert detail in lines[0]
    named = _named_path(argv, case)
    if named is not None:
        assert named in lines[0]
    if existing_out:
        assert _snapshot(results) == before
        assert [p.name for p in results.iterdir()] == ["out"]
    else:
        assert not results.exists()


def test_bad_input_checks_run_before_the_model(tmp_path: Path, no_model) -> None:
    # The control for the tests above: with valid input the CLI does reach the model loader.
    with pytest.raises(ModelLoaded):
        main(["run", str(BEAR_MP4), "--points", str(CLICKS), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["out-is-input-folder", "out-holds-input-frames", "out-holds-other-files"])
def test_out_that_must_not_be_replaced(case: str, tmp_path: Path, no_model, capsys) -> None:
    # The whole --out folder is replaced on success, so it must hold nothing but an earlier result.
    out = tmp_path / "out"
    out.mkdir()
    video, clicks = BEAR_MP4, CLICKS
    if case == "out-is-input-folder":  # `samtrack run clip.mp4 --points clicks.json --out .`
        video, clicks = out / "clip.mp4", out / "clicks.json"
        video.write_bytes(BEAR_MP4.read_bytes())
        clicks.write_bytes(CLICKS.read_bytes())
        expected = "holds the input"
    elif case == "out-holds-input-frames":  # frames taken from an earlier result's folder
        _earlier_result(out)
        video = out / "masks"
        expected = "holds the input"
    else:
        _earlier_result(out)
        (out / "notes.txt").write_text("mine")
        expected = "'notes.txt'"
    before = _snapshot(tmp_path)
    code = main(["run", str(video), "--points", str(clicks), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith(f"samtrack: error: {out}: ") and expected in err, err
    assert _snapshot(tmp_path) == before


def test_out_is_a_file(tmp_path: Path, no_model, capsys) -> None:
    (tmp_path / "out").write_text("not a folder")
    assert main(["run", str(BEAR_MP4), "--points", str(CLICKS), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("samtrack: error: ") and str(tmp_path / "out") in err and len(err.splitlines()) == 1
    assert (tmp_path / "out").read_text() == "not a folder"


def test_out_under_a_file_is_a_one_line_error(tmp_path: Path, no_model, capsys) -> None:
    (tmp_path / "afile").write_text("mine")
    out = tmp_path / "afile" / "out"
    assert main(["run", str(BEAR_MP4), "--points", str(CLICKS), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"samtrack: error: {out}: cannot create the results folder") and len(err.splitlines()) == 1
    assert (tmp_path / "afile").read_text() == "mine"


def test_bad_frame_mid_video_leaves_out_untouched(davis16: Path, mobilesam_checkpoint: Path, tmp_path: Path, capsys) -> None:
    # A mistake only found while processing (a frame of another size) must not touch old results.
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        (frames / f"{i:05d}.jpg").symlink_to(davis16 / "JPEGImages" / "480p" / SEQ / f"{i:05d}.jpg")
    Image.new("RGB", (320, 240)).save(frames / "00002.jpg")
    out = tmp_path / "results" / "out"
    _earlier_result(out)
    before = _snapshot(out.parent)
    code = main(["run", str(frames), "--points", str(CLICKS), "--out", str(out), "--config", "fast",
                 "--checkpoint", str(mobilesam_checkpoint), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("samtrack: error: ")
    assert str(frames / "00002.jpg") in err
    assert _snapshot(out.parent) == before
    assert [p.name for p in out.parent.iterdir()] == ["out"]


@pytest.mark.parametrize("case", ["video-corrupt", "clicks-unknown-key"])
def test_real_entry_point_shows_no_traceback(case: str, tmp_path: Path) -> None:
    argv, detail = _bad_input(case, tmp_path)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "samtrack.cli", *argv, "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        # An empty weights cache: loading the model would mean fetching it, which must not happen.
        env={**os.environ, "SAMTRACK_HOME": str(tmp_path / "empty-cache")},
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("samtrack: error: ") and detail in lines[0], proc.stderr
    assert not out.exists() and not (tmp_path / "empty-cache").exists()


def test_bench_reports_stages_ratio_and_memory(tmp_path, monkeypatch, capsys):
    from samtrack.api import VideoPredictor

    from .fakes import BlobSegmenter, ColourTracker, colour_clip

    frames, _ = colour_clip(tmp_path)
    monkeypatch.setattr(VideoPredictor, "from_config",
                        classmethod(lambda cls, config, overrides=(), log=print: cls(config, BlobSegmenter(), ColourTracker())))
    assert main(["bench", str(frames), "--mask", str(tmp_path / "mask.png"), "--config", "fast"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("6 frames, 1 object(s)")
    assert "encoder" in out and "decoder" in out and "tracker" in out and "peak RSS" in out
    assert "x encoder" in out
    assert "machine: " in out and "GFLOP/s" in out and "segmenter: blob" in out


def test_a_full_disk_while_writing_is_one_line_and_leaves_no_results(mobilesam_checkpoint: Path, tmp_path: Path,
                                                                      capsys, monkeypatch) -> None:
    # Writes run on the writer thread; its failure must reach the command as one line, stop
    # the run, and leave neither --out nor a staging folder.
    import errno

    from samtrack import results

    real, written = results.write_label_png, []

    def fill_up(path, label_map) -> None:
        if len(written) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, label_map)
        written.append(path)

    monkeypatch.setattr(results, "write_label_png", fill_up)
    out = tmp_path / "out"
    code = main(["run", str(BEAR_MP4), "--points", str(CLICKS), "--out", str(out), "--config", "fast",
                 "--checkpoint", str(mobilesam_checkpoint), "--max-frames", "8", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "cannot write the results of frame 3" in err and "no space" in err.lower(), err
    assert len(written) == 3 and list(tmp_path.iterdir()) == []
