"""Exports read back with PyAV, Pillow and pycocotools: size, frame count, frame rate, alpha, and
the matte equal to the label map."""
from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from samtrack.errors import InputError
from samtrack.export import EXPORT_FORMATS, Exporter, export_results, matte, parse_formats
from samtrack.outputs import read_label_png
from samtrack.pipeline import FrameResult
from samtrack.video import VideoInfo

from .fakes import colour_clip

H, W, N, FPS = 48, 66, 6, 12.5  # even sides, a non-integer frame rate


def _clip(n: int = N) -> tuple[list[np.ndarray], list[np.ndarray]]:
    frames, labels = [], []
    yy, xx = np.mgrid[0:H, 0:W]
    for t in range(n):
        # Smooth colours: 4:2:0 codecs halve the chroma resolution, which noise would not survive.
        frame = np.dstack([xx * 3 + t, yy * 4, np.full((H, W), 120 + 10 * t)]).astype(np.uint8)
        label = np.zeros((H, W), np.uint8)
        label[8:30, 5 + 2 * t : 25 + 2 * t] = 1
        label[32:44, 40:60 - t] = 2
        frames.append(frame)
        labels.append(label)
    return frames, labels


def _info(n: int = N) -> VideoInfo:
    return VideoInfo(path=Path("clip.mp4"), n_frames=n, fps=FPS, height=H, width=W)


def _export(tmp_path: Path, formats, feather: float = 0.0, indices=None) -> tuple[Path, list, list]:
    frames, labels = _clip()
    indices = list(range(N)) if indices is None else indices
    results = [FrameResult(frame_index=i, label_map=labels[i]) for i in indices]
    out = tmp_path / "export"
    n = export_results(out, formats, _info(), {1: "bear", 2: None}, FPS, results, lambda i: frames[i], feather=feather)
    assert n == len(indices)
    return out, [frames[i] for i in indices], [labels[i] for i in indices]


@dataclass(frozen=True)
class _Stream:
    """What the tests check of a video stream, read while its file is open (PyAV >= 18.1.1 refuses
    a closed container's stream properties)."""

    codec: str
    pix_fmt: str | None
    width: int
    height: int
    average_rate: Fraction | None


def _decode(path: Path, fmt: str, codec: str | None = None) -> tuple[list[np.ndarray], _Stream]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = _Stream(stream.codec_context.name, stream.codec_context.pix_fmt, stream.width, stream.height,
                       stream.average_rate)
        if codec is None:
            frames = [f.to_ndarray(format=fmt) for f in container.decode(stream)]
        else:
            # FFmpeg's native VP9 decoder drops the alpha plane WebM stores beside the video;
            # libvpx's decoder reads it.
            ctx = av.codec.CodecContext.create(codec, "r")
            decoded = []
            for packet in container.demux(stream):
                if packet.size:
                    decoded += ctx.decode(packet)
            decoded += ctx.decode(None)
            frames = [_rgba(f) if fmt == "rgba" else f.to_ndarray(format=fmt) for f in decoded]
        return frames, info


def _rgba(frame: av.VideoFrame) -> np.ndarray:
    """The frame as RGBA, its alpha plane read as stored.

    swscale's yuva420p -> rgba conversion reads past the plane ends on odd chroma widths (here 33)
    and the right-edge alpha then varies from call to call: that flaked this test, while the
    stored alpha plane was the same on every run.
    """
    if frame.format.name != "yuva420p":
        return frame.to_ndarray(format="rgba")
    plane = frame.planes[3]
    alpha = np.frombuffer(bytes(plane), np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
    return np.dstack([frame.to_ndarray(format="rgb24"), alpha])


def test_matte_equals_label_map_and_feather_softens_edge() -> None:
    _, labels = _clip()
    hard = matte(labels[0], 1)
    assert hard.dtype == np.uint8 and set(np.unique(hard)) == {0, 255}
    assert np.array_equal(hard == 255, labels[0] == 1)
    soft = matte(labels[0], 1, feather=3)
    assert ((soft > 0) & (soft < 255)).sum() > 0  # a ramp exists
    # Deep inside and far outside stay as they were; the ramp sits on the edge.
    assert soft[19, 15] == 255 and soft[2, 60] == 0
    assert 60 < soft[19, 5] < 200


def test_png_mattes_and_cutouts(tmp_path: Path) -> None:
    out, frames, labels = _export(tmp_path, ["matte-png", "cutout-png", "labels"])
    for obj_id in (1, 2):
        mattes = sorted((out / "matte" / f"object_{obj_id}").iterdir())
        cutouts = sorted((out / "cutout" / f"object_{obj_id}").iterdir())
        assert [p.name for p in mattes] == [f"{i:05d}.png" for i in range(N)] == [p.name for p in cutouts]
        for k, (m, c) in enumerate(zip(mattes, cutouts)):
            with Image.open(m) as image:
                assert image.mode == "L" and image.size == (W, H)
                assert np.array_equal(np.asarray(image) == 255, labels[k] == obj_id)
            with Image.open(c) as image:
                assert image.mode == "RGBA" and image.size == (W, H)
                rgba = np.asarray(image)
            assert np.array_equal(rgba[..., :3], frames[k])
            assert np.array_equal(rgba[..., 3] == 255, labels[k] == obj_id)
    for k in range(N):
        assert np.array_equal(read_label_png(out / "masks" / f"{k:05d}.png"), labels[k])


def test_ffv1_matte_is_lossless(tmp_path: Path) -> None:
    out, _, labels = _export(tmp_path, ["matte-ffv1"])
    for obj_id in (1, 2):
        frames, stream = _decode(out / "matte" / f"object_{obj_id}.mkv", "gray")
        assert stream.codec == "ffv1"
        assert (stream.width, stream.height) == (W, H)
        assert stream.average_rate == Fraction(FPS)
        assert len(frames) == N
        for k, frame in enumerate(frames):
            assert np.array_equal(frame, matte(labels[k], obj_id))


def test_luma_matte_h264(tmp_path: Path) -> None:
    out, _, labels = _export(tmp_path, ["matte-luma"])
    frames, stream = _decode(out / "matte" / "object_1_luma.mp4", "gray")
    assert stream.codec == "h264" and stream.pix_fmt == "yuv420p"
    assert (stream.width, stream.height) == (W, H) and stream.average_rate == Fraction(FPS) and len(frames) == N
    for k, frame in enumerate(frames):
        # Lossy: white on the object, black off it, away from the edge.
        assert frame[labels[k] == 1].mean() > 235 and frame[labels[k] == 0].mean() < 25
        assert ((frame > 127) == (labels[k] == 1)).mean() > 0.98


@pytest.mark.parametrize("fmt, suffix, codec, decoder", [
    ("cutout-webm", ".webm", "vp9", "libvpx-vp9"),
    ("cutout-mov", ".mov", "prores", None),
])
def test_cutout_videos_carry_alpha(tmp_path: Path, fmt: str, suffix: str, codec: str, decoder: str | None) -> None:
    out, frames, labels = _export(tmp_path, [fmt])
    decoded, stream = _decode(out / "cutout" / f"object_1{suffix}", "rgba", decoder)
    assert stream.codec == codec
    assert (stream.width, stream.height) == (W, H)
    assert stream.average_rate == Fraction(FPS)
    assert len(decoded) == N
    for k, rgba in enumerate(decoded):
        alpha = rgba[..., 3]
        assert ((alpha > 127) == (labels[k] == 1)).mean() > 0.99
        inside = labels[k] == 1
        # Colours survive where the object is (lossy codecs: on average).
        assert np.abs(rgba[..., :3][inside].astype(int) - frames[k][inside]).mean() < 8


def test_coco_rle(tmp_path: Path) -> None:
    from pycocotools import mask as mask_utils
    out, _, labels = _export(tmp_path, ["coco"], indices=[0, 2, 4])
    data = json.loads((out / "coco_rle.json").read_text())
    assert data["version"] == 1 and data["frames"] == [0, 2, 4]
    assert data["video"]["width"] == W and data["video"]["height"] == H and data["video"]["fps"] == FPS
    assert [o["id"] for o in data["objects"]] == [1, 2] and data["objects"][0]["name"] == "bear"
    for obj in data["objects"]:
        for k, rle in enumerate(obj["segmentations"]):
            mask = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
            assert np.array_equal(mask.astype(bool), labels[k] == obj["id"])
            assert obj["areas"][k] == int((labels[k] == obj["id"]).sum())


def test_odd_size_videos_padded(tmp_path: Path) -> None:
    frame = np.full((33, 47, 3), 100, np.uint8)
    label = np.zeros((33, 47), np.uint8)
    label[5:20, 5:20] = 1
    info = VideoInfo(path=Path("odd.mp4"), n_frames=2, fps=24.0, height=33, width=47)
    results = [FrameResult(frame_index=i, label_map=label) for i in range(2)]
    out = tmp_path / "odd"
    export_results(out, ["matte-luma", "cutout-webm", "matte-ffv1"], info, {1: None}, 24.0, results, lambda i: frame)
    _, stream = _decode(out / "matte" / "object_1_luma.mp4", "gray")
    assert (stream.width, stream.height) == (48, 34)
    frames, stream = _decode(out / "matte" / "object_1.mkv", "gray")
    assert (stream.width, stream.height) == (47, 33) and np.array_equal(frames[0] == 255, label == 1)


def test_feather_in_every_matte(tmp_path: Path) -> None:
    out, _, labels = _export(tmp_path, ["matte-png", "matte-ffv1"], feather=2)
    with Image.open(out / "matte" / "object_1" / "00000.png") as image:
        png = np.asarray(image)
    assert np.array_equal(png, matte(labels[0], 1, 2)) and ((png > 0) & (png < 255)).any()
    frames, _ = _decode(out / "matte" / "object_1.mkv", "gray")
    assert np.array_equal(frames[0], png)


def test_bad_formats_and_failures_leave_nothing(tmp_path: Path) -> None:
    assert parse_formats(["matte-png,coco", "coco"]) == ["matte-png", "coco"]
    assert parse_formats(["all"]) == list(EXPORT_FORMATS)
    with pytest.raises(InputError, match="unknown export format 'gif'"):
        parse_formats(["matte-png,gif"])
    with pytest.raises(InputError, match="feather"):
        Exporter(tmp_path, ["matte-png"], _info(), {1: None}, FPS, feather=-1)
    with pytest.raises(InputError, match="nothing to export"):
        export_results(tmp_path / "empty", ["matte-ffv1"], _info(), {1: None}, FPS, [], lambda i: None)
    assert not (tmp_path / "empty").exists()

    def failing():
        _, labels = _clip()
        yield FrameResult(frame_index=0, label_map=labels[0])
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        export_results(tmp_path / "failed", ["matte-ffv1", "matte-png"], _info(), {1: None}, FPS, failing(), lambda i: None)
    assert not (tmp_path / "failed").exists() and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- samtrack run / the API


@pytest.fixture
def fake_models(monkeypatch):
    from samtrack.api import VideoPredictor

    from .fakes import BlobSegmenter, ColourTracker

    monkeypatch.setattr(VideoPredictor, "from_config",
                        classmethod(lambda cls, config=None, overrides=(), log=print: cls(config, BlobSegmenter(), ColourTracker())))


def test_run_export_writes_mattes_equal_to_masks(tmp_path: Path, fake_models) -> None:
    from samtrack.cli import main

    frames, mask = colour_clip(tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(frames), "--mask", str(mask), "--out", str(out), "--config", "fast", "--quiet",
                 "--export", "matte-ffv1,matte-png", "--export", "cutout-webm", "--no-overlay"]) == 0
    decoded, stream = _decode(out / "matte" / "object_1.mkv", "gray")
    assert len(decoded) == 6 and (stream.width, stream.height) == (60, 40) and stream.average_rate == 24
    for k, frame in enumerate(decoded):
        labels = read_label_png(out / "masks" / f"{k:05d}.png")
        assert labels.any() and np.array_equal(frame == 255, labels == 1)
        with Image.open(out / "matte" / "object_1" / f"{k:05d}.png") as image:
            assert np.array_equal(np.asarray(image), frame)
    assert len(_decode(out / "cutout" / "object_1.webm", "rgba", "libvpx-vp9")[0]) == 6
    # An earlier result holding exports is replaceable by a new run.
    assert main(["run", str(frames), "--mask", str(mask), "--out", str(out), "--config", "fast", "--quiet"]) == 0
    assert not (out / "matte").exists()


def test_run_export_bad_format_is_one_line_before_the_model(tmp_path: Path, capsys) -> None:
    from samtrack.cli import main

    frames, mask = colour_clip(tmp_path)
    code = main(["run", str(frames), "--mask", str(mask), "--out", str(tmp_path / "out"), "--export", "matte-gif"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "unknown export format 'matte-gif'" in err
    assert not (tmp_path / "out").exists()


def test_api_export(tmp_path: Path, fake_models) -> None:
    from samtrack.api import VideoPredictor
    from samtrack.config import load_config

    frames, _ = colour_clip(tmp_path)
    predictor = VideoPredictor.from_config(load_config("fast"))
    state = predictor.init_state(frames)
    with pytest.raises(InputError, match="no objects"):
        predictor.export(state, tmp_path / "none", ["matte-png"])
    predictor.add_new_points_or_box(state, frame_idx=0, obj_id=3, points=[[10, 15]], labels=[1], name="square")
    seen = []
    n = predictor.export(state, tmp_path / "api", ["matte-png", "coco"], feather=1.5, progress=seen.append)
    assert n == 6 and seen == [1, 2, 3, 4, 5, 6]
    with Image.open(tmp_path / "api" / "matte" / "object_3" / "00005.png") as image:
        alpha = np.asarray(image)
    assert alpha.shape == (40, 60) and alpha[16, 28] == 255 and alpha[5, 50] == 0
    data = json.loads((tmp_path / "api" / "coco_rle.json").read_text())
    assert data["objects"][0]["name"] == "square" and len(data["objects"][0]["segmentations"]) == 6


def test_vp9_export_works_with_decord_loaded_first(tmp_path: Path) -> None:
    """decord's bundled libvpx, loaded globally, must not capture PyAV's VP9 encoder (import
    order, see samtrack/video.py); a fresh process, since this process has both loaded already."""
    import subprocess
    import sys

    code = f"""
import samtrack.api  # the pipeline and its video readers (decord) first, as samtrack run does
import numpy as np
from pathlib import Path
from samtrack.export import export_results
from samtrack.pipeline import FrameResult
from samtrack.video import VideoInfo
label = np.zeros((48, 64), np.uint8); label[5:20, 5:30] = 1
frame = np.full((48, 64, 3), 90, np.uint8)
info = VideoInfo(path=Path("x.mp4"), n_frames=2, fps=24.0, height=48, width=64)
export_results(Path({str(tmp_path / 'out')!r}), ["cutout-webm"], info, {{1: None}}, 24.0,
               [FrameResult(0, label), FrameResult(1, label)], lambda i: frame)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(_decode(tmp_path / "out" / "cutout" / "object_1.webm", "rgba", "libvpx-vp9")[0]) == 2
