"""Hostile and broken input: every case ends in one clean line, the right exit code, no debris,
and inputs left byte for byte as they were; the Python API names the argument it refuses; a
killed run's leftovers are reclaimed by the next run.

The CLI cases run in-process with the model loader patched out where the mistake must be found
before any model loads. Unreadable files are made with chmod where that works; as root (which
chmod cannot stop) the same ``PermissionError`` is raised at the system-call boundary
(``open``, ``os.stat``, ``os.scandir``) for exactly the paths chmod would have closed.
"""
from __future__ import annotations

import builtins
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from samtrack.api import VideoPredictor
from samtrack.cli import main
from samtrack.config import load_config
from samtrack.errors import InputError
from samtrack.outputs import OWNER_FILE, StagedOutputDir
from samtrack.prompts import MAX_OBJECTS, MAX_POINTS_PER_PROMPT, MAX_PROMPTS_PER_OBJECT

from .conftest import ModelLoaded, refuse_model
from .fakes import BlobSegmenter, ColourTracker, left_by_killed_run

REPO = Path(__file__).resolve().parents[1]
BEAR_MP4 = REPO / "examples" / "bear.mp4"  # 30 frames, 854x480
GOOD = {"id": 1, "prompts": [{"frame": 0, "positive": [[300, 300]]}]}


# ---------------------------------------------------------------------- unreadable paths
class Denied:
    """Paths made unreadable for the test: a file cannot be opened; a folder cannot be listed,
    and nothing under it can be opened or stat'ed (what ``chmod 000`` does for other users)."""

    def __init__(self, monkeypatch) -> None:
        self.monkeypatch = monkeypatch
        self.paths: list[Path] = []
        self.chmodded: list[tuple[Path, int]] = []
        self.patched = False

    def __call__(self, path: Path) -> Path:
        if os.geteuid() != 0:
            self.chmodded.append((path, stat.S_IMODE(path.stat().st_mode)))
            path.chmod(0)
            return path
        self.paths.append(Path(os.path.abspath(path)))
        if not self.patched:
            self._patch()
        return path

    def restore(self) -> None:
        for path, mode in self.chmodded:
            path.chmod(mode)

    def _patch(self) -> None:
        self.patched = True
        real_open, real_stat, real_scandir = builtins.open, os.stat, os.scandir
        denied = self

        def fail(target):
            raise PermissionError(13, "Permission denied", os.fsdecode(target))

        def guarded_open(file, *args, **kwargs):
            if not isinstance(file, int) and denied._opens_blocked(file):
                fail(file)
            return real_open(file, *args, **kwargs)

        def guarded_stat(path, *args, **kwargs):
            if not isinstance(path, int) and any(d in Path(os.path.abspath(os.fsdecode(path))).parents for d in denied.paths):
                fail(path)
            return real_stat(path, *args, **kwargs)

        def guarded_scandir(path="."):
            if not isinstance(path, int) and Path(os.path.abspath(os.fsdecode(path))) in denied.paths:
                fail(path)
            return real_scandir(path)

        self.monkeypatch.setattr(builtins, "open", guarded_open)
        self.monkeypatch.setattr(os, "stat", guarded_stat)
        self.monkeypatch.setattr(os, "scandir", guarded_scandir)

    def _opens_blocked(self, file: object) -> bool:
        path = Path(os.path.abspath(os.fsdecode(file)))
        return any(path == d or d in path.parents for d in self.paths)


@pytest.fixture
def deny(monkeypatch):
    denied = Denied(monkeypatch)
    yield denied
    denied.restore()


# ---------------------------------------------------------------------- CLI harness
@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch) -> Path:
    """The temp folder samtrack sees, empty at the start, to find any temp debris."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setenv("TMPDIR", str(folder))
    return folder


# onnxruntime writes one fixed-name session file (its telemetry SDK's) into the temp folder on
# import; it is overwritten, not added to, by every run, and is not samtrack's to delete.
NOT_OURS = {".ses"}


def temp_debris(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name not in NOT_OURS)


def snapshot(folder: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every entry under ``folder``: its bytes (None for folders) and its mode."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            st = os.lstat(path)
            found[str(path.relative_to(folder))] = (None if stat.S_ISDIR(st.st_mode) else path.read_bytes(), st.st_mode)
    return found


def write_clicks(folder: Path, data: object, name: str = "clicks.json") -> Path:
    path = folder / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def clicks_with(**prompt) -> dict:
    return {"objects": [{"id": 1, "prompts": [{"frame": 0, **prompt}]}]}


def grey_mask(folder: Path, name: str = "mask.png", size=(854, 480)) -> Path:
    image = Image.new("L", size)
    image.paste(255, (300, 200, 500, 400))
    image.save(folder / name)
    return folder / name


# Each case: (make argv from the inputs folder (without --out), text the line must contain,
# exit code). ``deny`` is handed in for the unreadable-file cases.
Case = Callable[[Path, Denied], tuple[list[str], str, int]]
CASES: dict[str, Case] = {}


def case(name: str):
    def register(fn: Case) -> Case:
        assert name not in CASES
        CASES[name] = fn
        return fn
    return register


def run_clicks(data: object, detail: str, extra: tuple[str, ...] = ()) -> Case:
    def make(inputs: Path, deny: Denied):
        return ["run", str(BEAR_MP4), "--points", str(write_clicks(inputs, data)), *extra], detail, 2
    return make


def run_config(text: str | bytes, detail: str) -> Case:
    def make(inputs: Path, deny: Denied):
        path = inputs / "my.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["run", str(BEAR_MP4), "--points", str(write_clicks(inputs, {"objects": [GOOD]})), "--config", str(path)], detail, 2
    return make


def run_option(options: list[str], detail: str) -> Case:
    def make(inputs: Path, deny: Denied):
        return ["run", str(BEAR_MP4), "--points", str(write_clicks(inputs, {"objects": [GOOD]})), *options], detail, 2
    return make


# -- class 1: filesystem errors on inputs ------------------------------------------------------
@case("frames-folder-unreadable")
def _(inputs, deny):
    frames = inputs / "frames"
    frames.mkdir()
    Image.new("RGB", (64, 48)).save(frames / "00000.png")
    deny(frames)
    return ["run", str(frames), "--points", str(write_clicks(inputs, {"objects": [GOOD]}))], "frames: permission denied", 2


@case("frame-file-unreadable")
def _(inputs, deny):
    frames = inputs / "frames"
    frames.mkdir()
    for i in range(2):
        Image.new("RGB", (64, 48)).save(frames / f"{i:05d}.png")
    deny(frames / "00000.png")
    clicks = write_clicks(inputs, {"objects": [{"id": 1, "prompts": [{"frame": 0, "positive": [[10, 10]]}]}]})
    return ["run", str(frames), "--points", str(clicks)], "00000.png: permission denied", 2


@case("video-unreadable")
def _(inputs, deny):
    video = inputs / "bear.mp4"
    video.write_bytes(BEAR_MP4.read_bytes())
    deny(video)
    return ["run", str(video), "--points", str(write_clicks(inputs, {"objects": [GOOD]}))], "bear.mp4: permission denied", 2


@case("clicks-unreadable")
def _(inputs, deny):
    clicks = deny(write_clicks(inputs, {"objects": [GOOD]}))
    return ["run", str(BEAR_MP4), "--points", str(clicks)], "clicks.json: permission denied", 2


@case("clicks-is-a-folder")
def _(inputs, deny):
    (inputs / "c.json").mkdir()
    return ["run", str(BEAR_MP4), "--points", str(inputs / "c.json")], "c.json: is a folder", 2


@case("clicks-under-a-file")
def _(inputs, deny):
    (inputs / "file").write_text("x")
    return ["run", str(BEAR_MP4), "--points", str(inputs / "file" / "c.json")], "not a folder", 2


@case("mask-unreadable")
def _(inputs, deny):
    mask = deny(grey_mask(inputs))
    return ["run", str(BEAR_MP4), "--mask", str(mask)], "mask.png: permission denied", 2


@case("mask-is-a-folder")
def _(inputs, deny):
    (inputs / "m.png").mkdir()
    return ["run", str(BEAR_MP4), "--mask", str(inputs / "m.png")], "m.png: is a folder", 2


@case("config-unreadable")
def _(inputs, deny):
    config = inputs / "my.yaml"
    config.write_text("decode:\n  refine_iters: 2\n")
    deny(config)
    return ["run", str(BEAR_MP4), "--points", str(write_clicks(inputs, {"objects": [GOOD]})), "--config", str(config)], \
        "my.yaml: permission denied", 2


@case("config-is-a-folder")
def _(inputs, deny):
    (inputs / "cfg.yaml").mkdir()
    return ["run", str(BEAR_MP4), "--points", str(write_clicks(inputs, {"objects": [GOOD]})), "--config",
            str(inputs / "cfg.yaml")], "cfg.yaml: is a folder", 2


@case("checkpoint-folder-unreadable")
def _(inputs, deny):
    weights = inputs / "weights"
    weights.mkdir()
    for name in ("encoder.onnx", "sam.onnx"):
        (weights / name).write_bytes(b"not a model")
    deny(weights)
    return ["run", str(BEAR_MP4), "--points", str(write_clicks(inputs, {"objects": [GOOD]})), "--checkpoint", str(weights),
            "--tracker", "lk"], "permission denied", 3


@case("checkpoint-file-unreadable")
def _(inputs, deny):
    weights = inputs / "weights"
    weights.mkdir()
    for name in ("encoder.onnx", "sam.onnx"):
        (weights / name).write_bytes(b"not a model")
    deny(weights / "encoder.onnx")
    return ["run", str(BEAR_MP4), "--points", str(write_clicks(inputs, {"objects": [GOOD]})), "--checkpoint", str(weights),
            "--tracker", "lk"], "encoder.onnx: permission denied", 3


@case("out-parent-unreadable")
def _(inputs, deny):
    closed = inputs / "closed"
    closed.mkdir()
    deny(closed)
    return ["run", str(BEAR_MP4), "--points", str(write_clicks(inputs, {"objects": [GOOD]})), "--out-override",
            str(closed / "out")], "permission denied", 2


# -- class 2: limits ---------------------------------------------------------------------------
CASES["clicks-too-many-objects"] = run_clicks(
    {"objects": [{"id": i % 254 + 1, "prompts": [{"frame": 0, "positive": [[1, 1]]}]} for i in range(MAX_OBJECTS + 1)]},
    f"at most {MAX_OBJECTS}")
CASES["clicks-too-many-prompts"] = run_clicks(
    {"objects": [{"id": 1, "prompts": [{"frame": f, "positive": [[1, 1]]} for f in range(MAX_PROMPTS_PER_OBJECT + 1)]}]},
    f"at most {MAX_PROMPTS_PER_OBJECT} per object")
CASES["clicks-too-many-points"] = run_clicks(clicks_with(positive=[[1, 1]] * (MAX_POINTS_PER_PROMPT + 1)),
                                            f"at most {MAX_POINTS_PER_PROMPT} per prompt")
CASES["clicks-too-many-points-split"] = run_clicks(
    clicks_with(positive=[[1, 1]] * MAX_POINTS_PER_PROMPT, negative=[[2, 2]]), f"at most {MAX_POINTS_PER_PROMPT} per prompt")


@case("clicks-file-too-large")
def _(inputs, deny):
    path = inputs / "clicks.json"
    with open(path, "w") as f:
        f.write('{"objects": [], "pad": "')
        f.write("x" * (17 * 2**20))
        f.write('"}')
    return ["run", str(BEAR_MP4), "--points", str(path)], "MiB samtrack reads", 2


# -- class 3: one line, escaped, capped ---------------------------------------------------------
CASES["clicks-key-with-newline"] = run_clicks({"objects": [{**GOOD, "co\nlour": 1}]}, r"'co\nlour'")
CASES["clicks-key-forging-a-traceback"] = run_clicks(
    {"objects": [{**GOOD, "x\nTraceback (most recent call last):\n  File": 1}]}, r"\nTraceback")
CASES["clicks-key-with-escape-codes"] = run_clicks({"objects": [{**GOOD, "\x1b[31mred": 1}]}, r"\x1b[31mred")
CASES["clicks-huge-key"] = run_clicks({"objects": [{**GOOD, "k" * 100_000: 1}]}, "unknown key 'kkkk")
CASES["clicks-duplicate-key-with-newline"] = run_clicks('{"objects": [], "a\\nb": 1, "a\\nb": 2}', r"'a\nb' appears twice")


@case("clicks-path-with-newline")
def _(inputs, deny):
    return ["run", str(BEAR_MP4), "--points", str(inputs / "new\nline.json")], r"new\nline.json: no such file", 2


@case("video-name-with-control-characters")
def _(inputs, deny):
    video = inputs / "a\x1b[2Jb.mp4"
    video.write_text("not a video")
    return ["run", str(video), "--points", str(write_clicks(inputs, {"objects": [GOOD]}))], r"a\x1b[2Jb.mp4", 2


CASES["set-key-with-newline"] = run_option(["--set", "decode.x\ny=1"], r"'decode.x\ny'")
CASES["set-huge-value"] = run_option(["--set", "reinit.every=" + "9" * 50_000], "reinit.every")
CASES["set-huge-string-value"] = run_option(["--set", "decode.iou_threshold=" + "x" * 100_000], "decode.iou_threshold")
ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
CASES["config-yaml-alias-bomb"] = run_config(ALIAS_BOMB, "expands to more than")
CASES["config-alias-bomb-as-a-value"] = run_config("x: &x [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
    f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n" for p, c in zip("xyzuv", "yzuvw"))
    + "decode:\n  refine_iters: *w\n", "expands to more than")
CASES["config-key-with-newline"] = run_config('"deco\\nde": {}\n', r"'deco\nde'")

# -- class 4: numbers that would overflow or warn ----------------------------------------------
CASES["clicks-huge-coordinate"] = run_clicks(clicks_with(positive=[[1e300, 10]]), "too large for a pixel coordinate")
CASES["clicks-huge-integer-coordinate"] = run_clicks(clicks_with(positive=[[10**40, 10]]), "too large for a pixel coordinate")
CASES["clicks-overflowing-coordinate"] = run_clicks('{"objects": [{"id": 1, "prompts": [{"frame": 0, "positive": [[1e400, 1]]}]}]}',
                                                   "must be finite")
CASES["clicks-nan-coordinate"] = run_clicks('{"objects": [{"id": 1, "prompts": [{"frame": 0, "positive": [[NaN, 1]]}]}]}',
                                           "must be finite")
CASES["clicks-infinite-box"] = run_clicks('{"objects": [{"id": 1, "prompts": [{"frame": 0, "box": [0, 0, Infinity, 9]}]}]}',
                                         "must be finite")
CASES["clicks-huge-box"] = run_clicks(clicks_with(box=[0, 0, 3e38, 10]), "too large for a pixel coordinate")
CASES["clicks-float-frame"] = run_clicks('{"objects": [{"id": 1, "prompts": [{"frame": 1e400, "positive": [[1, 1]]}]}]}',
                                        "must be an integer")
CASES["clicks-huge-id"] = run_clicks({"objects": [{**GOOD, "id": 10**30}]}, "must be an integer in 1..254")
CASES["clicks-huge-frame"] = run_clicks({"objects": [{"id": 1, "prompts": [{"frame": 10**30, "positive": [[1, 1]]}]}]},
                                       "past the end")

# -- class 5: config values that pass the type but make no sense --------------------------------
CASES["set-nan-threshold"] = run_option(["--set", "decode.iou_threshold=.nan"], "--set 'decode.iou_threshold=.nan': decode.iou_threshold must be a finite number")
CASES["set-inf-alpha"] = run_option(["--set", "output.overlay_alpha=-.inf"], "output.overlay_alpha must be a finite number")
CASES["set-threshold-out-of-range"] = run_option(["--set", "decode.iou_threshold=2"], "decode.iou_threshold must be >= 0 and <= 1")
CASES["set-window-too-small"] = run_option(["--set", "tracker.window=1"], "tracker.window must be >= 2")
CASES["set-negative-seed"] = run_option(["--set", "sampling.seed=-1"], "sampling.seed must be >= 0")
CASES["set-huge-int"] = run_option(["--set", "video.stride=100000000000000000000"], "video.stride must be at most")
CASES["set-growth-between"] = run_option(["--set", "decode.max_growth=0.5"], "decode.max_growth must be 0 (off) or > 1")
CASES["set-lk-window-too-large"] = run_option(["--set", "tracker.lk.win_size=100000"], "tracker.lk.win_size must be >= 3 and <= 255")
CASES["set-no-equals"] = run_option(["--set", "decode.iou_threshold"], "expected key.path=value")
CASES["set-into-a-value"] = run_option(["--set", "decode.iou_threshold.x=1"], "decode.iou_threshold")
CASES["option-stride-zero"] = run_option(["--stride", "0"], "--stride: video.stride must be >= 1")
CASES["option-max-frames-zero"] = run_option(["--max-frames", "0"], "--max-frames: video.max_frames must be >= 1")
CASES["option-longest-side-tiny"] = run_option(["--longest-side", "5"], "--longest-side: video.longest_side must be >= 16")
CASES["option-not-an-int"] = run_option(["--stride", "two"], "invalid int value: 'two'")
CASES["option-unknown-segmenter"] = run_option(["--segmenter", "sam9"], "invalid choice: 'sam9'")
CASES["config-nan-threshold"] = run_config("decode:\n  iou_threshold: .nan\n", "my.yaml: decode.iou_threshold must be a finite number")
CASES["config-range"] = run_config("reinit:\n  every: -3\n", "my.yaml: reinit.every must be >= 0")
CASES["config-huge-float"] = run_config("decode:\n  max_growth: 1.0e+400\n", "my.yaml: decode.max_growth must be a finite number")
CASES["config-not-a-mapping"] = run_config("- decode\n", "top level must be a mapping")
CASES["config-not-utf8"] = run_config(b"decode:\n  x: \xff\xfe\n", "not UTF-8")
CASES["config-too-large"] = run_config("# " + "x" * (2**20 + 10) + "\n", "more than the 1.0 MiB")
CASES["config-nested-deeply"] = run_config("[" * 5000 + "]" * 5000, "my.yaml")


@case("option-with-yaml-looking-path")
def _(inputs, deny):
    # An option's value is a path, not YAML: "a: b" must not become a mapping.
    return ["run", str(BEAR_MP4), "--points", str(write_clicks(inputs, {"objects": [GOOD]})), "--checkpoint",
            str(inputs / "a: b"), "--tracker", "lk"], "a: b: no such file or folder", 3


NEEDS_MODEL_STEP = {"checkpoint-folder-unreadable", "checkpoint-file-unreadable", "option-with-yaml-looking-path"}


def test_enough_cases() -> None:
    assert len(CASES) + len(API_CASES) >= 60


@pytest.mark.parametrize("name", list(CASES))
def test_cli_bad_input_is_one_clean_line(name: str, tmp_path: Path, deny: Denied, private_tmp: Path, monkeypatch, capfd) -> None:
    if name not in NEEDS_MODEL_STEP:
        refuse_model(monkeypatch)
    monkeypatch.setenv("SAMTRACK_HOME", str(tmp_path / "empty-cache"))
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    results = tmp_path / "results"
    argv, detail, code = CASES[name](inputs, deny)
    out = results / "out"
    if "--out-override" in argv:
        i = argv.index("--out-override")
        out = Path(argv.pop(i + 1))
        argv.pop(i)
    before = snapshot(inputs) if not deny.paths and not deny.chmodded else None

    got = main([*argv, "--out", str(out)])

    captured = capfd.readouterr()  # file descriptors: native library noise counts too
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err[:3000]
    line = lines[0]
    assert line.startswith("samtrack"), line
    assert not line.startswith("Traceback")
    assert "Traceback (most recent call last)" not in captured.err or "\\nTraceback" in line
    assert len(line) <= 2100
    assert detail in line, line
    assert got == code, line
    assert captured.out == ""
    assert not results.exists(), "output debris"
    assert temp_debris(private_tmp) == [], "temp debris"
    if before is not None:
        assert snapshot(inputs) == before, "an input was modified"


def test_cli_good_input_reaches_the_model(tmp_path: Path, no_model) -> None:
    # The control for the cases above: the same harness with valid input gets to the loader.
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    with pytest.raises(ModelLoaded):
        main(["run", str(BEAR_MP4), "--points", str(write_clicks(inputs, {"objects": [GOOD]})), "--out", str(tmp_path / "o")])


def test_ten_megabyte_clicks_file_is_answered_quickly(tmp_path: Path) -> None:
    # A million points in one object (about 10 MB): refused by the per-prompt limit without
    # walking the points; the bound is the subprocess timeout, not a timing assertion.
    path = tmp_path / "clicks.json"
    points = ",".join(["[123.5,456.25]"] * 700_000)
    path.write_text('{"objects": [{"id": 1, "prompts": [{"frame": 0, "positive": [' + points + "]}]}]}")
    assert path.stat().st_size > 10 * 10**6
    before = path.read_bytes()
    result = subprocess.run([sys.executable, "-m", "samtrack.cli", "run", str(BEAR_MP4), "--points", str(path),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "SAMTRACK_HOME": str(tmp_path / "empty-cache")})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert f"at most {MAX_POINTS_PER_PROMPT} per prompt" in result.stderr
    assert path.read_bytes() == before
    assert not (tmp_path / "out").exists()


def test_many_points_within_limits_are_checked_linearly(tmp_path: Path) -> None:
    # The most a file may hold in one prompt, times many prompts, with the one bad point at the
    # very end: its error names it by its place in the file.
    from samtrack.prompts import load_clicks

    prompts = [{"frame": f, "positive": [[1, 1]] * (MAX_POINTS_PER_PROMPT - 1)} for f in range(300)]
    prompts[-1]["negative"] = [[-1, 2]]
    path = write_clicks(tmp_path, {"objects": [{"id": 1, "prompts": prompts}]})
    with pytest.raises(InputError, match=r"objects\[0\]\.prompts\[299\]\.negative\[0\]: negative coordinate"):
        load_clicks(path)


# ---------------------------------------------------------------------- API
@pytest.fixture(scope="module")
def predictor_and_frames(tmp_path_factory) -> tuple[VideoPredictor, Path]:
    frames = tmp_path_factory.mktemp("frames")
    for i in range(4):
        image = np.zeros((48, 64, 3), np.uint8)
        image[10:30, 10 + i : 30 + i] = (255, 0, 0)
        Image.fromarray(image).save(frames / f"{i:05d}.png")
    config = load_config("samtrack", ["redetect.enabled=false"])
    return VideoPredictor(config, BlobSegmenter(), ColourTracker()), frames


def _with_prompt(p: VideoPredictor, s) -> None:
    p.add_new_points_or_box(s, 0, 1, points=[[15, 15]], labels=[1])


# name: (call(predictor, state), exception type, text the message must contain)
API_CASES: dict[str, tuple[Callable, type[BaseException], str]] = {
    "init-none": (lambda p, s: p.init_state(None), TypeError, "video"),
    "init-number": (lambda p, s: p.init_state(42), TypeError, "video"),
    "init-missing": (lambda p, s: p.init_state("/nonexistent/clip.mp4"), InputError, "no such file"),
    "points-n-by-3": (lambda p, s: p.add_new_points_or_box(s, 0, 1, points=np.ones((4, 3))), ValueError, "points: expected an [N, 2]"),
    "points-flat": (lambda p, s: p.add_new_points_or_box(s, 0, 1, points=[10, 10]), ValueError, "points: expected an [N, 2]"),
    "points-strings": (lambda p, s: p.add_new_points_or_box(s, 0, 1, points=[["a", "b"]]), TypeError, "points"),
    "points-ragged": (lambda p, s: p.add_new_points_or_box(s, 0, 1, points=[[1, 2], [3]]), ValueError, "points"),
    "points-nan": (lambda p, s: p.add_new_points_or_box(s, 0, 1, points=[[np.nan, 2]]), ValueError, "points: expected finite"),
    "points-outside": (lambda p, s: p.add_new_points_or_box(s, 0, 1, points=[[1, 2], [64, 3]]), ValueError, "points[1]"),
    "points-negative": (lambda p, s: p.add_new_points_or_box(s, 0, 1, points=[[-1, 2]]), ValueError, "points[0]"),
    "labels-strings": (lambda p, s: p.add_new_points_or_box(s, 0, 1, points=[[1, 2]], labels=["1"]), TypeError, "labels"),
    "labels-wrong-count": (lambda p, s: p.add_new_points_or_box(s, 0, 1, points=[[1, 2]], labels=[1, 0]), ValueError, "labels"),
    "labels-not-binary": (lambda p, s: p.add_new_points_or_box(s, 0, 1, points=[[1, 2]], labels=[2]), ValueError, "labels"),
    "labels-only-negative": (lambda p, s: p.add_new_points_or_box(s, 0, 1, points=[[1, 2]], labels=[0]), ValueError, "positive point"),
    "box-three-numbers": (lambda p, s: p.add_new_points_or_box(s, 0, 1, box=[1, 2, 3]), ValueError, "box: expected 4 numbers"),
    "box-inverted": (lambda p, s: p.add_new_points_or_box(s, 0, 1, box=[30, 2, 10, 20]), ValueError, "box: expected x0 < x1"),
    "box-outside": (lambda p, s: p.add_new_points_or_box(s, 0, 1, box=[0, 0, 65, 20]), ValueError, "box"),
    "box-string": (lambda p, s: p.add_new_points_or_box(s, 0, 1, box="0 0 10 10"), TypeError, "box"),
    "mask-strings": (lambda p, s: p.add_new_mask(s, 0, 1, np.full((48, 64), "x")), TypeError, "mask"),
    "mask-float": (lambda p, s: p.add_new_mask(s, 0, 1, np.ones((48, 64), np.float32)), TypeError, "mask"),
    "mask-list": (lambda p, s: p.add_new_mask(s, 0, 1, [[True]]), TypeError, "mask"),
    "mask-wrong-shape": (lambda p, s: p.add_new_mask(s, 0, 1, np.ones((10, 10), bool)), ValueError, "mask: expected shape (48, 64)"),
    "mask-empty": (lambda p, s: p.add_new_mask(s, 0, 1, np.zeros((48, 64), bool)), ValueError, "mask: is empty"),
    "frame-past-end": (lambda p, s: p.add_new_points_or_box(s, 9, 1, points=[[1, 2]]), ValueError, "frame_idx: frame 9 is past the end"),
    "frame-negative": (lambda p, s: p.add_new_points_or_box(s, -1, 1, points=[[1, 2]]), ValueError, "frame_idx"),
    "frame-float": (lambda p, s: p.add_new_points_or_box(s, 1.0, 1, points=[[1, 2]]), TypeError, "frame_idx"),
    "frame-bool": (lambda p, s: p.add_new_points_or_box(s, True, 1, points=[[1, 2]]), TypeError, "frame_idx"),
    "obj-id-zero": (lambda p, s: p.add_new_points_or_box(s, 0, 0, points=[[1, 2]]), ValueError, "obj_id"),
    "obj-id-void": (lambda p, s: p.add_new_mask(s, 0, 255, np.ones((48, 64), bool)), ValueError, "obj_id"),
    "obj-id-string": (lambda p, s: p.add_new_points_or_box(s, 0, "1", points=[[1, 2]]), TypeError, "obj_id"),
    "name-not-a-string": (lambda p, s: p.add_new_points_or_box(s, 0, 1, points=[[1, 2]], name=5), TypeError, "name"),
    "state-none": (lambda p, s: p.add_new_points_or_box(None, 0, 1, points=[[1, 2]]), TypeError, "state"),
    "propagate-without-prompts": (lambda p, s: next(p.propagate_in_video(s)), InputError, "no prompts"),
    "propagate-reverse-string": (lambda p, s: (_with_prompt(p, s), next(p.propagate_in_video(s, reverse="yes"))), TypeError, "reverse"),
    "segment-state-string": (lambda p, s: next(p.segment_video("clip.mp4")), TypeError, "state"),
    "result-unknown-object": (lambda p, s: p.add_new_points_or_box(s, 0, 1, points=[[15, 15]]).mask(7), ValueError, "obj_id: 7"),
    "add-prompts-not-objects": (lambda p, s: p.add_prompts(s, [{"id": 1}], "x.json"), TypeError, "objects"),
}


@pytest.mark.parametrize("name", list(API_CASES))
def test_api_names_the_bad_argument(name: str, predictor_and_frames) -> None:
    predictor, frames = predictor_and_frames
    state = predictor.init_state(frames)
    call, error, text = API_CASES[name]
    with pytest.raises(error) as caught:
        call(predictor, state)
    assert text in str(caught.value)
    assert "\n" not in str(caught.value)


def test_api_good_arguments_work(predictor_and_frames) -> None:
    # The control: the same calls with good arguments succeed, numpy ints and lists alike.
    predictor, frames = predictor_and_frames
    state = predictor.init_state(frames)
    result = predictor.add_new_points_or_box(state, np.int64(0), np.int32(1), points=[[15, 15]], labels=np.array([True]))
    assert result.mask(1).any()
    predictor.add_new_mask(state, 2, 2, np.pad(np.ones((4, 4), np.uint8), ((40, 4), (50, 10))))
    frames_seen = [r.frame_index for r in predictor.segment_video(state)]
    assert frames_seen == [0, 1, 2, 3]


# ---------------------------------------------------------------------- debris after a kill
def _wait_for(condition: Callable[[], bool], process: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the run never got there"
        time.sleep(0.05)


def _hidden_siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_killed_run_leaves_debris_that_the_rerun_reclaims(how: str, tmp_path: Path, mobilesam_checkpoint: Path) -> None:
    # A prompt on a later frame makes a backward pass, whose spill folder lives in the temp dir.
    temp = tmp_path / "tmp"
    temp.mkdir()
    clicks = write_clicks(tmp_path, {"objects": [
        {"id": 1, "prompts": [{"frame": 0, "positive": [[311, 290], [380, 300]]}]},
        {"id": 2, "prompts": [{"frame": 5, "positive": [[600, 200]]}]},
    ]})
    out = tmp_path / "results" / "out"
    argv = [sys.executable, "-m", "samtrack.cli", "run", str(BEAR_MP4), "--points", str(clicks), "--out", str(out),
            "--checkpoint", str(mobilesam_checkpoint), "--tracker", "lk", "--max-frames", "8", "--quiet", "--no-overlay"]
    env = {**os.environ, "TMPDIR": str(temp)}
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: any(temp.glob("samtrack-backward-*/*.pkl")), process, 120)
        process.send_signal(signal.SIGKILL if how == "SIGKILL" else signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    if how == "SIGKILL":
        assert process.returncode == -signal.SIGKILL
        assert _hidden_siblings(out) == [f".out.partial-{process.pid}"]
        assert len(list(temp.glob("samtrack-backward-*"))) == 1
    else:
        # Python controls this exit: it cleans up itself, and says so in one line.
        assert process.returncode == 143, err
        assert err.strip().splitlines()[-1] == "samtrack: terminated"
        assert _hidden_siblings(out) == [] and temp_debris(temp) == []
    assert not out.exists()

    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{i:05d}.png" for i in range(8)]
    assert not (out / OWNER_FILE).exists()
    assert _hidden_siblings(out) == []
    assert temp_debris(temp) == []


def test_a_live_runs_staging_folder_is_not_reclaimed(tmp_path: Path) -> None:
    target = tmp_path / "out"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".out.partial-{sleeper.pid}"
        live.mkdir()
        (live / OWNER_FILE).write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename}))
        dead = tmp_path / ".out.partial-1"
        left_by_killed_run(dead)
        unmarked = tmp_path / ".out.partial-2"  # same pattern, not marked: the user's
        unmarked.mkdir()
        with StagedOutputDir(target) as staging:
            (staging / "x").write_text("1")
        assert (target / "x").read_text() == "1" and not (target / OWNER_FILE).exists()
        assert live.exists() and unmarked.exists() and not dead.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_result_moved_aside_by_a_killed_run_is_put_back(tmp_path: Path) -> None:
    # Killed between moving the old result aside and renaming the new one into place.
    target = tmp_path / "out"
    old = tmp_path / ".out.old-1"
    old.mkdir()
    (old / "tracks.json").write_text("earlier")
    left_by_killed_run(old)
    with pytest.raises(RuntimeError):
        with StagedOutputDir(target):
            raise RuntimeError  # this run fails too: the earlier result must still be there
    assert (target / "tracks.json").read_text() == "earlier"
    assert not (target / OWNER_FILE).exists() and not old.exists()


def test_fixed_staging_name_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / ".seq.partial").mkdir()
    with pytest.raises(InputError, match="not a dead samtrack run's"):
        with StagedOutputDir(tmp_path / "seq", staging_name=".seq.partial"):
            pass
    assert (tmp_path / ".seq.partial").exists() and not (tmp_path / "seq").exists()


def test_owned_temp_dir_is_removed_on_error(private_tmp: Path) -> None:
    from samtrack.outputs import owned_temp_dir

    with pytest.raises(KeyError):
        with owned_temp_dir("samtrack-test-") as folder:
            assert (folder / OWNER_FILE).exists()
            raise KeyError
    assert temp_debris(private_tmp) == []
