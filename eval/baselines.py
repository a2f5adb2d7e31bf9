"""Reference points for the tracking loop: the floor (copy the first mask) and the ceiling (an
oracle that prompts SAM on every frame with points sampled from that frame's ground truth).

Both use what the pipeline uses (the oracle: its sampler, decoder passes and merge), so that a
loop's score can be placed between them on the same sequences.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..decoding import DecodePasses, ObjectPrompt, mask_box
from ..flow import mask_as_prompt
from ..pipeline import SamPt, merge_logits, with_negatives
from ..segmenters import ImageEmbedding
from ..video import open_video


def copy_first_mask(first: np.ndarray, n_frames: int) -> Iterator[tuple[int, np.ndarray]]:
    """The first frame's label map on every frame: what a method that never moves scores."""
    for index in range(n_frames):
        yield index, first


ORACLE_PROMPTS = ("points", "box", "box+points", "points+mask", "box+points+mask", "multimask")


def oracle(pipeline: SamPt, frames: str | Path, ground_truth: Iterable[np.ndarray],
           prompt: str = "points") -> Iterator[tuple[int, np.ndarray]]:
    """Per frame, each object prompted from that frame's ground truth, then decoded.

    Args:
        pipeline: supplies the segmenter, the sampler settings and the decoder passes.
        frames: the sequence's frames (a folder or a video).
        ground_truth: uint8 label maps (0 background, k object k), one per frame, in order.
        prompt: what each object is prompted with (:data:`ORACLE_PROMPTS`): ``points`` sampled
            from its mask; its tight ``box`` alone; ``box+points``; ``points+mask``: points plus
            the previous frame's ground truth as SAM's mask prompt (what a loop that kept last
            frame's mask perfectly would give it); ``box+points+mask``; ``multimask``: points,
            and of all SAM's outputs the one closest to the truth (needs a segmenter that gives
            them all, the PyTorch one).

    The first frame is the given mask itself, as in the pipeline. Other objects' sampled
    positives are this object's negatives, as in the pipeline.
    """
    if prompt not in ORACLE_PROMPTS:
        raise ValueError(f"prompt must be one of {ORACLE_PROMPTS}, got {prompt!r}")
    config = pipeline.config
    passes = pipeline.passes
    if prompt == "multimask":
        # The candidate that overlaps the "previous" mask best, given the truth as that mask.
        passes = DecodePasses(pipeline.segmenter, replace(config.decode, multimask="consistent"), pipeline.timings.measure)
    rng = np.random.default_rng(config.sampling.seed)
    reader = open_video(frames)
    before = None
    try:
        for index, labels in enumerate(ground_truth):
            if index == 0:
                before = labels
                yield index, labels
                continue
            image = reader.read(index)
            points = {}
            for obj_id in (int(i) for i in np.unique(labels) if i != 0):
                with pipeline.timings.measure("sampling"):
                    points[obj_id] = pipeline.sampler.sample(labels == obj_id, image, rng)
            logits = {}
            if points:
                with pipeline.timings.measure("encoder"):
                    embedding = pipeline.segmenter.encode(image)
                requests = {}
                for obj_id, (xy, lab) in points.items():
                    if config.sampling.other_objects_as_negative:
                        others = [pts[labs == 1] for o, (pts, labs) in points.items() if o != obj_id]
                        xy, lab = with_negatives(xy, lab, others)
                    requests[obj_id] = _oracle_prompt(prompt, xy, lab, labels == obj_id, before == obj_id, embedding)
                logits = {o: p.logits for o, p in passes.run(embedding, requests).items()}
            before = labels
            yield index, merge_logits(logits, labels.shape, config.decode.merge_threshold)
    finally:
        reader.close()


def _oracle_prompt(prompt: str, xy: np.ndarray, labels: np.ndarray, truth: np.ndarray, before: np.ndarray,
                   embedding: ImageEmbedding) -> ObjectPrompt:
    """One object's oracle prompt: ``truth`` is its mask on this frame, ``before`` on the one before."""
    box = mask_box(truth) if "box" in prompt else None
    if prompt == "box" and box is not None:
        xy, labels = np.zeros((0, 2), np.float32), np.zeros(0, np.int32)
    prior = None
    if "mask" in prompt.split("+") and before.any():
        prior = mask_as_prompt(before, embedding)
    return ObjectPrompt(xy, labels, box, prior, previous=truth)
