"""The decoder passes, batched over objects (samtrack.decoding), on a recording fake segmenter."""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np

from samtrack.config import DecodeConfig
from samtrack.decoding import DecodePasses, ObjectPrompt, select_candidate
from samtrack.segmenters import MaskPrediction


def _prediction(mask: np.ndarray, iou: float) -> MaskPrediction:
    return MaskPrediction(logits=np.where(mask, 1.0, -1.0).astype(np.float32), iou=iou,
                          low_res_logits=np.zeros((4, 4), np.float32))


class Recorder:
    """Answers every prompt with a 10x10 square at its first point and records each call."""

    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[list] = []

    def decode_batch(self, embedding, prompts, candidates=False):
        self.calls.append(list(prompts))
        out = []
        for p in prompts:
            mask = np.zeros((40, 40), bool)
            x, y = (p.points[0] if p.points is not None else p.box[:2]).astype(int)
            mask[y:y + 10, x:x + 10] = True
            out.append(_prediction(mask, 0.9))
        return out


def test_pass_k_of_every_object_is_one_call() -> None:
    """Two objects with negatives (two passes each) and one without: 2 calls of 3 then 2 prompt
    sets; one refinement pass adds a third call for all three."""
    segmenter = Recorder()
    with_negative = lambda x: ObjectPrompt(np.array([[x, 5.0], [30.0, 30.0]], np.float32), np.array([1, 0]))  # noqa: E731
    objects = {1: with_negative(2.0), 2: with_negative(12.0),
               3: ObjectPrompt(np.array([[20.0, 20.0]], np.float32), np.array([1]))}
    passes = DecodePasses(segmenter, DecodeConfig(refine_iters=1, iou_threshold=0.5), lambda stage: nullcontext())
    results = passes.run(None, objects)
    assert [len(c) for c in segmenter.calls] == [3, 2, 3]
    # Pass 1 holds only the positives of the two-pass objects; pass 2 feeds back pass 1's logits.
    assert [len(p.points) for p in segmenter.calls[0]] == [1, 1, 1]
    assert all(p.mask_input is not None and len(p.points) == 2 for p in segmenter.calls[1])
    assert all(p.box is not None for p in segmenter.calls[2])
    assert set(results) == {1, 2, 3}


def test_select_candidate() -> None:
    def square(y: int) -> np.ndarray:
        mask = np.zeros((20, 20), bool)
        mask[y:y + 5, 0:5] = True
        return mask

    options = [_prediction(square(0), 0.95), _prediction(square(5), 0.6), _prediction(square(10), 0.8),
               _prediction(square(15), 0.7)]
    prediction = MaskPrediction(options[0].logits, 0.95, options[0].low_res_logits, candidates=options)
    # best_iou is SAM's predictor rule: among the three multimask outputs only.
    assert select_candidate(prediction, "best_iou", None) is options[2]
    assert select_candidate(prediction, "consistent", square(15)) is options[3]
    assert select_candidate(prediction, "consistent", None) is prediction
