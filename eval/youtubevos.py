"""YouTube-VOS 2018/2019 and MOSE: run the semi-supervised protocol and write the submission zip.

Official layout of a split (``valid``, ``test``; MOSE ships no meta.json)::

    <root>/<split>/JPEGImages/<video>/00000.jpg 00005.jpg ...  YouTube-VOS: every 5th frame of 30 fps
    <root>/<split>/Annotations/<video>/00000.png ...           palette PNGs, index = object id
    <root>/<split>/meta.json                                   YouTube-VOS only

meta.json is ``{"videos": {"<video>": {"objects": {"<id>": {"category": "cat", "frames":
["00000", "00005", ...]}}}}}``: ``<id>`` is the object's pixel value in the annotation PNGs and
``frames`` lists frame stems, the first being where the object is annotated. In the ``valid``
split an object is annotated once, on the frame where it first appears, and that PNG may hold
only the objects that are new there; so objects may join after the first frame. MOSE's valid
split annotates the first frame only.

Protocol (as XMem and Cutie run these benchmarks): each object is prompted with its mask on the
first frame whose annotation holds its id, and tracked forward from there. An object is not in
the video before that frame, so nothing of it is written there (a backward pass would paint it
on frames where it is absent). The annotation PNGs, not meta.json, say where an object starts:
the meta's first frame is wrong for a few YouTube-VOS objects.

Submission: one palette PNG per frame of ``<split>/JPEGImages/<video>``, with the frame's stem
and size and object ids as pixel values. The servers differ in the archive's layout:

- YouTube-VOS (CodaLab 7685 for 2018, 6066 for 2019): ``Annotations/<video>/<frame>.png``, i.e.
  the archive's top level is ``Annotations/`` (XMem's eval.py, Cutie's ``make_zip``).
- MOSE (CodaLab 10703): ``<video>/<frame>.png`` at the top level, as for DAVIS test-dev
  (Cutie's ``make_zip`` for ``mose-val``).

YouTube-VOS also publishes every frame of its videos (``valid_all_frames/JPEGImages``). Given
as ``all_frames``, every frame is tracked on (5x the frames to process, but 5x smaller steps for
the point tracker) and still only the frames of the sparse split are written, the ones the
server scores (Cutie's ``y18-val``/``y19-val`` settings).
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import InputError, show
from ..fileio import list_folder, os_errors, read_input_text
from ..outputs import atomic_write, read_label_png, write_label_png
from ..prompts import VOID_ID, ObjectPrompts
from ..video import FrameFolderReader
from .runner import Job, SequenceRun, config_fingerprint, finished_run, mask_prompt, read_run, run_staged

META = "meta.json"
RESULTS = "Annotations"


@dataclass(frozen=True)
class Benchmark:
    """A dataset in this layout and the archive its evaluation server takes.

    Attributes:
        name: names the zip, e.g. ``youtubevos2019`` -> ``youtubevos2019-valid.zip``.
        title: for people, e.g. ``YouTube-VOS 2019``.
        meta_required: whether ``<split>/meta.json`` must exist; without it the videos are the
            folders of ``Annotations/`` and the objects the ids in their PNGs.
        zip_folder: the folder the archive's video folders sit in, or ``""`` for the top level.
        server: where to upload the zip.
    """

    name: str
    title: str
    meta_required: bool
    zip_folder: str
    server: str


YOUTUBEVOS_2018 = Benchmark("youtubevos2018", "YouTube-VOS 2018", True, RESULTS,
                            "https://codalab.lisn.upsaclay.fr/competitions/7685")
YOUTUBEVOS_2019 = Benchmark("youtubevos2019", "YouTube-VOS 2019", True, RESULTS,
                            "https://codalab.lisn.upsaclay.fr/competitions/6066")
MOSE = Benchmark("mose", "MOSE", False, "", "https://codalab.lisn.upsaclay.fr/competitions/10703")
BENCHMARKS = {b.name: b for b in (YOUTUBEVOS_2018, YOUTUBEVOS_2019, MOSE)}


@dataclass(frozen=True)
class Video:
    """One video of a split.

    Attributes:
        name: the video's folder name.
        frames_dir: the frames tracked on: ``JPEGImages/<video>``, or its all-frames folder.
        output_dir: ``JPEGImages/<video>`` of the split: one PNG is written per frame in it.
        annotations_dir: ``Annotations/<video>``.
        object_ids: the ids meta.json lists, each of which must be annotated somewhere; None
            without a meta.json.
    """

    name: str
    frames_dir: Path
    output_dir: Path
    annotations_dir: Path
    object_ids: tuple[int, ...] | None


def read_meta(path: str | Path) -> dict[str, list[int]]:
    """Video name -> object ids (ascending) from a YouTube-VOS meta.json.

    Raises:
        InputError: the file is missing, is not JSON, or lacks the ``videos`` / ``objects``
            structure, or an object id is not an integer in 1..254.
    """
    path = Path(path)
    text = read_input_text(path, 2**28, "meta.json")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise InputError(f"not a readable JSON file ({show(' '.join(str(exc).split()), 120)})", path) from None
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, dict):
        raise InputError('expected {"videos": {"<video>": {"objects": {...}}}}', path)
    meta: dict[str, list[int]] = {}
    for name, video in videos.items():
        objects = video.get("objects") if isinstance(video, dict) else None
        if not isinstance(objects, dict):
            raise InputError(f'videos["{name}"]: expected {{"objects": {{"<id>": ...}}}}', path)
        ids = []
        for key in objects:
            if not (key.isdigit() and 1 <= int(key) <= 254):
                raise InputError(f'videos["{name}"].objects: id "{key}" is not an integer in 1..254', path)
            ids.append(int(key))
        meta[name] = sorted(ids)
    return meta


def list_videos(
    root: str | Path,
    split: str,
    benchmark: Benchmark,
    all_frames: str | Path | None = None,
    only: Sequence[str] | None = None,
) -> list[Video]:
    """The videos of ``<root>/<split>``, sorted by name, their folders checked to exist.

    Args:
        root: the dataset root, holding ``<split>/``.
        split: ``valid``, ``test``, ...
        benchmark: says whether meta.json is required.
        all_frames: a folder holding ``<video>/`` with every frame (YouTube-VOS'
            ``valid_all_frames/JPEGImages``), to track on instead of the sparse frames.
        only: run just these videos (for a partial submission or a quick check).

    Raises:
        InputError: a missing folder or meta.json, an invalid meta.json, a video in ``only``
            that the split does not hold, or no video at all.
    """
    if not Path(root).is_dir():
        raise InputError("dataset folder not found", root)
    split_dir = Path(root) / split
    images, annotations = split_dir / "JPEGImages", split_dir / "Annotations"
    for folder in (split_dir, images, annotations):
        if not folder.is_dir():
            raise InputError(f"folder not found (expected {split}/JPEGImages and {split}/Annotations)", folder)
    meta_path = split_dir / META
    if benchmark.meta_required or meta_path.exists():
        meta: dict[str, list[int]] | None = read_meta(meta_path)
        names = sorted(meta)
    else:
        meta = None
        with os_errors(annotations):
            names = sorted(p.name for p in list_folder(annotations) if p.is_dir() and not p.name.startswith("."))
    if only:
        unknown = [name for name in only if name not in names]
        if unknown:
            raise InputError(f"video {unknown[0]!r} is not in the {split} split", split_dir)
        names = [name for name in names if name in set(only)]
    if not names:
        raise InputError("no videos", meta_path if meta is not None else annotations)
    dense = None if all_frames is None else Path(all_frames)
    if dense is not None and not dense.is_dir():
        raise InputError("all-frames folder not found", dense)
    videos = []
    for name in names:
        video = Video(
            name=name,
            frames_dir=(dense if dense is not None else images) / name,
            output_dir=images / name,
            annotations_dir=annotations / name,
            object_ids=None if meta is None else tuple(meta[name]),
        )
        for folder in dict.fromkeys((video.frames_dir, video.output_dir, video.annotations_dir)):
            if not folder.is_dir():
                raise InputError(f"video {name!r} has no folder here", folder)
        videos.append(video)
    return videos


def load_prompts(video: Video, frame_index: dict[str, int]) -> list[tuple[Path, list[ObjectPrompts]]]:
    """Each object's mask on the first frame whose annotation holds its id.

    Args:
        video: the video; its annotation PNGs are read in frame order.
        frame_index: frame stem -> index in the frames tracked on.

    Returns:
        ``(annotation PNG, objects first annotated there)`` in frame order, PNGs that add no
        object left out. Ids 0 (background) and 255 (void) are not objects.

    Raises:
        InputError: an annotation is not a frame of the video or not a readable PNG, no
            annotation holds an object, or an object meta.json lists is in no annotation.
    """
    paths = [p for p in list_folder(video.annotations_dir) if p.suffix == ".png" and not p.name.startswith(".")]
    for path in paths:
        if path.stem not in frame_index:
            raise InputError(f"annotation of a frame the video does not have ({video.frames_dir})", path)
    seen: set[int] = set()
    found = []
    for path in sorted(paths, key=lambda p: frame_index[p.stem]):
        labels = read_label_png(path)
        new = [int(i) for i in np.unique(labels) if i not in (0, VOID_ID) and int(i) not in seen]
        if new:
            frame = frame_index[path.stem]
            found.append((path, [mask_prompt(labels == obj_id, obj_id, frame) for obj_id in new]))
            seen.update(new)
    if not seen:
        raise InputError("no annotation holds an object", video.annotations_dir)
    missing = sorted(set(video.object_ids or ()) - seen)
    if missing:
        raise InputError(f"object {missing[0]} of meta.json is in none of the video's annotations", video.annotations_dir)
    return found


def run_fingerprint(config, benchmark: Benchmark, all_frames) -> str:
    """What a finished video's results were made with; dense and sparse tracking never mix."""
    return config_fingerprint(config, benchmark.name + ("+all-frames" if all_frames is not None else ""))


def run_youtubevos(
    predictor,
    root: str | Path,
    split: str,
    out_dir: str | Path,
    resume: bool = False,
    log: Callable[[str], None] = print,
    progress: Callable[[str, int], Callable[[], None]] | None = None,
    *,
    benchmark: Benchmark = YOUTUBEVOS_2019,
    all_frames: str | Path | None = None,
    videos: Sequence[str] | None = None,
) -> list[SequenceRun]:
    """Run every video of a split: ``<out_dir>/Annotations/<video>/<frame>.png`` and a run.json.

    Each video's folder appears complete or not at all (see :func:`runner.run_staged`); with
    ``resume``, videos finished earlier with the same config are skipped.

    Args:
        predictor: a :class:`samtrack.api.VideoPredictor`.
        root, split, all_frames, videos: which videos, see :func:`list_videos`.
        out_dir: the results folder.
        resume: skip videos already finished with the same config.
        log: one line per video.
        progress: optional ``progress(video, n_frames)`` returning a callable ticked per frame
            processed.
        benchmark: the dataset's conventions.

    Returns:
        One record per video (frames processed, seconds, peak memory), in name order.
    """
    chosen = list_videos(root, split, benchmark, all_frames, videos)
    results = Path(out_dir) / RESULTS
    results.mkdir(parents=True, exist_ok=True)
    # Tracking on every frame changes the results as a config change would: never mix the two.
    fingerprint = run_fingerprint(predictor.config, benchmark, all_frames)
    runs = []
    for video in chosen:
        done = finished_run(results / video.name, fingerprint, resume)
        if done is not None:
            log(f"{video.name}: finished earlier, skipped (--resume)")
            runs.append(done)
            continue
        run = run_video(predictor, video, results, fingerprint, progress)
        log(f"{video.name}: {run.frames} frames, {run.fps:.2f} fps, peak {run.peak_rss_mb:.0f} MB")
        runs.append(run)
    return runs


def video_jobs(videos: Sequence[Video], out_dir: str | Path, fingerprint: str) -> list[Job]:
    """One :class:`~.runner.Job` per video of :func:`run_youtubevos`, for :mod:`.jobs`."""
    results = Path(out_dir) / RESULTS
    return [Job(v.name, results / v.name, fingerprint, partial(run_video, video=v, results=results, fingerprint=fingerprint))
            for v in videos]


def run_video(predictor, video: Video, results: Path, fingerprint: str, progress=None) -> SequenceRun:
    """Run one video into ``<results>/<video>`` (staged, with its record); see :func:`run_youtubevos`."""
    return run_staged(predictor.timings, results / video.name, fingerprint, partial(_segment, predictor, video, progress))


def _segment(predictor, video: Video, progress, staging: Path) -> int:
    """Segment one video into ``staging``; returns the number of frames processed."""
    reader = FrameFolderReader(video.frames_dir)
    frame_index = {p.stem: i for i, p in enumerate(reader.files)}
    outputs = _output_frames(video, reader, frame_index)
    state = predictor.init_state(reader)
    for path, objects in load_prompts(video, frame_index):
        state.add_objects(objects, path)
    start = min(obj.first_frame for obj in state.objects.values())
    processed = [i for i in state.frame_indices if i >= start]
    skipped = sorted(set(i for i in outputs if i >= start) - set(processed))
    if skipped:
        raise InputError(
            f"frame {outputs[skipped[0]]} is not processed (video.start/stride/max_frames select frames; "
            "a submission needs every frame)",
            video.frames_dir,
        )
    # Before the first annotated frame no object is in the video yet.
    blank = np.zeros((reader.info.height, reader.info.width), np.uint8)
    for index in (i for i in outputs if i < start):
        write_label_png(staging / f"{outputs[index]}.png", blank)
    tick = progress(video.name, len(processed)) if progress else (lambda: None)
    for result in predictor.propagate_in_video(state):
        stem = outputs.get(result.frame_index)
        if stem is not None:
            write_label_png(staging / f"{stem}.png", result.label_map)
        tick()
    return len(processed)


def _output_frames(video: Video, reader: FrameFolderReader, frame_index: dict[str, int]) -> dict[int, str]:
    """Index in the frames tracked on -> stem, for every frame of the split's JPEGImages."""
    split_frames = reader if video.output_dir == video.frames_dir else FrameFolderReader(video.output_dir)
    stems = [p.stem for p in split_frames.files]
    missing = [stem for stem in stems if stem not in frame_index]
    if missing:
        raise InputError(f"frame {missing[0]} of {video.output_dir} is not among these frames", video.frames_dir)
    return {frame_index[stem]: stem for stem in stems}


def write_submission(out_dir: str | Path, zip_path: str | Path, videos: Sequence[str], benchmark: Benchmark) -> Path:
    """Zip the videos' PNGs from ``<out_dir>/Annotations`` as ``benchmark``'s server expects.

    Entries are ``<zip_folder>/<video>/<frame>.png`` (or ``<video>/<frame>.png``), with their
    folders, in name order; only PNGs are taken (not run.json). The archive is written to a
    temporary file and renamed, so ``zip_path`` is never a partial archive.

    Raises:
        InputError: a video has no finished results folder (one with its run record).
    """
    results = Path(out_dir) / RESULTS
    prefix = f"{benchmark.zip_folder}/" if benchmark.zip_folder else ""
    zip_path = Path(zip_path)
    for name in videos:
        if read_run(results / name) is None:
            raise InputError(f"video {name!r} has no finished results", results)
    with atomic_write(zip_path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as archive:
        if prefix:
            archive.writestr(zipfile.ZipInfo(prefix), b"")
        for name in sorted(videos):
            archive.writestr(zipfile.ZipInfo(f"{prefix}{name}/"), b"")
            for png in sorted(p for p in (results / name).glob("*.png") if not p.name.startswith(".")):
                archive.write(png, f"{prefix}{name}/{png.name}")
    return zip_path
