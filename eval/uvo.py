"""UVO v1.0 (dense video split): track everything on each video, write YouTube-VIS results,
score them with :mod:`samtrack.eval.vis_metrics`.

Inputs:

- the annotation file (``UVO_video_val_dense.json``, YouTube-VIS-like): ``videos`` with ``id``,
  ``width``, ``height`` and ``file_names`` (the frame images, relative to the frames folder),
  ``annotations`` (per object: ``segmentations``/``areas`` per frame), ``categories``;
- the frames folder: UVO ships no frames; the user extracts them from the Kinetics-400 videos
  (resized to a 480-pixel short side, as the annotations) so that ``FRAMES/<file_names[i]>``
  exists for every video (UVO's ``video2frames.py`` writes them so).

Each video's results (``videos/<id>/instances.json``, the YouTube-VIS entries of its objects)
are written into a staging folder with a ``run.json`` record, so ``--resume`` skips finished
videos; ``results.json`` (all videos) and ``metrics.json`` are then rebuilt from them.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Sequence

from PIL import Image

from ..errors import InputError
from ..everything import InstanceRecorder
from ..outputs import atomic_write
from ..video import DEFAULT_FPS, FrameFolderReader, VideoInfo
from . import vis_metrics
from .runner import Job, SequenceRun, config_fingerprint, run_staged

VIDEO_RESULTS = "instances.json"


class FrameListReader(FrameFolderReader):
    """A :class:`~samtrack.video.FrameFolderReader` over an explicit list of frame files."""

    def __init__(self, files: Sequence[Path], name: str) -> None:
        self.files = list(files)
        missing = next((f for f in self.files if not f.is_file()), None)
        if missing is not None:
            raise InputError("frame listed in the annotations is missing (extract the frames first: see the README)",
                             missing)
        try:
            with Image.open(self.files[0]) as image:
                width, height = image.size
        except (OSError, ValueError) as exc:
            raise InputError("cannot read image (corrupt or not an image)", self.files[0]) from exc
        self.info = VideoInfo(Path(name), len(self.files), DEFAULT_FPS, height, width)


def load_annotations(path: str | Path) -> dict:
    """The annotation JSON, checked for what the run needs (one line naming the problem)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError("no such annotation file", path) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"not a readable JSON file ({exc})", path) from None
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list) or "annotations" not in data:
        raise InputError("not a UVO / YouTube-VIS annotation file (needs 'videos' and 'annotations')", path)
    for i, video in enumerate(data["videos"]):
        for key in ("id", "width", "height", "file_names"):
            if key not in video:
                raise InputError(f"videos[{i}] has no {key!r}", path)
    return data


def select_videos(data: dict, ids: Sequence[str] | None, source: str | Path) -> list[dict]:
    """The annotation's videos, or those whose ``id`` is in ``ids`` (given as strings)."""
    videos = data["videos"]
    if not ids:
        return videos
    known = {str(v["id"]) for v in videos}
    unknown = sorted(set(ids) - known)
    if unknown:
        raise InputError(f"video {unknown[0]!r} is not in the annotations", source)
    return [v for v in videos if str(v["id"]) in set(ids)]


def uvo_jobs(videos: Sequence[dict], frames_root: Path, out: Path, fingerprint: str) -> list[Job]:
    """One :class:`~.runner.Job` per video, for :mod:`.jobs`: track everything on it into
    ``out/videos/<id>/`` (staged, with its record)."""
    return [Job(str(video["id"]), out / "videos" / str(video["id"]), fingerprint,
                partial(run_uvo_video, video=video, frames_root=frames_root, out=out, fingerprint=fingerprint))
            for video in videos]


def uvo_fingerprint(config) -> str:
    return config_fingerprint(config, "uvo-everything")


def run_uvo_video(predictor, video: dict, frames_root: Path, out: Path, fingerprint: str) -> SequenceRun:
    """Track everything on one video (the task of :func:`uvo_jobs`, the same on every runner)."""
    reader = FrameListReader([frames_root / name for name in video["file_names"]], str(video["id"]))
    if (reader.info.height, reader.info.width) != (int(video["height"]), int(video["width"])):
        raise InputError(f"frames are {reader.info.width}x{reader.info.height}, the annotations say "
                         f"{video['width']}x{video['height']}", reader.files[0])

    def segment(staging: Path) -> int:
        state = predictor.init_state(reader)
        first_scores = predictor.add_everything(state, log=lambda message: None)
        recorder = InstanceRecorder(sorted(first_scores), first_scores)
        if first_scores:
            for result in predictor.segment_video(state):
                recorder.add(result)
        with atomic_write(staging / VIDEO_RESULTS, "w") as f:
            json.dump(recorder.results(video_id=video["id"]), f, separators=(",", ":"))
        return len(reader)

    return run_staged(predictor.timings, out / "videos" / str(video["id"]), fingerprint, segment)


def collect_results(out: Path, videos: Sequence[dict]) -> list[dict]:
    """Every video's entries, in the annotation's video order."""
    results = []
    for video in videos:
        results += json.loads((out / "videos" / str(video["id"]) / VIDEO_RESULTS).read_text())
    return results


def score(data: dict, results: list[dict], videos: Sequence[dict], areas: str, per_category: bool,
          source: str) -> vis_metrics.VisEvaluation:
    """Score on the videos that were run (a subset leaves the others out of the ground truth)."""
    ids = {v["id"] for v in videos}
    subset = {**data, "videos": list(videos), "annotations": [a for a in data["annotations"] if a["video_id"] in ids]}
    if not per_category:
        # Class-agnostic (UVO's open-world protocol): one category for all objects and results.
        subset["categories"] = [{"id": 1, "name": "object"}]
        subset["annotations"] = [{**a, "category_id": 1} for a in subset["annotations"]]
        results = [{**r, "category_id": 1} for r in results]
    ranges = vis_metrics.YTVIS_AREA_RANGES if areas == "ytvis" else vis_metrics.COCO_AREA_RANGES
    params = vis_metrics.VisParams(area_ranges=dict(ranges), use_categories=per_category)
    return vis_metrics.evaluate(subset, results, params, gt_source=source, results_source="results.json")


def write_outputs(out: Path, results: list[dict], evaluation: vis_metrics.VisEvaluation, runs: Sequence[SequenceRun],
                  settings: dict) -> None:
    with atomic_write(out / "results.json", "w") as f:
        json.dump(results, f, separators=(",", ":"))
    with atomic_write(out / "metrics.json", "w") as f:
        json.dump({"stats": evaluation.stats, "settings": settings, "runs": [asdict(r) for r in runs]}, f, indent=1)
