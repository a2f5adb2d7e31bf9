"""The SAM-PT loop: query points -> point tracker -> SAM prompts -> masks -> re-initialised points.

One pass walks an ordered list of frames (forward, or backward for objects prompted after the
start). Frames are processed in tracking windows: the tracker follows every object's points
through a window, each frame of the window is encoded once and decoded per object, and at the end
of the window points are re-sampled from the predicted masks (every ``reinit.every`` frames) or
carried on. A window also ends where a user prompt sits, so that prompts act on their own frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

from .appearance import AppearanceModel, ScoreMap
from .config import Config
from .errors import show
from .decoding import DecodePasses, FlowCandidate, ObjectPrompt, mask_box
from .flow import DenseFlow, FramePairFlow, mask_as_prompt
from .prompts import FramePrompt, ObjectPrompts
from .sampling import PointSampler
from .segmenters import ImageEmbedding, MaskPrediction, Segmenter
from .timing import Timings
from .trackers import PointTracker
from .video import VideoReader, resize_longest_side


# After this many frames in a row of rejected masks, the object is taken to have really grown.
_MAX_REJECTIONS = 5


@dataclass
class ObjectPoints:
    """An object's query points on one frame, in pixels of the original frame."""

    xy: np.ndarray  # float32 [N, 2]
    visible: np.ndarray  # bool [N]
    labels: np.ndarray  # int32 [N]: 1 positive, 0 negative


@dataclass
class FrameResult:
    """Everything the pipeline knows about one frame, at the original frame size.

    Attributes:
        frame_index: index of the frame in the input video.
        label_map: uint8 ``[H, W]``; 0 background, k object id k. Objects never overlap.
        points: per object id, its tracked points on this frame.
        scores: per object id, the segmenter's predicted IoU (absent when no mask was decoded).
        obj_ids: every object of the run, on this frame or not.
    """

    frame_index: int
    label_map: np.ndarray
    points: dict[int, ObjectPoints] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)
    obj_ids: tuple[int, ...] = ()

    def mask(self, obj_id: int) -> np.ndarray:
        """bool ``[H, W]``: the object's pixels (none where it is absent from this frame).

        Raises:
            ValueError: ``obj_id`` is not an object of this run (a typo would otherwise read as
                an object that vanished).
        """
        if obj_id not in self.obj_ids:
            raise ValueError(f"obj_id: {show(obj_id)} is not an object of this run (objects: {list(self.obj_ids)})")
        return self.label_map == obj_id


class FrameSource:
    """Frames of a video at processing size, read on demand and kept only briefly."""

    def __init__(self, reader: VideoReader, longest_side: int | None, timings: Timings) -> None:
        self.reader = reader
        self.longest_side = longest_side
        self.timings = timings
        info = reader.info
        self.original_size = (info.height, info.width)
        probe = resize_longest_side(np.zeros((info.height, info.width), np.uint8), longest_side)
        self.size = probe.shape[:2]
        # Processing pixels per original pixel, (x, y).
        self.scale = np.array([self.size[1] / info.width, self.size[0] / info.height], np.float32)
        self._cache: dict[int, np.ndarray] = {}

    def get(self, index: int) -> np.ndarray:
        frame = self._cache.get(index)
        if frame is None:
            with self.timings.measure("io"):
                frame = resize_longest_side(self.reader.read(index), self.longest_side)
            self._cache[index] = frame
        return frame

    def keep_only(self, indices: Sequence[int]) -> None:
        """Forget every cached frame not in ``indices`` (bounds memory to one window)."""
        for index in [i for i in self._cache if i not in indices]:
            del self._cache[index]

    def to_original(self, label_map: np.ndarray) -> np.ndarray:
        if label_map.shape == self.original_size:
            return label_map
        height, width = self.original_size
        return cv2.resize(label_map, (width, height), interpolation=cv2.INTER_NEAREST)


@dataclass
class _Track:
    """The running state of one object during a pass (processing-size coordinates)."""

    obj_id: int
    xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    visible: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    frames_since_init: int = 0
    mask: np.ndarray | None = None  # after merging, on the last decoded frame
    last_good_mask: np.ndarray | None = None
    score: float | None = None
    appearance: AppearanceModel | None = None
    low_res: np.ndarray | None = None  # the last accepted prediction's low-res logits
    motion: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))  # median point step
    rejected: int = 0  # consecutive frames whose mask the area guard rejected
    warped: np.ndarray | None = None  # the previous mask moved by the flow onto this frame
    fallen_back: int = 0  # consecutive frames given the flow-moved mask instead of SAM's
    empty_for: int = 0  # consecutive frames on which the object had no mask
    since_update: int = 0  # frames since its appearance's recent banks were learnt
    score_map: "ScoreMap | None" = None  # this frame's appearance scores (redetect)
    learnt_area: int = 0  # its mask's area when its look was last learnt
    tracker_lost: bool = False  # on this frame, fewer than redetect.min_points positives tracked
    search_mask: np.ndarray | None = None  # where re-detection searches around (redetect.collapse_*)
    collapsed_for: int = 0  # consecutive masks passed over as collapses
    # Per point, as of the last finished frame (note_seen): frames since it was last visible
    # (0: visible) and where that was.
    lost_for: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    seen_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))

    def set_points(self, xy: np.ndarray, labels: np.ndarray) -> None:
        self.xy = xy.astype(np.float32)
        self.labels = labels.astype(np.int32)
        self.visible = np.ones(len(xy), bool)
        self.frames_since_init = 0
        self.lost_for = np.zeros(len(xy), np.int64)
        self.seen_xy = self.xy.copy()

    def note_seen(self) -> None:
        """Record, after a frame is done, which points were visible on it and where."""
        self.lost_for = np.where(self.visible, 0, self.lost_for + 1)
        self.seen_xy = np.where(self.visible[:, None], self.xy, self.seen_xy).astype(np.float32)

    def visible_positives(self) -> np.ndarray:
        return self.xy[self.visible & (self.labels == 1)]


class SamPt:
    """Segments and tracks objects through a video from their prompts (SAM-PT)."""

    def __init__(self, segmenter: Segmenter, tracker: PointTracker, config: Config) -> None:
        self.segmenter = segmenter
        self.tracker = tracker
        self.config = config
        self.sampler = PointSampler(config.sampling)
        self.timings = Timings()
        self.passes = DecodePasses(segmenter, config.decode, self.timings.measure)
        self.flow = DenseFlow(config.flow) if config.flow.enabled else None

    # ------------------------------------------------------------------ the pass
    def propagate(
        self,
        reader: VideoReader,
        objects: Sequence[ObjectPrompts],
        order: Sequence[int],
        reverse: bool = False,
    ) -> Iterator[FrameResult]:
        """Yield one :class:`FrameResult` per frame of ``order``, from the first prompted one on.

        Args:
            reader: the video.
            objects: validated prompts (original-frame coordinates).
            order: frame indices in processing order (ascending; descending when ``reverse``).
            reverse: a backward pass: only each object's first prompt is used, since later
                prompts lie behind the pass's direction of travel.
        """
        source = FrameSource(reader, self.config.video.longest_side, self.timings)
        events = self._events(objects, order, reverse)
        positions = [i for i, frame in enumerate(order) if frame in events]
        if not positions:
            return
        rng = np.random.default_rng(self.config.sampling.seed)
        tracks: dict[int, _Track] = {}
        obj_ids = tuple(sorted(o.obj_id for o in objects))

        pos = positions[0]
        result = self._emit_prompted(source, order[pos], events[order[pos]], tracks, rng)
        for track in tracks.values():
            track.note_seen()
        result.obj_ids = obj_ids
        yield result
        window = self.config.tracking_window
        # A learned tracker may find a lost point again, so a window may reach back to the frame
        # where a recently lost point was last seen.
        lookback = self.config.tracker.lookback if getattr(self.tracker, "redetects", False) else 0
        while pos < len(order) - 1:
            next_event = next((p for p in positions if p > pos), len(order) - 1)
            end = min(pos + window - 1, next_event, len(order) - 1)
            back = max([0] + [int(t.lost_for[t.lost_for <= lookback].max(initial=0)) for t in tracks.values()])
            indices = list(order[pos - back : end + 1])
            source.keep_only(indices)
            frames = [source.get(i) for i in indices]
            paths = self._track_window(frames, tracks, back)
            for k in range(1, end - pos + 1):
                frame_index = order[pos + k]
                for track_id, (xy, visible) in paths.items():
                    track = tracks[track_id]
                    moved = visible[k] & visible[k - 1]
                    track.motion = np.median(xy[k][moved] - xy[k - 1][moved], axis=0) if moved.any() else np.zeros(2, np.float32)
                    track.xy, track.visible = xy[k], visible[k]
                    track.frames_since_init += 1
                if frame_index in events and pos + k == end:
                    result = self._emit_prompted(source, frame_index, events[frame_index], tracks, rng)
                else:
                    result = self._emit_tracked(source, frame_index, tracks, previous=order[pos + k - 1])
                for track in tracks.values():
                    track.note_seen()
                result.obj_ids = obj_ids
                yield result
            pos = end
            self._reinit(source.get(order[pos]), tracks, rng, prompted=events.get(order[pos], {}))

    @staticmethod
    def _events(objects: Sequence[ObjectPrompts], order: Sequence[int], reverse: bool) -> dict[int, dict[int, FramePrompt]]:
        """Frame index -> {object id: prompt} for the prompts this pass acts on."""
        in_order = set(order)
        events: dict[int, dict[int, FramePrompt]] = {}
        for obj in objects:
            for prompt in obj.prompts[:1] if reverse else obj.prompts:
                if prompt.frame in in_order:
                    events.setdefault(prompt.frame, {})[obj.obj_id] = prompt
        return events

    # ------------------------------------------------------------------ tracking
    def _track_window(self, frames: list[np.ndarray], tracks: dict[int, _Track], back: int = 0) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Track every object's points through ``frames``, whose frame ``back`` is the current one.

        Visible points are queried there. With ``back > 0`` (a learned tracker), so is each
        point lost within the last ``back`` frames, on the frame and at the place it was last
        seen; other lost points stay lost. Returns per object its points' positions and
        visibility on the frames from the current one on.
        """
        picked = {}
        for obj_id, track in tracks.items():
            # A visible point's lost_for is 0 and its seen_xy is where it is (note_seen).
            idx = np.flatnonzero(track.visible | ((track.lost_for >= 1) & (track.lost_for <= back)))
            picked[obj_id] = (idx, np.column_stack([back - track.lost_for[idx], track.seen_xy[idx]]).astype(np.float32))
        queries = np.concatenate([np.zeros((0, 3), np.float32)] + [q for _, q in picked.values()])
        with self.timings.measure("tracker"):
            result = self.tracker.track(frames, queries)
        paths: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        offset = 0
        n_frames = len(frames) - back
        for obj_id, (idx, _) in picked.items():
            track = tracks[obj_id]
            xy = np.repeat(track.xy[None], n_frames, axis=0)
            visible = np.zeros((n_frames, len(track.xy)), bool)
            xy[:, idx] = result.points[back:, offset : offset + len(idx)]
            visible[:, idx] = result.visible[back:, offset : offset + len(idx)]
            offset += len(idx)
            paths[obj_id] = (xy, visible)
        return paths

    def _reinit(self, image: np.ndarray, tracks: dict[int, _Track], rng: np.random.Generator, prompted: dict[int, FramePrompt]) -> None:
        """Re-sample query points where the schedule says so, and bring back lost objects."""
        every = self.config.reinit.every
        for obj_id, track in tracks.items():
            if obj_id in prompted:
                continue  # points were just set from the user's prompt on this frame
            has_mask = track.mask is not None and track.mask.any()
            if has_mask and every > 0 and track.frames_since_init >= every:
                self._sample(track, track.mask, image, rng)
            elif not has_mask and self.config.reinit.recover_lost and track.last_good_mask is not None:
                # The object vanished (occlusion, or every point lost): look for it again where it
                # was last seen, instead of leaving it empty for the rest of the video.
                self._sample(track, track.last_good_mask, image, rng)

    def _sample(self, track: _Track, mask: np.ndarray, image: np.ndarray, rng: np.random.Generator) -> None:
        with self.timings.measure("sampling"):
            xy, labels = self.sampler.sample(mask, image, rng)
        track.set_points(xy, labels)

    # ------------------------------------------------------------------ decoding
    def _emit_prompted(
        self,
        source: FrameSource,
        frame_index: int,
        prompts: dict[int, FramePrompt],
        tracks: dict[int, _Track],
        rng: np.random.Generator,
    ) -> FrameResult:
        """Decode a frame on which the user prompted some objects (others continue tracking)."""
        image = source.get(frame_index)
        given_masks: dict[int, np.ndarray] = {}
        clicks: dict[int, FramePrompt] = {}
        for obj_id, prompt in prompts.items():
            tracks.setdefault(obj_id, _Track(obj_id))
            if prompt.mask is not None:
                given_masks[obj_id] = _resize_mask(prompt.mask, source.size)
            else:
                clicks[obj_id] = prompt
                scaled = prompt.points * source.scale
                tracks[obj_id].set_points(scaled, prompt.labels)
        result = self._decode_frame(source, frame_index, tracks, given_masks, clicks, learn=set(prompts))
        for obj_id in prompts:
            track = tracks[obj_id]
            if obj_id in given_masks:
                self._sample(track, track.mask, image, rng)
            elif track.mask is not None and track.mask.any() and (
                self.config.sampling.extra_points_from_clicks or not (prompts[obj_id].labels == 1).any()
            ):
                # A box without a positive click leaves nothing to track: points come from its mask.
                xy, labels = self.sampler.sample(track.mask, image, rng)
                track.set_points(np.concatenate([track.xy, xy]), np.concatenate([track.labels, labels]))
        # The points drawn for a prompted frame are the ones tracking starts from.
        result.points = {o: self._points_out(t, source) for o, t in tracks.items()}
        return result

    def _emit_tracked(self, source: FrameSource, frame_index: int, tracks: dict[int, _Track], previous: int | None = None) -> FrameResult:
        return self._decode_frame(source, frame_index, tracks, {}, {}, previous=previous)

    def _move_points(self, pair: FramePairFlow, tracks: dict[int, _Track]) -> None:
        """``flow.points``: move the points that were visible on the previous frame by the flow,
        all of them (``all``, instead of the tracker's step) or those the tracker lost (``lost``)."""
        how = self.config.flow.points
        if how == "off":
            return
        for track in tracks.values():
            was = track.lost_for == 0  # visible on the previous frame, at seen_xy
            pick = was if how == "all" else was & ~track.visible
            if not pick.any():
                continue
            moved, ok = pair.move_points(track.seen_xy[pick])
            xy = track.xy.copy()
            xy[pick] = moved
            visible = track.visible.copy()
            visible[pick] = ok
            track.xy, track.visible = xy, visible

    def _flow_candidates(self, pair: FramePairFlow, tracks: dict[int, _Track],
                         embedding: ImageEmbedding) -> dict[int, FlowCandidate]:
        """Per object with a mask on the previous frame: that mask moved by the flow onto this
        frame, and the flow candidate's prompt (:class:`FlowConfig`)."""
        cfg = self.config.flow
        moving = [t for t in tracks.values() if t.mask is not None and t.mask.any()]
        for track in tracks.values():
            track.warped = None
        if not moving:
            return {}
        with self.timings.measure("flow"):
            out = {}
            for track in moving:
                track.warped = pair.warp_mask(track.mask)
                box = mask_box(track.warped) if cfg.box else None
                if box is not None:
                    height, width = track.warped.shape
                    box = np.clip(box + np.array([-1, -1, 1, 1], np.float32) * cfg.box_margin, 0, [width - 1, height - 1, width - 1, height - 1]).astype(np.float32)
                prior = None
                if cfg.mask_prompt and cfg.prior == "mask" and track.warped.any():
                    prior = mask_as_prompt(track.warped, embedding)
                elif cfg.mask_prompt and track.low_res is not None:
                    prior = pair.warp_low_res(track.low_res, embedding.input_size)
                # Read when the candidates are chosen, after this frame's redetect step scored it.
                look = lambda mask, t=track: t.score_map.mean_inside(mask) if t.score_map is not None else 0.0  # noqa: E731
                out[track.obj_id] = FlowCandidate(track.warped, box, prior, cfg.select, look, cfg.iou_margin)
        return out

    def _decode_frame(
        self,
        source: FrameSource,
        frame_index: int,
        tracks: dict[int, _Track],
        given_masks: dict[int, np.ndarray],
        clicks: dict[int, FramePrompt],
        learn: set[int] = frozenset(),
        previous: int | None = None,
    ) -> FrameResult:
        """Decode every object on a frame and merge them; ``learn`` names the objects whose
        appearance is (re)learnt from their mask on this frame (they were just prompted)."""
        embedding: ImageEmbedding | None = None

        def encoded() -> ImageEmbedding:
            nonlocal embedding
            if embedding is None:
                with self.timings.measure("encoder"):
                    embedding = self.segmenter.encode(source.get(frame_index))
            return embedding

        redetect = self.config.redetect.enabled
        flows: dict[int, FlowCandidate] = {}
        if self.flow is not None and previous is not None:
            with self.timings.measure("flow"):
                pair = self.flow(source.get(previous), source.get(frame_index))
                self._move_points(pair, tracks)
            flows = self._flow_candidates(pair, tracks, encoded())
        logits: dict[int, np.ndarray] = {}
        requests: dict[int, ObjectPrompt] = {}
        for obj_id, track in tracks.items():
            if obj_id in given_masks:
                # A user mask is the answer on its own frame; logits only order it in the merge.
                logits[obj_id] = _as_logits(given_masks[obj_id])
                track.low_res = None
                if self.flow is not None and self.config.flow.mask_prompt:
                    # The given mask as the next frame's mask prompt: it keeps the holes and thin
                    # parts that points alone lose.
                    track.low_res = mask_as_prompt(given_masks[obj_id], encoded())
                continue
            if redetect and obj_id not in clicks and track.appearance is not None:
                frame_embedding = encoded()  # outside the timer: the encoder is timed on its own
                with self.timings.measure("redetect"):
                    self._check_points(track, frame_embedding)
        for obj_id, track in tracks.items():
            if obj_id in given_masks:
                continue
            xy, labels = self._prompt_points(obj_id, tracks)
            box = None
            if obj_id in clicks and clicks[obj_id].box is not None:
                box = clicks[obj_id].box * np.tile(source.scale, 2)
            if not (labels == 1).any() and box is None:
                continue
            prior = track.low_res if self.config.decode.mask_memory and obj_id not in clicks else None
            requests[obj_id] = ObjectPrompt(xy, labels, box, prior, previous=track.mask, flow=flows.get(obj_id),
                                            look=track.score_map)
        predictions = self.passes.run(encoded(), requests) if requests else {}
        scores: dict[int, float] = {}
        with self.timings.measure("masks"):
            for obj_id, prediction in predictions.items():
                logits[obj_id] = self._accept(tracks[obj_id], prediction, obj_id not in clicks, embedding)
                scores[obj_id] = prediction.iou
            fallback = self.config.flow.fallback_frames
            for obj_id, track in tracks.items():
                # SAM's mask dropped (low predicted IoU): the previous mask moved by the flow, for
                # a few frames, instead of an empty object.
                if obj_id in predictions:
                    track.fallen_back = 0
                elif obj_id not in logits and fallback and track.warped is not None and track.warped.any() and track.fallen_back < fallback:
                    logits[obj_id] = _as_logits(track.warped)
                    track.fallen_back += 1
            label_map = merge_logits(logits, source.size, self.config.decode.merge_threshold)
            for obj_id, track in tracks.items():
                track.mask = label_map == obj_id
                track.score = scores.get(obj_id)
                if not track.mask.any():
                    track.low_res = None  # a memory of a vanished object would pin where it comes back
                    track.empty_for += 1
                else:
                    track.empty_for = 0
                    track.last_good_mask = track.mask
                    self._move_search(track, prompted=obj_id in given_masks or obj_id in clicks)
        if redetect:
            self._learn_appearance(tracks, learn, scores, encoded)
            label_map = self._without_hidden(label_map, tracks, given_masks, clicks)
        return FrameResult(
            frame_index=frame_index,
            label_map=source.to_original(label_map),
            points={o: self._points_out(t, source) for o, t in tracks.items()},
            scores=scores,
        )

    def _move_search(self, track: _Track, prompted: bool) -> None:
        """Centre the re-detection search on the object's new mask, unless the mask collapsed
        to a fragment of the one searched around that does not look like the object
        (``redetect.collapse_*``)."""
        cfg = self.config.redetect
        collapsed = (not prompted and track.search_mask is not None and track.collapsed_for < cfg.collapse_frames
                     and np.count_nonzero(track.mask) < cfg.collapse_fraction * np.count_nonzero(track.search_mask)
                     # An object that shrinks for real (going behind someone) still looks like itself.
                     and track.score_map is not None and track.score_map.mean_inside(track.mask) <= 0)
        if collapsed:
            track.collapsed_for += 1
        else:
            track.search_mask = track.mask
            track.collapsed_for = 0

    def _without_hidden(self, label_map: np.ndarray, tracks: dict[int, _Track], given_masks: dict[int, np.ndarray],
                        clicks: dict[int, FramePrompt]) -> np.ndarray:
        """The label map less the objects reported hidden (``redetect.hide_fraction``): their
        tracker lost them and their re-detected mask does not look enough like them."""
        least = self.config.redetect.hide_fraction
        if not least:
            return label_map
        hidden = [obj_id for obj_id, track in tracks.items()
                  if track.tracker_lost and obj_id not in given_masks and obj_id not in clicks
                  and track.score_map is not None and track.mask.any()
                  and track.score_map.object_fraction(track.mask)[0] < least]
        if not hidden:
            return label_map
        return np.where(np.isin(label_map, hidden), np.uint8(0), label_map)

    def _learn_appearance(self, tracks: dict[int, _Track], learn: set[int], scores: dict[int, float],
                          encoded: Callable[[], ImageEmbedding]) -> None:
        """Learn the look of each object in ``learn`` from its mask on this frame, and update the
        others' when the schedule says so."""
        for obj_id, track in tracks.items():
            if not track.mask.any() or (obj_id not in learn and track.appearance is None):
                continue
            embedding = encoded()  # outside the timer: the encoder is timed on its own
            with self.timings.measure("redetect"):
                if obj_id in learn:
                    rng = np.random.default_rng(self.config.sampling.seed)
                    model = AppearanceModel(embedding, track.mask, self.config.redetect, rng)
                    track.appearance = model if model.usable else None
                    track.since_update = 0
                    track.learnt_area = int(np.count_nonzero(track.mask))
                else:
                    self._update_appearance(track, scores.get(obj_id), embedding)

    def _update_appearance(self, track: _Track, iou: float | None, embedding: ImageEmbedding) -> None:
        """Learn the object's recent look from its mask on this frame when the schedule says so
        (``redetect.update_every``) or the object has grown (``redetect.relearn_growth``), and the
        mask is trusted (``redetect.update_min_*``)."""
        cfg = self.config.redetect
        track.since_update += 1
        area = int(np.count_nonzero(track.mask))
        grown = bool(cfg.relearn_growth) and area >= cfg.relearn_growth * track.learnt_area
        scheduled = bool(cfg.update_every) and track.since_update >= cfg.update_every
        if not (grown or scheduled) or iou is None or iou < cfg.update_min_iou:
            return
        if track.score_map is None or track.score_map.object_fraction(track.mask)[0] < cfg.update_min_fraction:
            return
        rng = np.random.default_rng(self.config.sampling.seed + track.since_update)
        track.appearance.update(embedding, track.mask, rng)
        track.since_update = 0
        track.learnt_area = area

    def _accept(self, track: _Track, prediction: MaskPrediction, guard: bool, embedding: ImageEmbedding) -> np.ndarray:
        """The object's logits for the merge: the prediction's, less the pieces that do not look
        like the object (``redetect.verify_*``), or, when the area guard rejects it, the
        object's last accepted mask moved with its points."""
        logits, low_res = prediction.logits, prediction.low_res_logits
        if guard:
            dropped = _either(self._not_like_object(track, prediction.mask), self._look_alike_pieces(track, prediction.mask))
            if dropped is not None:
                if not (prediction.mask & ~dropped).any():
                    return _as_logits(np.zeros_like(prediction.mask))
                # The memory forgets them too, or the flow candidate's mask prompt brings them back.
                logits = np.where(dropped, np.float32(-1e4), logits)
                low_res = np.where(mask_as_prompt(dropped, embedding) > 0, np.float32(-10.0), low_res)
        if guard and self._flow_overgrown(track, logits):
            # The previous mask moved by the flow: it follows an object out of the frame, where a
            # mask moved by the points' median step stays in it.
            return _as_logits(track.warped if track.warped is not None else np.zeros_like(prediction.mask))
        if guard and self._overgrown(track, logits):
            if track.warped is not None and track.warped.any():
                return _as_logits(track.warped)
            return _as_logits(_shift_mask(track.last_good_mask, track.motion))
        track.low_res = low_res
        return logits

    def _not_like_object(self, track: _Track, mask: np.ndarray) -> np.ndarray | None:
        """The pixels of a predicted mask to drop because they do not look like the object: the
        whole mask, or with ``redetect.verify_parts`` each connected piece on its own, when it
        covers at least ``verify_cells`` cells and under ``verify_fraction`` of them are
        object-like. None when nothing is dropped."""
        cfg = self.config.redetect
        if not cfg.verify_fraction or track.score_map is None or not mask.any():
            return None
        if not cfg.verify_parts:
            fraction, cells = track.score_map.object_fraction(mask)
            return mask if cells >= cfg.verify_cells and fraction < cfg.verify_fraction else None
        # A piece under this many pixels cannot cover verify_cells cells by half: SAM's specks are
        # skipped without a full-frame pass each.
        least = 0.5 * cfg.verify_cells * track.score_map.cell[0] * track.score_map.cell[1]
        labels, areas, pieces = _pieces(mask, least)
        dropped = np.zeros(len(areas), bool)
        for piece in pieces:
            fraction, cells = track.score_map.object_fraction(labels == piece)
            dropped[piece] = cells >= cfg.verify_cells and fraction < cfg.verify_fraction
        return dropped[labels] if dropped.any() else None

    def _look_alike_pieces(self, track: _Track, mask: np.ndarray) -> np.ndarray | None:
        """The pieces of a predicted mask that are far from the piece that looks most like the
        object and look much less like it (``redetect.piece_*``); None when nothing is dropped."""
        cfg = self.config.redetect
        if not cfg.piece_ratio or track.score_map is None or not mask.any():
            return None
        look = track.score_map
        labels, areas, pieces = _pieces(mask, cfg.piece_cells * look.cell[0] * look.cell[1])
        if len(pieces) < 2:
            return None
        inside = {piece: labels == piece for piece in pieces}
        scores = {piece: look.mean_inside(pixels) for piece, pixels in inside.items()}
        best = max(scores, key=scores.get)
        if scores[best] < cfg.piece_min_score:
            return None  # no piece looks enough like the object to judge the others by
        weaker = [piece for piece in pieces if scores[piece] < cfg.piece_ratio * scores[best]]
        if not weaker:
            return None
        distance = cv2.distanceTransform((~inside[best]).view(np.uint8), cv2.DIST_L2, 3)
        gap = cfg.piece_gap * np.sqrt(areas[best])
        far = [piece for piece in weaker if distance[inside[piece]].min() > gap]
        return np.isin(labels, far) if far else None

    def _flow_overgrown(self, track: _Track, logits: np.ndarray) -> bool:
        """Whether a predicted mask is over ``flow.max_growth`` times the previous mask moved by
        the flow (or, with no previous mask, the last accepted one); ``flow.max_rejections`` in a
        row are taken as real growth."""
        cfg = self.config.flow
        if self.flow is None or cfg.max_growth <= 0:
            return False
        if track.last_good_mask is None or track.rejected >= cfg.max_rejections:
            track.rejected = 0
            return False
        reference = track.warped if track.warped is not None else track.last_good_mask
        area = np.count_nonzero(logits > self.config.decode.merge_threshold)
        if area > cfg.max_growth * max(np.count_nonzero(reference), cfg.min_area):
            track.rejected += 1
            return True
        track.rejected = 0
        return False

    def _overgrown(self, track: _Track, logits: np.ndarray) -> bool:
        """Whether a predicted mask is too large next to the object's last accepted mask (points
        that slid onto a look-alike background); a run of rejections is taken as real growth."""
        growth = self.config.decode.max_growth
        if growth <= 0 or track.last_good_mask is None or track.rejected >= _MAX_REJECTIONS:
            track.rejected = 0
            return False
        area = np.count_nonzero(logits > self.config.decode.merge_threshold)
        if area > growth * np.count_nonzero(track.last_good_mask):
            track.rejected += 1
            return True
        track.rejected = 0
        return False

    def _check_points(self, track: _Track, embedding: ImageEmbedding) -> None:
        """Drop visible positives on cells that look like background; add positives at the most
        object-like cells just outside the last mask (a part it lost), and, when too few
        positives are left, at the most object-like cells near where the object was last seen."""
        cfg = self.config.redetect
        score_map = track.score_map = track.appearance.score(embedding)
        positive = track.visible & (track.labels == 1)
        track.tracker_lost = positive.sum() < cfg.min_points
        off_object = positive & (score_map.at(track.xy) <= 0)
        track.visible = track.visible & ~off_object
        if cfg.grow_points and track.mask is not None and track.mask.any():
            reach = 0.25 * np.sqrt(np.count_nonzero(track.mask)) + 8
            self._add_positives(track, score_map.best_around(track.mask, reach, cfg.grow_points, cfg.grow_margin))
        if cfg.shrink_points and track.mask is not None and track.mask.any():
            self._add_positives(track, score_map.worst_inside(track.mask, cfg.shrink_points, cfg.shrink_margin), label=0)
        if (positive & ~off_object).sum() >= cfg.min_points or track.search_mask is None:
            return
        ys, xs = np.nonzero(track.search_mask)
        centre = np.array([xs.mean(), ys.mean()], np.float32)
        radius = cfg.search_radius * np.sqrt(len(xs)) + 50.0 + cfg.search_growth * track.empty_for
        self._add_positives(track, score_map.best_near(centre, radius, cfg.add_points))

    @staticmethod
    def _add_positives(track: _Track, xy: np.ndarray, label: int = 1) -> None:
        """Add visible points (positives, or negatives with ``label=0``)."""
        if len(xy):
            track.xy = np.concatenate([track.xy, xy])
            track.labels = np.concatenate([track.labels, np.full(len(xy), label, np.int32)])
            track.visible = np.concatenate([track.visible, np.ones(len(xy), bool)])
            track.lost_for = np.concatenate([track.lost_for, np.zeros(len(xy), np.int64)])
            track.seen_xy = np.concatenate([track.seen_xy, xy.astype(np.float32)])

    def _prompt_points(self, obj_id: int, tracks: dict[int, _Track]) -> tuple[np.ndarray, np.ndarray]:
        """The object's visible points, plus other objects' visible positives as negatives."""
        track = tracks[obj_id]
        xy, labels = track.xy[track.visible], track.labels[track.visible]
        if self.config.sampling.other_objects_as_negative:
            xy, labels = with_negatives(xy, labels, [t.visible_positives() for o, t in tracks.items() if o != obj_id])
        return xy, labels

    @staticmethod
    def _points_out(track: _Track, source: FrameSource) -> ObjectPoints:
        return ObjectPoints(xy=track.xy / source.scale, visible=track.visible.copy(), labels=track.labels.copy())


def with_negatives(xy: np.ndarray, labels: np.ndarray, others: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``xy``/``labels`` with the points ``others`` (other objects' positives) added as negatives."""
    others = [p for p in others if len(p)]
    if not others:
        return xy, labels
    extra = np.concatenate(others)
    return np.concatenate([xy, extra]), np.concatenate([labels, np.zeros(len(extra), np.int32)])


def merge_logits(logits: dict[int, np.ndarray], size: tuple[int, int], floor: float) -> np.ndarray:
    """Merge per-object logits into one label map: argmax over objects above ``floor``."""
    label_map = np.zeros(size, np.uint8)
    if not logits:
        return label_map
    if len(logits) == 1:
        # One object: its own threshold, without stacking and an argmax over one layer.
        ((obj_id, only),) = logits.items()
        label_map[only > floor] = obj_id
        return label_map
    ids = np.array(list(logits), np.uint8)
    stack = np.stack(list(logits.values()))
    best = stack.argmax(axis=0)
    foreground = np.take_along_axis(stack, best[None], axis=0)[0] > floor
    label_map[foreground] = ids[best[foreground]]
    return label_map


def _pieces(mask: np.ndarray, least: float) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """A bool mask's 8-connected pieces: the label map, each label's area in pixels (label 0 is
    the background), and the labels of the pieces of at least ``least`` pixels."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
    areas = stats[:, cv2.CC_STAT_AREA]
    return labels, areas, [piece for piece in range(1, count) if areas[piece] >= least]


def _either(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """The union of two optional masks."""
    if a is None or b is None:
        return b if a is None else a
    return a | b


def _as_logits(mask: np.ndarray) -> np.ndarray:
    """Logits for a mask taken as certain."""
    return np.where(mask, 1e4, -1e4).astype(np.float32)


def _shift_mask(mask: np.ndarray, step: np.ndarray) -> np.ndarray:
    """``mask`` moved by ``step = (dx, dy)`` pixels (what leaves the frame is lost)."""
    matrix = np.array([[1, 0, step[0]], [0, 1, step[1]]], np.float32)
    moved = cv2.warpAffine(mask.astype(np.uint8), matrix, (mask.shape[1], mask.shape[0]), flags=cv2.INTER_NEAREST)
    return moved > 0


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if mask.shape == size:
        return mask
    return cv2.resize(mask.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST) > 0
