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
import os
import pickle
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from . import arguments
from .config import Config, VideoConfig, default_preset, load_config
from .errors import InputError
from .outputs import owned_temp_dir
from .pipeline import FrameResult, SamPt
from .prompts import FramePrompt, ObjectPrompts, validate_prompts
from .segmenters import Segmenter, build_segmenter
from .timing import Timings
from .trackers import PointTracker, build_tracker
from .video import VideoReader, open_video, select_frames


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
            reader = open_video(video)
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

    def __init__(self, config: Config, segmenter: Segmenter, tracker: PointTracker) -> None:
        self.config = config
        self.pipeline = SamPt(segmenter, tracker, config)

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
        return cls(config, segmenter, tracker)

    @property
    def timings(self) -> Timings:
        return self.pipeline.timings

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

    # ------------------------------------------------------------------ propagation
    def propagate_in_video(self, state: InferenceState, reverse: bool = False) -> Iterator[FrameResult]:
        """Track and segment every object through the video in one direction.

        Forward, the pass starts at the earliest prompted frame and objects join at their first
        prompt; later prompts correct them. With ``reverse=True`` the pass runs backward from the
        latest first prompt, each object starting at its first prompt.
        """
        reverse = arguments.flag(reverse, "reverse")
        objects = _prompted(state)
        order = state.frame_indices[::-1] if reverse else state.frame_indices
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
