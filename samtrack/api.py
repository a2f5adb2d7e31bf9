"""The embeddable API, shaped like the SAM 2 video predictor.

    predictor = VideoPredictor.from_config()          # the default preset, "samtrack"
    state = predictor.init_state("clip.mp4")
    predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=[[410, 230]], labels=[1])
    for result in predictor.propagate_in_video(state):
        result.frame_index, result.label_map, result.mask(1), result.points[1]

Frames are streamed from the video, never all held in memory. Prompts may sit on any frame and
on several frames per object (later ones act as corrections).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from . import arguments
from .config import Config, VideoConfig, default_preset, load_config
from .decoding import multimask_for
from .errors import InputError
from .outputs import owned_temp_dir
from .pipeline import FrameResult, SamPt
from .prompts import FramePrompt, ObjectPrompts, validate_prompts
from .segmenters import Segmenter, build_segmenter
from .timing import Timings
from .trackers import PointTracker, build_tracker
from .video import ReadAhead, VideoReader, open_video, select_frames


@dataclass
class InferenceState:
    """One video, the frames selected for processing, and the prompts given on it so far."""

    reader: VideoReader
    frame_indices: list[int]
    video_config: VideoConfig
    objects: dict[int, ObjectPrompts] = field(default_factory=dict)

    @classmethod
    def open(cls, video: str | Path | VideoReader, video_config: VideoConfig) -> "InferenceState":
        """Open a video file or frame folder and select frames by ``video_config``."""
        if isinstance(video, (str, os.PathLike)):
            # Propagation reads frames in order: the next one decodes while this one is segmented.
            reader = ReadAhead(open_video(video))
        elif all(hasattr(video, attr) for attr in ("read", "info", "__len__")):
            reader = video
        else:
            raise TypeError(f"video: expected a path to a video file or frame folder, or a VideoReader, got {arguments.describe(video)}")
        v = video_config
        indices = select_frames(len(reader), v.start, v.stride, v.max_frames, path=reader.info.path)
        return cls(reader=reader, frame_indices=indices, video_config=video_config)

    @cached_property
    def selected(self) -> frozenset[int]:
        """The frames processed, as a set."""
        return frozenset(self.frame_indices)

    @property
    def video_path(self) -> Path:
        return self.reader.info.path

    @property
    def obj_ids(self) -> list[int]:
        return sorted(self.objects)

    def add_objects(self, objects: Sequence[ObjectPrompts], source: str | Path) -> None:
        """Validate prompts against this video (``source`` names them in errors) and add them."""
        info = self.reader.info
        validate_prompts(list(objects), Path(source), info.n_frames, (info.height, info.width))
        selected = self.selected
        v = self.video_config
        for obj in objects:
            for prompt in obj.prompts:
                if prompt.frame not in selected:
                    raise InputError(
                        f"object {obj.obj_id}: frame {prompt.frame} is not processed "
                        f"(start {v.start}, stride {v.stride}, max frames {v.max_frames})",
                        source,
                    )
        for obj in objects:
            for prompt in obj.prompts:
                self._add(obj.obj_id, prompt, obj.name)

    def _add(self, obj_id: int, prompt: FramePrompt, name: str | None) -> None:
        obj = self.objects.get(obj_id)
        if obj is None:
            self.objects[obj_id] = ObjectPrompts(obj_id=obj_id, name=name, prompts=[prompt])
            return
        obj.prompts = sorted([p for p in obj.prompts if p.frame != prompt.frame] + [prompt], key=lambda p: p.frame)
        obj.name = name or obj.name


class VideoPredictor:
    """Segments objects through a video from clicks, boxes or masks on any of its frames."""

    def __init__(self, config: Config, segmenter: Segmenter, tracker: PointTracker, log=print) -> None:
        """``log`` is told of a config choice the segmenter cannot follow (:func:`multimask_for`)."""
        self.config = dataclasses.replace(config, decode=multimask_for(config.decode, segmenter, log))
        self.pipeline = SamPt(segmenter, tracker, self.config)

    @classmethod
    def from_config(
        cls, config: Config | str | Path | None = None, overrides: Sequence[str] = (), log=print
    ) -> "VideoPredictor":
        """Build from a :class:`Config`, a preset name or a YAML path (None: the device's default
        preset, ``samtrack`` with LK, or ``sam_pt_cotracker`` where PyTorch sees a CUDA device;
        the choice goes to ``log``); weights are fetched on first use."""
        if not isinstance(config, Config):
            if config is None:
                config, why = default_preset()
                if why:
                    log(why)
            config = load_config(config, list(overrides))
        tracker = build_tracker(config.tracker, log=log)
        segmenter = build_segmenter(config.segmenter, log=log)
        return cls(config, segmenter, tracker, log=log)

    @property
    def timings(self) -> Timings:
        return self.pipeline.timings

    def keep_recent_embeddings(self, size: int = 4) -> None:
        """Keep the last ``size`` frames' image embeddings in memory, so that repeated prompts
        on one frame (an interactive editor) cost decoder calls only (4 MB per MobileSAM frame)."""
        from .segmenters.cache import RecentEmbeddings

        segmenter = self.pipeline.segmenter
        if isinstance(segmenter, RecentEmbeddings):
            segmenter.size = size
            return
        self.pipeline.segmenter = self.pipeline.passes.segmenter = RecentEmbeddings(segmenter, size)

    # ------------------------------------------------------------------ state
    def init_state(self, video: str | Path | VideoReader) -> InferenceState:
        """Open a video file or frame folder; frames are selected by ``config.video``.

        Raises:
            TypeError: ``video`` is not a path or a reader.
            samtrack.errors.InputError: the file or folder is missing, unreadable or not a video.
        """
        return InferenceState.open(video, self.config.video)

    def reset_state(self, state: InferenceState) -> None:
        """Forget every prompt."""
        _check_state(state)
        state.objects.clear()

    def add_prompts(self, state: InferenceState, objects: Sequence[ObjectPrompts], source: str | Path) -> None:
        """Add objects loaded from a prompt file (``source`` names it in error messages)."""
        _check_state(state)
        if isinstance(objects, ObjectPrompts) or not all(isinstance(o, ObjectPrompts) for o in objects):
            raise TypeError("objects: expected a sequence of ObjectPrompts (from load_clicks or load_mask_prompt)")
        state.add_objects(objects, source)

    def add_new_points_or_box(
        self,
        state: InferenceState,
        frame_idx: int,
        obj_id: int,
        points: Sequence[Sequence[float]] | np.ndarray | None = None,
        labels: Sequence[int] | np.ndarray | None = None,
        box: Sequence[float] | np.ndarray | None = None,
        name: str | None = None,
    ) -> FrameResult:
        """Add clicks and/or a box for an object on a frame.

        Args:
            points: ``[N, 2]`` (x, y) pixels of the original frame.
            labels: ``[N]``, 1 positive and 0 negative; None: all positive.
            box: ``[x0, y0, x1, y1]`` pixels, x0 < x1 and y0 < y1.

        Clicks on a frame that already has prompts for this object replace them; a positive
        point or a box is needed. Returns the segmentation of that frame with its current
        prompts, for immediate feedback.

        Raises:
            TypeError, ValueError: an argument of the wrong kind, shape or range (the message
                names it), such as a frame that is not processed or a point off the frame.
        """
        frame = _frame(state, frame_idx)
        size = _size(state)
        xy = arguments.points(points, size)
        prompt = FramePrompt(frame=frame, points=xy, labels=arguments.labels(labels, len(xy)), box=arguments.box(box, size))
        if not (prompt.labels == 1).any() and prompt.box is None:
            raise ValueError("points, box: expected a positive point (label 1) or a box; negative points alone do not locate the object")
        return self._add_and_preview(state, arguments.obj_id(obj_id), prompt, arguments.optional_name(name))

    def add_new_mask(self, state: InferenceState, frame_idx: int, obj_id: int, mask: np.ndarray, name: str | None = None) -> FrameResult:
        """Give an object's mask (bool, or integers where nonzero is the object; ``[H, W]`` at
        the video's size) on a frame. Raises ``TypeError``/``ValueError`` naming a bad argument."""
        frame = _frame(state, frame_idx)
        prompt = FramePrompt(
            frame=frame, points=np.zeros((0, 2), np.float32), labels=np.zeros(0, np.int32), mask=arguments.mask(mask, _size(state))
        )
        return self._add_and_preview(state, arguments.obj_id(obj_id), prompt, arguments.optional_name(name))

    def add_everything(self, state: InferenceState, frame_idx: int | None = None, log=print) -> dict[int, float]:
        """Segment everything on a frame (default: the first processed one) with SAM's automatic
        mask generator (``config.everything``) and add each mask as an object (ids 1, 2, ...
        after any already given). Returns object id -> the automatic mask's predicted IoU."""
        from .everything import find_objects

        _check_state(state)
        frame_idx = state.frame_indices[0] if frame_idx is None else _frame(state, frame_idx)
        offset = max(state.objects, default=0)
        with self.timings.measure("automask"):
            found = find_objects(self.pipeline.segmenter, state.reader.read(frame_idx), frame_idx,
                                 self.config.everything, log=log)
        if offset + len(found) > 254:
            raise ValueError(f"{offset} objects given and {len(found)} found: at most 254 fit in a label map "
                             "(lower everything.max_objects)")
        for f in found:
            f.prompt.obj_id += offset
        if found:
            state.add_objects([f.prompt for f in found], state.video_path)
        return {f.prompt.obj_id: f.predicted_iou for f in found}

    # ------------------------------------------------------------------ propagation
    def propagate_in_video(
        self,
        state: InferenceState,
        reverse: bool = False,
        start_frame_idx: int | None = None,
        max_frame_num_to_track: int | None = None,
        start_masks: Mapping[int, np.ndarray] | None = None,
    ) -> Iterator[FrameResult]:
        """Track and segment every object through the video in one direction.

        Forward, the pass starts at the earliest prompted frame and objects join at their first
        prompt; later prompts correct them. With ``reverse=True`` the pass runs backward from the
        latest first prompt, each object starting at its first prompt.

        ``start_frame_idx`` restarts a pass from that frame (e.g. one just corrected): objects
        prompted there start from their prompt, the others from their mask in ``start_masks``
        (object id -> bool ``[H, W]``, e.g. an earlier pass's result there), and prompts behind
        the pass's direction are ignored. ``max_frame_num_to_track`` caps the frames after the
        start (as in SAM 2).
        """
        reverse = arguments.flag(reverse, "reverse")
        objects = _prompted(state)
        order = state.frame_indices[::-1] if reverse else state.frame_indices
        if start_frame_idx is not None:
            if start_frame_idx not in order:
                raise InputError(f"frame {start_frame_idx} is not a processed frame", state.video_path)
            order = order[order.index(start_frame_idx):]
            objects = _restarted(objects, start_frame_idx, start_masks or {}, reverse)
            if not objects:
                return
        if max_frame_num_to_track is not None:
            order = order[: max(0, max_frame_num_to_track) + 1]
        yield from self.pipeline.propagate(state.reader, objects, order, reverse=reverse)

    def segment_video(self, state: InferenceState) -> Iterator[FrameResult]:
        """Every selected frame in order, each object tracked both ways from its first prompt.

        The backward pass runs first and its results wait on disk (not in memory) until the
        forward pass reaches them; objects from the forward pass take precedence where they meet.
        """
        objects = _prompted(state)
        first = {o.obj_id: o.first_frame for o in objects}
        start = state.frame_indices[0]
        needs_backward = any(f > start for f in first.values())
        # The spill folder exists only when a backward pass runs.
        with owned_temp_dir("samtrack-backward-") if needs_backward else contextlib.nullcontext(Path()) as spill:
            spilled: set[int] = set()
            if needs_backward:
                last_first = max(first.values())
                order = [i for i in state.frame_indices if i <= last_first][::-1]
                for result in self.pipeline.propagate(state.reader, objects, order, reverse=True):
                    # Keep only objects the forward pass will not have on this frame.
                    _keep_objects(result, {o for o, f in first.items() if f > result.frame_index})
                    _spill(spill, result)
                    spilled.add(result.frame_index)
            earliest = min(first.values())
            pending = self.pipeline.propagate(state.reader, objects, state.frame_indices)
            for index in state.frame_indices:
                backward = _unspill(spill, index) if index in spilled else None
                current = next(pending) if index >= earliest else None
                if current is None:
                    if backward is not None:
                        yield backward
                    continue
                if backward is not None:
                    _paint_under(current, backward)
                yield current

    # ------------------------------------------------------------------ export
    def export(
        self,
        state: InferenceState,
        out: str | Path,
        formats: Sequence[str],
        feather: float = 0.0,
        results: Iterable[FrameResult] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Write ``formats`` (names from :data:`samtrack.export.EXPORT_FORMATS`: mattes,
        cut-outs, COCO RLE, label PNGs, overlay) into the folder ``out``, atomically.

        ``results`` are the frames to export (e.g. kept from :meth:`propagate_in_video`);
        None segments the whole video with :meth:`segment_video`. ``progress(n)`` is called
        after each exported frame. Returns the number of frames exported.
        """
        from .export import export_results, parse_formats

        formats = parse_formats(formats, source="formats")
        info = state.reader.info
        names = {o.obj_id: o.name for o in state.objects.values()}
        if not names:
            raise InputError("no objects to export: add points, a box or a mask first", state.video_path)
        fps = info.fps / self.config.video.stride
        return export_results(out, formats, info, names, fps, self.segment_video(state) if results is None else results,
                              state.reader.read, feather=feather, progress=progress)

    # ------------------------------------------------------------------ helpers
    def _add_and_preview(self, state: InferenceState, obj_id: int, prompt: FramePrompt, name: str | None) -> FrameResult:
        state.add_objects([ObjectPrompts(obj_id=obj_id, name=name, prompts=[prompt])], state.video_path)
        # Preview: decode that one frame with the prompts every object has there.
        here = [
            ObjectPrompts(o.obj_id, o.name, [p]) for o in state.objects.values() for p in o.prompts if p.frame == prompt.frame
        ]
        result = next(self.pipeline.propagate(state.reader, here, [prompt.frame]))
        result.obj_ids = tuple(state.obj_ids)
        return result


def _check_state(state: object) -> None:
    if not isinstance(state, InferenceState):
        raise TypeError(f"state: expected the InferenceState from init_state(), got {arguments.describe(state)}")


def _frame(state: InferenceState, frame_idx: object) -> int:
    """``frame_idx`` checked against the video and the frames ``config.video`` selects."""
    _check_state(state)
    frame = arguments.index(frame_idx, "frame_idx")
    n = state.reader.info.n_frames
    if frame >= n:
        raise ValueError(f"frame_idx: frame {frame} is past the end of the video ({n} frames)")
    if frame not in state.selected:
        v = state.video_config
        raise ValueError(f"frame_idx: frame {frame} is not processed (start {v.start}, stride {v.stride}, max frames {v.max_frames})")
    return frame


def _size(state: InferenceState) -> tuple[int, int]:
    return state.reader.info.height, state.reader.info.width


def _prompted(state: InferenceState) -> list[ObjectPrompts]:
    _check_state(state)
    if not state.objects:
        raise InputError("no prompts: add points, a box or a mask first", state.video_path)
    return list(state.objects.values())


def _restarted(
    objects: Sequence[ObjectPrompts], start: int, masks: Mapping[int, np.ndarray], reverse: bool
) -> list[ObjectPrompts]:
    """The prompts of a pass restarted on frame ``start``: each object's prompt there, else its
    mask there as a mask prompt, then (forward) its later prompts as corrections."""
    restarted = []
    for obj in objects:
        here = [p for p in obj.prompts if p.frame == start]
        mask = masks.get(obj.obj_id)
        if not here and mask is not None and np.asarray(mask).any():
            here = [FramePrompt(frame=start, points=np.zeros((0, 2), np.float32), labels=np.zeros(0, np.int32),
                                mask=np.asarray(mask, bool))]
        ahead = [p for p in obj.prompts if (p.frame < start if reverse else p.frame > start)]
        # A backward pass acts on each object's first prompt only; from a restart that is its
        # start, or (not there yet) its latest prompt before it.
        prompts = here if (reverse and here) else (ahead[-1:] if reverse else here + ahead)
        if prompts:
            restarted.append(ObjectPrompts(obj_id=obj.obj_id, name=obj.name, prompts=sorted(prompts, key=lambda p: p.frame)))
    return restarted


def _keep_objects(result: FrameResult, keep: set[int]) -> None:
    result.label_map = np.where(np.isin(result.label_map, list(keep)), result.label_map, 0).astype(np.uint8)
    result.points = {o: p for o, p in result.points.items() if o in keep}
    result.scores = {o: s for o, s in result.scores.items() if o in keep}


def _paint_under(current: FrameResult, backward: FrameResult) -> None:
    """Fill the forward result's background with the backward pass's objects."""
    fill = (current.label_map == 0) & (backward.label_map > 0)
    current.label_map[fill] = backward.label_map[fill]
    current.points.update({o: p for o, p in backward.points.items() if o not in current.points})
    current.scores.update({o: s for o, s in backward.scores.items() if o not in current.scores})


def _spill(folder: Path, result: FrameResult) -> None:
    # os.path, not pathlib: pathlib interns every name it parses, so one new name a frame would
    # grow the interpreter's interned-string table with the video.
    with open(os.path.join(folder, f"{result.frame_index}.pkl"), "wb") as f:
        pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)


def _unspill(folder: Path, index: int) -> FrameResult:
    with open(os.path.join(folder, f"{index}.pkl"), "rb") as f:
        return pickle.load(f)
