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


def test_grow_takes_the_output_that_adds_the_object_and_not_the_one_that_adds_background() -> None:
    """The rider-without-the-bike case on a 4x4-cell score map (a cell: 4x4 low-res logits): the
    mask is the top-left cell; one output adds the two object-like cells to its right, a bigger
    one adds three background cells below, one loses half the mask. ``grow`` takes the first;
    with those cells scored as background it keeps the mask."""
    from samtrack.appearance import ScoreMap

    def output(iou: float, *which: tuple[int, int], half: bool = False) -> MaskPrediction:
        low_res = np.full((16, 16), -1.0, np.float32)
        for r, c in which:
            low_res[4 * r:4 * r + 4, 4 * c:4 * c + (2 if half else 4)] = 1.0
        return MaskPrediction(np.kron(low_res, np.ones((4, 4), np.float32)), iou, low_res)

    score = np.full((4, 4), -0.2, np.float32)
    score[0, 0:3] = 0.3
    look = ScoreMap(score=score, cell=(16.0, 16.0))
    options = [output(0.95, (0, 0)), output(0.9, (0, 0), (0, 1), (0, 2)), output(0.9, (0, 0), (1, 0), (2, 0), (3, 0)),
               output(0.99, (0, 0), half=True)]
    prediction = MaskPrediction(options[0].logits, 0.95, options[0].low_res_logits, candidates=options)
    config = DecodeConfig()
    assert select_candidate(prediction, "grow", None, look, config) is options[1]
    # A candidate under the IoU threshold is not taken, however much it adds.
    options[1].iou = 0.5
    assert select_candidate(prediction, "grow", None, look, config) is prediction
    options[1].iou = 0.9
    score[0, 1:3] = -0.1
    assert select_candidate(prediction, "grow", None, look, config) is prediction
    # Without appearance scores (redetect off) there is nothing to tell object from background.
    assert select_candidate(prediction, "grow", None, None, config) is prediction


def test_trim_takes_an_output_inside_the_mask_that_drops_background_cells() -> None:
    """The mask took in two background cells beside the object (a look-alike, an occluder): with
    ``trim_fraction`` an output that drops them replaces it, one that drops object cells does
    not, and growing comes first."""
    from samtrack.appearance import ScoreMap

    def output(iou: float, *which: tuple[int, int]) -> MaskPrediction:
        low_res = np.full((16, 16), -1.0, np.float32)
        for r, c in which:
            low_res[4 * r:4 * r + 4, 4 * c:4 * c + 4] = 1.0
        return MaskPrediction(np.kron(low_res, np.ones((4, 4), np.float32)), iou, low_res)

    score = np.full((4, 4), -0.2, np.float32)
    score[0, 0:2] = 0.3
    look = ScoreMap(score=score, cell=(16.0, 16.0))
    taken = ((0, 0), (0, 1), (1, 0), (1, 1))  # two object cells, two background ones
    alone, halved = output(0.9, (0, 0), (0, 1)), output(0.9, (0, 0), (1, 0))
    prediction = MaskPrediction(output(0.9, *taken).logits, 0.9, output(0.9, *taken).low_res_logits,
                                candidates=[output(0.9, *taken), alone, halved])
    assert select_candidate(prediction, "grow", None, look, DecodeConfig()) is prediction  # trimming off
    assert select_candidate(prediction, "grow", None, look, DecodeConfig(trim_fraction=0.3)) is alone
    prediction.candidates.append(output(0.9, *taken, (0, 2), (0, 3)))
    score[0, 2:4] = 0.3
    assert select_candidate(prediction, "grow", None, look, DecodeConfig(trim_fraction=0.3)) is prediction.candidates[-1]


def test_low_res_fraction_is_the_frame_masks_fraction() -> None:
    """A mask on SAM's low-res grid and the same mask at frame size (4 low-res px per 16-px cell)
    give the same object-like fraction and cell count."""
    from samtrack.appearance import ScoreMap

    rng = np.random.default_rng(0)
    look = ScoreMap(score=rng.normal(size=(6, 8)).astype(np.float32), cell=(16.0, 16.0))
    for _ in range(5):
        low_res = rng.random((24, 32)) < 0.4
        frame = np.kron(low_res, np.ones((4, 4), bool))
        assert look.low_res_fraction(low_res) == look.object_fraction(frame)


def test_multimask_is_off_and_said_where_the_segmenter_gives_one_mask_per_prompt() -> None:
    from samtrack.decoding import multimask_for

    said: list[str] = []
    one = Recorder()  # no all_outputs: one mask per prompt
    assert multimask_for(DecodeConfig(multimask="grow"), one, said.append).multimask == "off"
    assert len(said) == 1 and "decode.multimask=grow: off" in said[0] and "recorder" in said[0]
    one.all_outputs = True
    assert multimask_for(DecodeConfig(multimask="grow"), one, said.append).multimask == "grow"
    assert multimask_for(DecodeConfig(), Recorder(), said.append).multimask == "off" and len(said) == 1


def test_multimask_off_reads_as_the_word_from_yaml_and_set(tmp_path) -> None:
    """PyYAML reads a bare ``off`` as False: a choice among words takes it as the word."""
    from samtrack.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("decode:\n  multimask: off\nflow:\n  points: off\n")
    assert load_config(str(path)).decode.multimask == "off" and load_config(str(path)).flow.points == "off"
    assert load_config("samtrack", ["decode.multimask=grow", "decode.multimask=off"]).decode.multimask == "off"
