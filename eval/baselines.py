"""Reference points for the tracking loop: the floor (copy the first mask) and the ceiling (an
oracle that prompts SAM on every frame with points sampled from that frame's ground truth).

Both use what the pipeline uses (the oracle: its sampler, decoder passes and merge), so that a
loop's score can be placed between them on the same sequences.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..decoding import ObjectPrompt
from ..pipeline import SamPt, merge_logits, with_negatives
from ..video import open_video


def copy_first_mask(first: np.ndarray, n_frames: int) -> Iterator[tuple[int, np.ndarray]]:
    """The first frame's label map on every frame: what a method that never moves scores."""
    for index in range(n_frames):
        yield index, first


def oracle(pipeline: SamPt, frames: str | Path, ground_truth: Iterable[np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
    """Per frame, each object's query points sampled from that frame's ground truth, then decoded.

    Args:
        pipeline: supplies the segmenter, the sampler settings and the decoder passes.
        frames: the sequence's frames (a folder or a video).
        ground_truth: uint8 label maps (0 background, k object k), one per frame, in order.

    The first frame is the given mask itself, as in the pipeline. Other objects' sampled
    positives are this object's negatives, as in the pipeline.
    """
    config = pipeline.config
    rng = np.random.default_rng(config.sampling.seed)
    reader = open_video(frames)
    try:
        for index, labels in enumerate(ground_truth):
            if index == 0:
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
                    requests[obj_id] = ObjectPrompt(xy, lab)
                logits = {o: p.logits for o, p in pipeline.passes.run(embedding, requests).items()}
            yield index, merge_logits(logits, labels.shape, config.decode.merge_threshold)
    finally:
        reader.close()
