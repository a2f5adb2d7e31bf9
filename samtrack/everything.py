"""Track everything: the automatic masks of a frame become the objects, and many objects' masks
are written as COCO run-length encodings in a YouTube-VIS style results file.

- :func:`objects_from_masks`: automatic masks (:mod:`samtrack.automask`) -> non-overlapping
  object prompts. The pipeline keeps one label per pixel, so overlaps are resolved before
  tracking: masks are painted largest first, so a part found inside a whole stays its own object
  and the whole keeps the rest; a mask left with fewer than ``min_area`` pixels is dropped.
- :class:`InstanceRecorder`: per object, one RLE per processed frame and a score; writes
  ``instances.json``.

**Score of an object** (what ranks tubes for AP): the mean, over the processed frames where the
object's mask is not empty, of the segmenter's predicted IoU for it on that frame (on the frame
the automatic masks came from: the automatic mask's predicted IoU). An object empty on every
frame scores 0.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .automask import AutoMask, AutoMaskGenerator
from .config import EverythingConfig
from .errors import ConfigError
from .outputs import atomic_write, encode_rle
from .prompts import FramePrompt, ObjectPrompts
from .segmenters import Segmenter

MAX_OBJECTS = 254  # label maps hold ids 1-254 (255 is DAVIS's void)
INSTANCES_VERSION = 1


@dataclass
class FoundObject:
    """One object found by the automatic masks: its prompt and the mask's predicted IoU."""

    prompt: ObjectPrompts
    predicted_iou: float


def objects_from_masks(masks: Sequence[AutoMask], frame: int, max_objects: int, min_area: int) -> list[FoundObject]:
    """The ``max_objects`` masks of highest predicted IoU, made disjoint (largest painted first,
    smaller ones over it), those still of ``min_area`` pixels or more, as objects 1, 2, ... in
    order of predicted IoU."""
    if not 1 <= max_objects <= MAX_OBJECTS:
        raise ConfigError(f"everything.max_objects must be in [1, {MAX_OBJECTS}], got {max_objects}")
    chosen = sorted(masks, key=lambda m: -m.predicted_iou)[:max_objects]
    if not chosen:
        return []
    labels = np.zeros(chosen[0].segmentation.shape, np.int32)
    for index in sorted(range(len(chosen)), key=lambda i: -chosen[i].area):
        labels[chosen[index].segmentation] = index + 1
    found = []
    for index, m in enumerate(chosen):
        mask = labels == index + 1
        if np.count_nonzero(mask) < min_area:
            continue
        obj_id = len(found) + 1
        prompt = FramePrompt(frame=frame, points=np.zeros((0, 2), np.float32), labels=np.zeros(0, np.int32), mask=mask)
        found.append(FoundObject(ObjectPrompts(obj_id=obj_id, name=None, prompts=[prompt]), m.predicted_iou))
    return found


def find_objects(segmenter: Segmenter, image: np.ndarray, frame: int, config: EverythingConfig,
                 log: Callable[[str], None] = print) -> list[FoundObject]:
    """Run the automatic mask generator on ``image`` (frame ``frame``) and make objects of it."""
    masks = AutoMaskGenerator(segmenter, config.automask, log=log).generate(image)
    found = objects_from_masks(masks, frame, config.max_objects, config.min_area)
    log(f"everything: {len(masks)} automatic masks on frame {frame}, {len(found)} object(s) tracked")
    return found


class InstanceRecorder:
    """Collects every object's mask (as RLE) and predicted IoU on every processed frame.

    Args:
        obj_ids: the objects, in the order they are written.
        first_scores: object id -> score on its prompt frame (the automatic mask's predicted IoU;
            the pipeline decodes nothing there).
    """

    def __init__(self, obj_ids: Sequence[int], first_scores: Mapping[int, float] | None = None) -> None:
        self.obj_ids = list(obj_ids)
        self.first_scores = dict(first_scores or {})
        self.frames: list[int] = []
        self._rles: dict[int, list[dict | None]] = {i: [] for i in self.obj_ids}
        self._scores: dict[int, list[float]] = {i: [] for i in self.obj_ids}

    def add(self, result) -> None:
        """Record one :class:`~samtrack.pipeline.FrameResult` (frames in processing order)."""
        self.frames.append(int(result.frame_index))
        present = set(np.unique(result.label_map).tolist())
        for obj_id in self.obj_ids:
            if obj_id not in present:
                self._rles[obj_id].append(None)
                continue
            self._rles[obj_id].append(encode_rle(result.label_map == obj_id))
            score = result.scores.get(obj_id, self.first_scores.get(obj_id))
            if score is not None:
                self._scores[obj_id].append(float(score))

    def score(self, obj_id: int) -> float:
        """Mean predicted IoU over the frames where the object is present (0 if never)."""
        scores = self._scores[obj_id]
        return float(np.mean(scores)) if scores else 0.0

    def results(self, video_id: Any = 1, category_id: int = 1) -> list[dict[str, Any]]:
        """YouTube-VIS results: one entry per object that is present on some frame."""
        return [{"video_id": video_id, "category_id": category_id, "score": round(self.score(i), 6),
                 "segmentations": self._rles[i], "obj_id": i}
                for i in self.obj_ids if any(r is not None for r in self._rles[i])]

    def write(self, path: str | Path, video: Mapping[str, Any]) -> None:
        """``instances.json``: ``{"version", "video", "frames", "results"}``; ``results`` is a
        YouTube-VIS results list (``video_id`` 1, ``category_id`` 1, ``score``, ``segmentations``
        one per entry of ``frames``, plus our ``obj_id``, the object's id in the PNGs)."""
        with atomic_write(path, "w") as f:
            json.dump({"version": INSTANCES_VERSION, "video": dict(video), "frames": self.frames,
                       "results": self.results()}, f, separators=(",", ":"))
