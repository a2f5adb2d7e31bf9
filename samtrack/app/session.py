"""One editing state per open video: objects, clicks, per-frame results, and the running job.

An :class:`EditSession` is a client of :class:`~samtrack.api.VideoPredictor` like any other:
clicks become ``add_new_points_or_box`` calls (the frame's embedding stays in memory while the
user clicks on it, ``keep_recent_embeddings``), "propagate" runs ``propagate_in_video`` from the
current frame, restarted from the masks already there, and "export" hands the kept results to
``VideoPredictor.export``. Results are kept on disk as label PNGs in a private work folder (a
long video's masks never fill the memory); the points of each frame, a few floats, in memory.
Long work runs in a :class:`Job` on its own thread; requests only read its progress.
"""
from __future__ import annotations

import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from ..api import InferenceState, VideoPredictor
from ..errors import InputError, SamtrackError
from ..outputs import read_label_png, write_label_png
from ..palette import davis_palette
from ..pipeline import FrameResult, ObjectPoints
from ..video import RecentFrames, VideoReader, open_video

MAX_OBJECTS = 254  # object ids are 1..254, as in clicks.json
DIRECTIONS = ("forward", "backward", "both")
MAX_UNDO = 50  # steps kept; each holds one label map


class Busy(SamtrackError):
    """The session is running a job; the request would change what the job reads."""


@dataclass
class Click:
    x: float
    y: float
    label: int  # 1 positive, 0 negative


@dataclass
class FramePrompts:
    """The user's clicks and box for one object on one frame."""

    clicks: list[Click] = field(default_factory=list)
    box: list[float] | None = None

    @property
    def empty(self) -> bool:
        return not self.clicks and self.box is None


@dataclass
class Job:
    """A propagation or export running on its own thread.

    ``state``: running, done, cancelled or error; ``done``/``total`` frames; ``last_frame``, the
    last frame finished (the page follows it); ``message``, one line for errors; ``result``,
    what the job produced (an export's name).
    """

    kind: str
    total: int
    state: str = "running"
    done: int = 0
    last_frame: int | None = None
    message: str = ""
    result: str | None = None
    started: float = field(default_factory=time.perf_counter)
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def to_dict(self) -> dict:
        return {"kind": self.kind, "state": self.state, "done": self.done, "total": self.total,
                "last_frame": self.last_frame, "message": self.message, "result": self.result,
                "seconds": round(time.perf_counter() - self.started, 2)}


class EditSession:
    """The editing state of one open video."""

    def __init__(self, session_id: str, predictor: VideoPredictor, video: str | Path, out_dir: Path,
                 model_lock: threading.Lock, log: Callable[[str], None] = print) -> None:
        self.id = session_id
        self.predictor = predictor
        self.video = Path(video)
        self.out_dir = out_dir
        self.model_lock = model_lock  # one predictor serves every session: one model user at a time
        self.log = log
        # The frame a user clicks on is read once, not on every click (RecentFrames), and the
        # tracker's window stays in memory as in `samtrack run`.
        config = predictor.config
        self.state: InferenceState = predictor.init_state(
            RecentFrames(open_video(self.video), size=config.tracking_window + config.tracker.lookback + 1))
        # A second reader for the page's frames: the job's reader seeks on its own thread.
        self._frames: VideoReader = open_video(self.video)
        self._frames_lock = threading.Lock()
        self._jpeg: dict[int, bytes] = {}
        self.info = self.state.reader.info
        self.frame_indices = list(self.state.frame_indices)
        self._processed = set(self.frame_indices)
        self.names: dict[int, str] = {}
        self.prompts: dict[tuple[int, int], FramePrompts] = {}  # (obj id, frame) -> prompts
        self.history: list[_Step] = []
        self.points: dict[int, dict[int, list[list[float]]]] = {}  # frame -> obj -> [x, y, label, visible]
        # Results live under the output folder too: the app writes nowhere else.
        self.work = out_dir / ".work" / session_id
        self.work.mkdir(parents=True, exist_ok=True)
        self.has_result: set[int] = set()
        self.revision = 0  # bumped on every change, so the page refetches masks
        self.job: Job | None = None
        self.exports: dict[str, Path] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ reading
    def describe(self) -> dict:
        info = self.info
        return {"id": self.id, "video": self.video.name, "width": info.width, "height": info.height,
                "fps": info.fps / self.predictor.config.video.stride, "n_frames": info.n_frames,
                "frames": self.frame_indices, "objects": self.objects(), "revision": self.revision,
                "job": self.job.to_dict() if self.job else None, "exports": sorted(self.exports)}

    def objects(self) -> list[dict]:
        palette = davis_palette()
        return [{"id": i, "name": n, "colour": "#%02x%02x%02x" % tuple(int(c) for c in palette[i])}
                for i, n in sorted(self.names.items())]

    def check_frame(self, frame: int) -> None:
        if frame not in self._processed:
            raise InputError(f"frame {frame} is out of range (the video has frames 0-{self.info.n_frames - 1}"
                             + ("" if len(self._processed) == self.info.n_frames else ", of which some are processed")
                             + ")")

    def frame_jpeg(self, frame: int) -> bytes:
        self.check_frame(frame)
        data = self._jpeg.get(frame)
        if data is None:
            with self._frames_lock:  # requests come on several threads; the reader seeks
                rgb = self._frames.read(frame)
                ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
                data = encoded.tobytes()
                self._jpeg[frame] = data
                while len(self._jpeg) > 64:  # a few MB: scrubbing back stays fast
                    del self._jpeg[next(iter(self._jpeg))]
        return data

    def label_map(self, frame: int) -> np.ndarray:
        """The frame's current result (zeros where nothing was segmented yet)."""
        self.check_frame(frame)
        if frame in self.has_result:
            return read_label_png(self._label_path(frame))
        return np.zeros((self.info.height, self.info.width), np.uint8)

    def mask_png(self, frame: int) -> bytes:
        """The frame's masks as an RGBA PNG to lay over the frame: each object in its colour,
        half transparent, with an opaque outline."""
        labels = self.label_map(frame)
        palette = davis_palette()
        rgba = np.zeros((*labels.shape, 4), np.uint8)
        rgba[..., :3] = palette[labels]
        kernel = np.ones((3, 3), np.uint8)
        edge = (labels > 0) & (cv2.dilate(labels, kernel) != cv2.erode(labels, kernel))
        rgba[..., 3] = np.where(labels > 0, 130, 0)
        rgba[edge, 3] = 255
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA), [cv2.IMWRITE_PNG_COMPRESSION, 1])
        return encoded.tobytes()

    def frame_info(self, frame: int) -> dict:
        self.check_frame(frame)
        prompts = [{"obj_id": o, "clicks": [[c.x, c.y, c.label] for c in p.clicks], "box": p.box}
                   for (o, f), p in sorted(self.prompts.items()) if f == frame and not p.empty]
        return {"frame": frame, "has_result": frame in self.has_result, "prompts": prompts,
                "points": {str(o): pts for o, pts in self.points.get(frame, {}).items()}, "revision": self.revision}

    # ------------------------------------------------------------------ objects
    def add_object(self, name: str | None = None) -> dict:
        with self._lock:
            free = next((i for i in range(1, MAX_OBJECTS + 1) if i not in self.names), None)
            if free is None:
                raise InputError(f"at most {MAX_OBJECTS} objects")
            self.names[free] = _clean_name(name) or f"object {free}"
            self.revision += 1
            return {"id": free, "name": self.names[free]}

    def rename_object(self, obj_id: int, name: str) -> None:
        with self._lock:
            self._check_object(obj_id)
            self.names[obj_id] = _clean_name(name) or self.names[obj_id]
            if obj_id in self.state.objects:
                self.state.objects[obj_id].name = self.names[obj_id]
            self.revision += 1

    def delete_object(self, obj_id: int) -> None:
        with self._lock:
            self._idle()
            self._check_object(obj_id)
            del self.names[obj_id]
            self.state.objects.pop(obj_id, None)
            for key in [k for k in self.prompts if k[0] == obj_id]:
                del self.prompts[key]
            self.history = [h for h in self.history if h.obj_id != obj_id]
            for frame in list(self.has_result):
                labels = read_label_png(self._label_path(frame))
                if (labels == obj_id).any():
                    labels[labels == obj_id] = 0
                    write_label_png(self._label_path(frame), labels)
            for pts in self.points.values():
                pts.pop(obj_id, None)
            self.revision += 1

    # ------------------------------------------------------------------ prompts
    def add_click(self, frame: int, obj_id: int, x: float, y: float, label: int) -> dict:
        """Add a positive (1) or negative (0) click and re-decode the frame."""
        self._check_point(frame, x, y)
        if label not in (0, 1):
            raise InputError(f"label must be 1 (positive) or 0 (negative), got {label}")
        return self._edit(frame, obj_id, lambda p: p.clicks.append(Click(float(x), float(y), int(label))))

    def set_box(self, frame: int, obj_id: int, box: list[float]) -> dict:
        """Set the object's box on the frame (x0, y0, x1, y1, any corner order)."""
        if len(box) != 4:
            raise InputError(f"a box is [x0, y0, x1, y1], got {len(box)} numbers")
        x0, x1 = sorted(box[0::2])
        y0, y1 = sorted(box[1::2])
        self._check_point(frame, x0, y0)
        if not (x1 <= self.info.width and y1 <= self.info.height):
            raise InputError(f"box [{x0}, {y0}, {x1}, {y1}] is outside the {self.info.width}x{self.info.height} frame")
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise InputError("the box is empty (drag over the object)")

        def change(p: FramePrompts) -> None:
            p.box = [float(x0), float(y0), float(x1), float(y1)]

        return self._edit(frame, obj_id, change)

    def undo(self) -> dict:
        """Take back the last click or box: the frame's prompts and masks are as before it."""
        with self._lock:
            self._idle()
            if not self.history:
                raise InputError("nothing to undo")
            step = self.history.pop()
            if step.before is not None:
                return self._apply(step.frame, step.obj_id, step.before)
            # The object had no prompt there: drop it and put back the masks the frame had.
            self.prompts.pop((step.obj_id, step.frame), None)
            obj = self.state.objects.get(step.obj_id)
            if obj is not None:
                obj.prompts = [p for p in obj.prompts if p.frame != step.frame]
                if not obj.prompts:
                    del self.state.objects[step.obj_id]
            write_label_png(self._label_path(step.frame), step.labels)
            self.points[step.frame] = step.points
            if not step.had_result:
                self.has_result.discard(step.frame)
            self.revision += 1
            return {"frame": step.frame, "scores": {}, "revision": self.revision}

    def _edit(self, frame: int, obj_id: int, change: Callable[[FramePrompts], None]) -> dict:
        with self._lock:
            self._idle()
            self._check_object(obj_id)
            current = self.prompts.get((obj_id, frame))
            if current is None:
                # A correction on a propagated frame starts from the tracked points that made
                # the mask there, so that one click adds to the mask instead of replacing it.
                tracked = [Click(x, y, 1) for x, y, label, visible in self.points.get(frame, {}).get(obj_id, [])
                           if label == 1 and visible]
                after = FramePrompts(tracked)
            else:
                after = FramePrompts(list(current.clicks), None if current.box is None else list(current.box))
            change(after)
            if not any(c.label == 1 for c in after.clicks) and after.box is None:
                raise InputError("a negative click needs a positive click or a box for this object on this frame first")
            step = _Step(obj_id, frame, current, self.label_map(frame), dict(self.points.get(frame, {})), frame in self.has_result)
            result = self._apply(frame, obj_id, after)
            self.history.append(step)
            del self.history[:-MAX_UNDO]
            return result

    def _apply(self, frame: int, obj_id: int, prompts: FramePrompts) -> dict:
        """Make ``prompts`` the object's prompts on ``frame`` and show the frame's new masks."""
        preview = self._decode(frame, obj_id, prompts)
        self.prompts[(obj_id, frame)] = prompts
        prompted = {o for (o, f), p in self.prompts.items() if f == frame and not p.empty}
        self._store(frame, self.label_map(frame), preview, prompted)
        self.revision += 1
        return {"frame": frame, "scores": {str(o): round(s, 3) for o, s in preview.scores.items()}, "revision": self.revision}

    def _decode(self, frame: int, obj_id: int, prompts: FramePrompts) -> FrameResult:
        points = [[c.x, c.y] for c in prompts.clicks]
        labels = [c.label for c in prompts.clicks]
        if not self.model_lock.acquire(blocking=False):
            raise Busy("the model is busy (another video is propagating); try again when it is done")
        try:
            return self.predictor.add_new_points_or_box(
                self.state, frame, obj_id, points=points or None, labels=labels or None, box=prompts.box,
                name=self.names[obj_id])
        finally:
            self.model_lock.release()

    def _store(self, frame: int, labels: np.ndarray, preview: FrameResult | None, prompted: set[int]) -> None:
        """Write the frame's result: the objects prompted there as ``preview`` decoded them, the
        others as they were."""
        labels = labels.copy()
        if preview is not None:
            labels[np.isin(labels, list(prompted))] = 0
            new = preview.label_map > 0
            labels[new] = preview.label_map[new]
            self.points.setdefault(frame, {}).update(_points(preview))
        write_label_png(self._label_path(frame), labels)
        self.has_result.add(frame)

    # ------------------------------------------------------------------ jobs
    def start_propagation(self, frame: int, direction: str) -> Job:
        """Propagate from ``frame`` forward, backward or both, from the masks and prompts there."""
        self.check_frame(frame)
        if direction not in DIRECTIONS:
            raise InputError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        with self._lock:
            self._idle()
            if not self.state.objects:
                raise InputError("nothing to propagate: click on an object first")
            position = self.frame_indices.index(frame)
            passes = [] if direction == "forward" else [True]
            passes += [] if direction == "backward" else [False]
            total = sum(position + 1 if reverse else len(self.frame_indices) - position for reverse in passes)
            job = Job(kind="propagate", total=total)
            start_masks = {o: m for o, m in self._masks(frame).items()}
            job.thread = threading.Thread(target=self._run_job, args=(job, self._propagate(job, frame, passes, start_masks)),
                                          name=f"samtrack-propagate-{self.id}", daemon=True)
            self.job = job
            job.thread.start()
            return job

    def _propagate(self, job: Job, frame: int, passes: list[bool], start_masks: dict[int, np.ndarray]) -> Iterator[None]:
        with self.model_lock:
            for reverse in passes:
                results = self.predictor.propagate_in_video(self.state, reverse=reverse, start_frame_idx=frame,
                                                            start_masks=start_masks)
                try:
                    for result in results:
                        if job.cancel.is_set():
                            return
                        if result.frame_index != frame or reverse or len(passes) == 1:
                            # The start frame's masks came from the user; a second pass leaves them.
                            write_label_png(self._label_path(result.frame_index), result.label_map)
                            self.has_result.add(result.frame_index)
                            self.points[result.frame_index] = _points(result)
                        job.done += 1
                        job.last_frame = result.frame_index
                        self.revision += 1
                        yield
                finally:
                    results.close()

    def start_export(self, formats: list[str], feather: float) -> Job:
        """Export the kept results into a new folder under the output folder, then zip it."""
        from ..export import parse_formats

        formats = parse_formats(formats, source="formats")
        if not formats:
            raise InputError("choose at least one export format")
        if not feather >= 0:
            raise InputError(f"feather must be >= 0, got {feather}")
        with self._lock:
            self._idle()
            frames = [f for f in self.frame_indices if f in self.has_result]
            if not frames or not self.names:
                raise InputError("nothing to export yet: click on an object (and propagate) first")
            stem = re.sub(r"[^A-Za-z0-9_-]+", "_", self.video.stem)[:40] or "video"
            name = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{len(self.exports) + 1}"
            job = Job(kind="export", total=len(frames))
            job.thread = threading.Thread(target=self._run_job, args=(job, self._export(job, name, frames, formats, feather)),
                                          name=f"samtrack-export-{self.id}", daemon=True)
            self.job = job
            job.thread.start()
            return job

    def _export(self, job: Job, name: str, frames: list[int], formats: list[str], feather: float) -> Iterator[None]:
        folder = self.out_dir / name
        names = dict(self.names)

        def results():
            for frame in frames:
                if job.cancel.is_set():
                    raise _Cancelled()
                yield FrameResult(frame_index=frame, label_map=read_label_png(self._label_path(frame)),
                                  points=_object_points(self.points.get(frame, {})))

        def progress(n: int) -> None:
            job.done = n
            job.last_frame = frames[n - 1]

        # Objects named in the page, whether prompted or not (an object never clicked is empty).
        from ..export import export_results

        fps = self.info.fps / self.predictor.config.video.stride
        reader = open_video(self.video)  # its own reader: the page keeps scrubbing meanwhile
        try:
            export_results(folder, formats, self.info, names, fps, results(), reader.read, feather, progress)
        except _Cancelled:
            return
        finally:
            reader.close()
        archive = shutil.make_archive(str(self.out_dir / f".{name}.zip.partial"), "zip", root_dir=folder)
        Path(archive).replace(self.out_dir / f"{name}.zip")
        self.exports[name] = folder
        job.result = name
        yield

    def _run_job(self, job: Job, steps: Iterator[None]) -> None:
        try:
            for _ in steps:
                pass
            job.state = "cancelled" if job.cancel.is_set() else "done"
        except SamtrackError as exc:
            job.state, job.message = "error", str(exc)
        except Exception as exc:  # a bug: the page gets one line, the terminal the details
            import traceback

            self.log(f"samtrack app: {job.kind} failed:\n{traceback.format_exc()}")
            job.state, job.message = "error", f"{job.kind} failed ({type(exc).__name__}: {exc})"
        finally:
            self.revision += 1

    def cancel(self) -> Job:
        job = self.job
        if job is None or job.state != "running":
            raise InputError("no job is running")
        job.cancel.set()
        return job

    def export_path(self, name: str, inner: str | None = None) -> Path:
        """The zip of export ``name``, or the file ``inner`` inside it; never a path outside
        the export's own folder."""
        folder = self.exports.get(name)
        if folder is None:
            raise FileNotFoundError(f"no export named {name!r}")
        if inner is None:
            return self.out_dir / f"{name}.zip"
        target = (folder / inner).resolve()
        if not target.is_relative_to(folder.resolve()) or not target.is_file():
            raise FileNotFoundError(f"no file {inner!r} in export {name!r}")
        return target

    def close(self) -> None:
        job = self.job
        if job is not None and job.thread is not None:
            job.cancel.set()
            job.thread.join(timeout=30)
        self._frames.close()
        self.state.reader.close()
        shutil.rmtree(self.work, ignore_errors=True)

    # ------------------------------------------------------------------ helpers
    def _idle(self) -> None:
        if self.job is not None and self.job.state == "running":
            raise Busy(f"a {self.job.kind} is running: wait for it or cancel it")

    def _check_object(self, obj_id: int) -> None:
        if obj_id not in self.names:
            raise InputError(f"no object {obj_id} (add it first)")

    def _check_point(self, frame: int, x: float, y: float) -> None:
        self.check_frame(frame)
        if not (0 <= x < self.info.width and 0 <= y < self.info.height):
            raise InputError(f"point ({x:g}, {y:g}) is outside the {self.info.width}x{self.info.height} frame")

    def _masks(self, frame: int) -> dict[int, np.ndarray]:
        labels = self.label_map(frame)
        return {o: labels == o for o in self.names if (labels == o).any()}

    def _label_path(self, frame: int) -> Path:
        return self.work / f"{frame:06d}.png"


@dataclass
class _Step:
    """What one click or box changed, to undo it: the object's prompts on the frame before it
    (None: it had none) and the frame's masks and points before it."""

    obj_id: int
    frame: int
    before: FramePrompts | None
    labels: np.ndarray
    points: dict
    had_result: bool


class _Cancelled(Exception):
    pass


def _points(result: FrameResult) -> dict[int, list[list[float]]]:
    return {o: [[round(float(x), 1), round(float(y), 1), int(l), int(v)] for (x, y), l, v in zip(p.xy, p.labels, p.visible)]
            for o, p in result.points.items()}


def _object_points(points: dict[int, list[list[float]]]) -> dict[int, ObjectPoints]:
    """The kept [x, y, label, visible] rows back as the pipeline's points (for the overlay)."""
    out = {}
    for obj_id, rows in points.items():
        table = np.asarray(rows, np.float32).reshape(-1, 4)
        out[obj_id] = ObjectPoints(xy=table[:, :2], visible=table[:, 3] > 0, labels=table[:, 2].astype(np.int32))
    return out


def _clean_name(name: str | None) -> str:
    return " ".join(str(name or "").split())[:60]
