"""YouTube-VOS / MOSE runs and submissions on a tiny synthetic split, with exact fake models.

The split mimics YouTube-VOS valid: sparse frame names (00000, 00005, ...), non-contiguous
object ids, an object that first appears on a later frame with its own annotation PNG holding
only that object, and a meta.json. The fakes (tests/fakes.py) segment and track flat coloured
squares exactly, so what is checked is the benchmark plumbing: prompts, names, ids, archives.
"""
from __future__ import annotations

import csv
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samtrack.api import VideoPredictor
from samtrack.cli import main
from samtrack.config import load_config
from samtrack.errors import InputError
from samtrack.eval import runner, youtubevos
from samtrack.eval.youtubevos import MOSE, YOUTUBEVOS_2019, run_youtubevos, write_submission
from samtrack.outputs import write_label_png

from .fakes import COLOURS, BlobSegmenter, ColourTracker

H, W = 48, 64
SIDE = 12
# The fakes carry no encoder feature grid, so re-detection (on in the default preset) is off.
FAKE_OVERRIDES = ["sampling.n_positive=4", "sampling.n_negative=1", "decode.refine_iters=1", "redetect.enabled=false"]


@dataclass
class Square:
    """An object: a flat square of a colour the fakes know, annotated from dense frame ``first``.

    It is drawn on every frame, so a run that tracked it backward from its annotation would
    find it before ``first``, where the protocol says it is not in the video yet.
    """

    obj_id: int
    colour: tuple[int, int, int]
    x0: int
    y0: int
    dx_per_5: int  # pixels moved every 5 dense frames (one sparse step)
    first: int = 0

    def box(self, t: int) -> tuple[int, int]:
        return self.x0 + (self.dx_per_5 * t) // 5, self.y0


@dataclass
class SynthVideo:
    n_dense: int  # frames 0 .. n_dense-1 exist densely; the split keeps every 5th
    squares: list[Square] = field(default_factory=list)

    @property
    def sparse(self) -> list[int]:
        return list(range(0, self.n_dense, 5))

    def frame(self, t: int) -> np.ndarray:
        image = np.full((H, W, 3), 30, np.uint8)
        for s in self.squares:
            x, y = s.box(t)
            image[y : y + SIDE, x : x + SIDE] = s.colour
        return image

    def truth(self, t: int) -> np.ndarray:
        labels = np.zeros((H, W), np.uint8)
        for s in self.squares:
            if t >= s.first:
                x, y = s.box(t)
                labels[y : y + SIDE, x : x + SIDE] = s.obj_id
        return labels


RED, BLUE = COLOURS[1], COLOURS[2]
VIDEOS = {
    # Object 3 from the start; object 7 appears on 00020, annotated only there and only itself.
    "alpha": SynthVideo(50, [Square(3, RED, 4, 6, 2), Square(7, BLUE, 44, 30, -2, first=20)]),
    # Two objects on the first frame, ids 1 and 5.
    "beta": SynthVideo(30, [Square(1, RED, 6, 20, 3), Square(5, BLUE, 46, 4, -3)]),
}


def _save_frame(path: Path, image: np.ndarray) -> None:
    # Named .jpg as in the dataset, but stored losslessly: the fakes key on exact colours, which
    # JPEG would blur (the frame reader goes by content, not by name).
    Image.fromarray(image).save(path, format="PNG")


def make_split(root: Path, videos: dict[str, SynthVideo] = VIDEOS, meta: bool = True, dense: bool = False) -> Path:
    """Write ``<root>/valid/{JPEGImages,Annotations,meta.json}`` (and ``all_frames/<video>``)."""
    split = root / "valid"
    meta_videos = {}
    for name, video in videos.items():
        images, annotations = split / "JPEGImages" / name, split / "Annotations" / name
        images.mkdir(parents=True)
        annotations.mkdir(parents=True)
        for t in video.sparse:
            _save_frame(images / f"{t:05d}.jpg", video.frame(t))
        if dense:
            (root / "all_frames" / name).mkdir(parents=True)
            for t in range(video.n_dense):
                _save_frame(root / "all_frames" / name / f"{t:05d}.jpg", video.frame(t))
        for first in sorted({s.first for s in video.squares}):
            truth = video.truth(first)
            new = [s.obj_id for s in video.squares if s.first == first]
            write_label_png(annotations / f"{first:05d}.png", np.where(np.isin(truth, new), truth, 0).astype(np.uint8))
        meta_videos[name] = {"objects": {
            str(s.obj_id): {"category": "square", "frames": [f"{t:05d}" for t in video.sparse if t >= s.first]}
            for s in video.squares
        }}
    if meta:
        (split / "meta.json").write_text(json.dumps({"videos": meta_videos}))
    return root


def fake_predictor(*overrides: str) -> VideoPredictor:
    return VideoPredictor(load_config(None, [*FAKE_OVERRIDES, *overrides]), BlobSegmenter(), ColourTracker())


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def read_png(path: Path) -> tuple[np.ndarray, str]:
    with Image.open(path) as image:
        return np.asarray(image), image.mode


def check_video(folder: Path, video: SynthVideo) -> None:
    """One palette PNG per sparse frame, frame-sized, dataset ids, each object only once present."""
    assert sorted(p.name for p in folder.glob("*.png")) == [f"{t:05d}.png" for t in video.sparse]
    for t in video.sparse:
        labels, mode = read_png(folder / f"{t:05d}.png")
        assert mode == "P" and labels.shape == (H, W)
        truth = video.truth(t)
        assert set(np.unique(labels)) <= {0} | {s.obj_id for s in video.squares}, t
        for s in video.squares:
            if t < s.first:
                assert not (labels == s.obj_id).any(), f"object {s.obj_id} on frame {t}, before it appears"
            else:
                assert iou(labels == s.obj_id, truth == s.obj_id) > 0.9, (s.obj_id, t)


# ---------------------------------------------------------------------- runs
def test_run_writes_every_split_frame_with_dataset_ids_and_late_objects(tmp_path):
    root = make_split(tmp_path / "ytvos")
    logs = []
    runs = run_youtubevos(fake_predictor(), root, "valid", tmp_path / "out", log=logs.append)
    assert [r.sequence for r in runs] == ["alpha", "beta"]
    assert [r.frames for r in runs] == [10, 6]
    for name, video in VIDEOS.items():
        check_video(tmp_path / "out" / "Annotations" / name, video)
        assert (tmp_path / "out" / "Annotations" / name / "run.json").is_file()
    assert len(logs) == 2 and "fps" in logs[0]


def test_frames_before_the_first_annotation_are_written_empty(tmp_path):
    late = {"gamma": SynthVideo(25, [Square(2, RED, 10, 10, 2, first=10)])}
    root = make_split(tmp_path / "mose", late, meta=False)
    (run,) = run_youtubevos(fake_predictor(), root, "valid", tmp_path / "out", benchmark=MOSE)
    assert run.frames == 3  # 00010, 00015, 00020: nothing is processed before the object appears
    check_video(tmp_path / "out" / "Annotations" / "gamma", late["gamma"])
    for t in (0, 5):
        labels, _ = read_png(tmp_path / "out" / "Annotations" / "gamma" / f"{t:05d}.png")
        assert labels.shape == (H, W) and not labels.any()


def test_all_frames_are_tracked_on_but_only_split_frames_written(tmp_path):
    root = make_split(tmp_path / "ytvos", dense=True)
    runs = run_youtubevos(fake_predictor(), root, "valid", tmp_path / "out", all_frames=root / "all_frames")
    # alpha: 50 dense frames from 00000; beta: 30.
    assert [r.frames for r in runs] == [50, 30]
    for name, video in VIDEOS.items():
        check_video(tmp_path / "out" / "Annotations" / name, video)
    with pytest.raises(InputError, match="another config"):  # sparse results must not mix in
        run_youtubevos(fake_predictor(), root, "valid", tmp_path / "out", resume=True)


def test_resume_skips_finished_videos_and_reruns_interrupted_ones(tmp_path):
    root = make_split(tmp_path / "ytvos")
    out = tmp_path / "out"
    run_youtubevos(fake_predictor(), root, "valid", out)
    beta_png = out / "Annotations" / "beta" / "00000.png"
    before = beta_png.stat().st_mtime_ns

    class Exploding(BlobSegmenter):
        def encode(self, image):
            raise RuntimeError("boom")

    exploding = VideoPredictor(fake_predictor().config, Exploding(), ColourTracker())
    logs = []
    runs = run_youtubevos(exploding, root, "valid", out, resume=True, log=logs.append)
    assert [r.sequence for r in runs] == ["alpha", "beta"]
    assert all("skipped" in line for line in logs) and len(logs) == 2

    # A video without its record counts as unfinished and is run again; a failure leaves the
    # folder as it was (still unfinished) and no staging folder behind.
    (out / "Annotations" / "alpha" / "run.json").unlink()
    with pytest.raises(RuntimeError, match="boom"):
        run_youtubevos(exploding, root, "valid", out, resume=True)
    assert not (out / "Annotations" / "alpha" / "run.json").exists()
    assert sorted(p.name for p in (out / "Annotations").iterdir()) == ["alpha", "beta"]
    runs = run_youtubevos(fake_predictor(), root, "valid", out, resume=True)
    check_video(out / "Annotations" / "alpha", VIDEOS["alpha"])
    assert beta_png.stat().st_mtime_ns == before

    with pytest.raises(InputError, match="another config"):
        run_youtubevos(fake_predictor("reinit.every=3"), root, "valid", out, resume=True)


# ---------------------------------------------------------------------- archives
@pytest.mark.parametrize("benchmark, prefix", [(YOUTUBEVOS_2019, "Annotations/"), (MOSE, "")])
def test_submission_zip_layout(tmp_path, benchmark, prefix):
    root = make_split(tmp_path / "data")
    out = tmp_path / "out"
    run_youtubevos(fake_predictor(), root, "valid", out, benchmark=benchmark)
    path = write_submission(out, out / "sub.zip", ["alpha", "beta"], benchmark)
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        files = {n for n in names if not n.endswith("/")}
        expected = {f"{prefix}{name}/{t:05d}.png" for name, v in VIDEOS.items() for t in v.sparse}
        assert files == expected
        assert {n for n in names if n.endswith("/")} == {p for p in [prefix] if p} | {f"{prefix}{v}/" for v in VIDEOS}
        member = f"{prefix}alpha/00020.png"
        assert archive.read(member) == (out / "Annotations" / "alpha" / "00020.png").read_bytes()
        extracted = tmp_path / "extracted"
        archive.extractall(extracted)
    top = sorted(p.name for p in extracted.iterdir())
    assert top == (["Annotations"] if prefix else ["alpha", "beta"])
    # Only the archive is left: no temporary file beside it.
    assert sorted(p.name for p in out.iterdir()) == ["Annotations", "sub.zip"]


def test_submission_refuses_a_video_without_finished_results(tmp_path):
    (tmp_path / "out" / "Annotations" / "beta").mkdir(parents=True)  # no run.json: unfinished
    for video in ("alpha", "beta"):
        with pytest.raises(InputError, match=f"'{video}' has no finished results"):
            write_submission(tmp_path / "out", tmp_path / "out" / "sub.zip", [video], YOUTUBEVOS_2019)
    assert not (tmp_path / "out" / "sub.zip").exists()


# ---------------------------------------------------------------------- input errors
def test_missing_or_invalid_meta_is_a_clear_error(tmp_path):
    root = make_split(tmp_path / "ytvos", meta=False)
    meta = root / "valid" / "meta.json"
    with pytest.raises(InputError, match="no such file") as err:
        youtubevos.list_videos(root, "valid", YOUTUBEVOS_2019)
    assert err.value.path == meta
    assert [v.name for v in youtubevos.list_videos(root, "valid", MOSE)] == ["alpha", "beta"]  # MOSE has none
    meta.write_text("{not json")
    with pytest.raises(InputError, match="not a readable JSON"):
        youtubevos.list_videos(root, "valid", YOUTUBEVOS_2019)
    meta.write_text(json.dumps({"videos": {"alpha": {"objects": {"x": {}}}}}))
    with pytest.raises(InputError, match='id "x" is not an integer'):
        youtubevos.list_videos(root, "valid", YOUTUBEVOS_2019)
    meta.write_text(json.dumps({"videos": ["alpha"]}))
    with pytest.raises(InputError, match="expected"):
        youtubevos.list_videos(root, "valid", YOUTUBEVOS_2019)


def test_layout_errors_name_the_missing_piece(tmp_path):
    root = make_split(tmp_path / "ytvos")
    with pytest.raises(InputError, match="folder not found"):
        youtubevos.list_videos(root, "test", YOUTUBEVOS_2019)
    with pytest.raises(InputError, match="'zeta' is not in the valid split"):
        youtubevos.list_videos(root, "valid", YOUTUBEVOS_2019, only=["zeta"])
    with pytest.raises(InputError, match="all-frames folder not found"):
        youtubevos.list_videos(root, "valid", YOUTUBEVOS_2019, all_frames=tmp_path / "nope")


def test_an_object_of_meta_json_without_annotation_is_an_error(tmp_path):
    root = make_split(tmp_path / "ytvos")
    meta_path = root / "valid" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["videos"]["beta"]["objects"]["9"] = {"category": "ghost", "frames": ["00000"]}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="object 9 of meta.json is in none") as err:
        run_youtubevos(fake_predictor(), root, "valid", tmp_path / "out")
    assert err.value.path == root / "valid" / "Annotations" / "beta"
    assert not (tmp_path / "out" / "Annotations" / "beta").exists()


def test_an_annotation_of_a_frame_not_in_the_video_is_an_error(tmp_path):
    root = make_split(tmp_path / "ytvos")
    stray = root / "valid" / "Annotations" / "beta" / "00003.png"
    write_label_png(stray, np.zeros((H, W), np.uint8))
    with pytest.raises(InputError, match="annotation of a frame the video does not have") as err:
        run_youtubevos(fake_predictor(), root, "valid", tmp_path / "out", videos=["beta"])
    assert err.value.path == stray


def test_frames_the_config_skips_are_refused(tmp_path):
    root = make_split(tmp_path / "ytvos")
    with pytest.raises(InputError, match="a submission needs every frame"):
        run_youtubevos(fake_predictor("video.stride=2"), root, "valid", tmp_path / "out", videos=["beta"])


# ---------------------------------------------------------------------- command line
@pytest.fixture
def fake_models(monkeypatch):
    monkeypatch.setattr(
        VideoPredictor, "from_config", classmethod(lambda cls, config, overrides=(), log=print: cls(config, BlobSegmenter(), ColourTracker()))
    )


def test_cli_youtubevos_and_mose(tmp_path, fake_models, capsys):
    root = make_split(tmp_path / "data")
    sets = [arg for o in FAKE_OVERRIDES for arg in ("--set", o)]
    out = tmp_path / "out"
    assert main(["eval", "youtubevos", "--root", str(root), "--year", "2018", "--out", str(out), "--quiet", *sets]) == 0
    printed = capsys.readouterr().out
    zip_path = out / "youtubevos2018-valid.zip"
    assert f"-> {zip_path}" in printed and "competitions/7685" in printed
    assert "alpha" in printed and "beta" in printed  # per-video fps and memory
    with zipfile.ZipFile(zip_path) as archive:
        assert {n.split("/")[0] for n in archive.namelist()} == {"Annotations"}
    with open(out / "runs-valid.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["Sequence"] for r in rows] == ["alpha", "beta"] and float(rows[0]["PeakRSS-MB"]) > 0

    assert main(["eval", "youtubevos", "--root", str(root), "--year", "2018", "--out", str(out), "--quiet", "--resume",
                 "--videos", "beta", *sets]) == 0
    with zipfile.ZipFile(zip_path) as archive:
        assert {n.split("/")[1] for n in archive.namelist() if n.count("/") > 1} == {"beta"}

    # Results of one benchmark are never resumed as another's.
    assert main(["eval", "youtubevos", "--root", str(root), "--year", "2019", "--out", str(out), "--quiet", "--resume",
                 *sets]) == 2
    assert "another config" in capsys.readouterr().err

    mose_out = tmp_path / "mose-out"
    assert main(["eval", "mose", "--root", str(root), "--out", str(mose_out), "--quiet", *sets]) == 0
    with zipfile.ZipFile(mose_out / "mose-valid.zip") as archive:
        assert {n.split("/")[0] for n in archive.namelist()} == {"alpha", "beta"}


def test_cli_a_failed_video_is_reported_and_no_zip_is_written(tmp_path, fake_models, capsys):
    root = make_split(tmp_path / "data")
    broken = sorted((root / "valid" / "Annotations" / "alpha").glob("*.png"))[0]
    broken.write_bytes(b"not a png")
    sets = [arg for o in FAKE_OVERRIDES for arg in ("--set", o)]
    out = tmp_path / "out"
    assert main(["eval", "youtubevos", "--root", str(root), "--out", str(out), "--quiet", *sets]) == 1
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("samtrack: 1 finished, 1 failed in ") and f"alpha ({broken}: " in last, last
    assert "no zip was written" in last
    assert not (out / "youtubevos2019-valid.zip").exists()
    with open(out / "runs-valid.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["Sequence"], r["Status"]) for r in rows] == [("beta", "done"), ("alpha", "failed")]
    assert runner.read_run(out / "Annotations" / "beta") is not None
    assert sorted(p.name for p in (out / "Annotations").iterdir()) == ["beta"]  # nothing half-written
    # Fixed, --resume redoes only alpha and writes the zip.
    make_split(tmp_path / "fixed")
    broken.write_bytes(sorted((tmp_path / "fixed" / "valid" / "Annotations" / "alpha").glob("*.png"))[0].read_bytes())
    stamp = (out / "Annotations" / "beta" / "run.json").stat().st_mtime_ns
    assert main(["eval", "youtubevos", "--root", str(root), "--out", str(out), "--quiet", "--resume", *sets]) == 0
    assert (out / "Annotations" / "beta" / "run.json").stat().st_mtime_ns == stamp
    assert (out / "youtubevos2019-valid.zip").is_file()


def test_cli_errors_exit_2_with_one_line(tmp_path, fake_models, capsys):
    root = make_split(tmp_path / "data", meta=False)
    assert main(["eval", "youtubevos", "--root", str(root), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("samtrack: error: ") and "meta.json" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # checked before anything is written
    assert main(["eval", "mose", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert "dataset folder not found" in capsys.readouterr().err


# ---------------------------------------------------------------------- real model
@pytest.mark.slow
def test_real_model_on_a_davis_clip_in_youtubevos_layout(tmp_path, davis16, segmenter):
    """MobileSAM + LK on bear's every 5th frame, object id 4: the masks follow the bear."""
    from samtrack.trackers import build_tracker

    split = tmp_path / "valid"
    frames = [f"{t:05d}" for t in range(0, 30, 5)]
    (split / "JPEGImages" / "bear").mkdir(parents=True)
    (split / "Annotations" / "bear").mkdir(parents=True)
    for stem in frames:
        (split / "JPEGImages" / "bear" / f"{stem}.jpg").symlink_to(davis16 / "JPEGImages" / "480p" / "bear" / f"{stem}.jpg")
    gt = {stem: np.asarray(Image.open(davis16 / "Annotations" / "480p" / "bear" / f"{stem}.png").convert("L")) > 0
          for stem in frames}
    write_label_png(split / "Annotations" / "bear" / "00000.png", (gt["00000"] * 4).astype(np.uint8))
    (split / "meta.json").write_text(json.dumps({"videos": {"bear": {"objects": {"4": {"category": "bear", "frames": frames}}}}}))
    config = load_config("sam_pt_reinit")
    predictor = VideoPredictor(config, segmenter, build_tracker(config.tracker))

    (run,) = run_youtubevos(predictor, tmp_path, "valid", tmp_path / "out")
    assert run.frames == len(frames) and run.peak_rss_mb > 0
    js = []
    for stem in frames:
        labels, mode = read_png(tmp_path / "out" / "Annotations" / "bear" / f"{stem}.png")
        assert mode == "P" and labels.shape == gt[stem].shape and set(np.unique(labels)) <= {0, 4}
        js.append(iou(labels == 4, gt[stem]))
    assert np.mean(js[1:]) > 0.6, js
