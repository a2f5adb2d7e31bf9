"""Candidate masks and their selector (samtrack.decoding.choose), the flow candidate in one
batch, shrink points (ScoreMap.worst_inside) and the oracle's prompt variants."""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest

from samtrack.appearance import ScoreMap
from samtrack.config import DecodeConfig
from samtrack.decoding import DecodePasses, FlowCandidate, ObjectPrompt, choose
from samtrack.eval.baselines import _oracle_prompt
from samtrack.segmenters import ImageEmbedding, MaskPrediction

from .test_decoding import Recorder, _prediction


def _square(x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((40, 40), bool)
    mask[10:20, x0:x1] = True
    return mask


@pytest.mark.parametrize("select, expected", [("flow", "flow"), ("agreement", "loop"), ("iou", "flow"),
                                              ("sum", "loop"), ("look", "flow"), ("all", "flow")])
def test_choose_by_each_rule(select, expected):
    warped = _square(0, 10)
    loop = _prediction(_square(0, 10), 0.80)  # agrees with the moved mask
    flow = _prediction(_square(5, 15), 0.90)  # half of it; predicted higher
    # The flow candidate's cells look like the object, the loop's do not.
    look = lambda mask: 1.0 if mask[10, 14] else -1.0  # noqa: E731
    picked = choose(loop, flow, FlowCandidate(warped, None, None, select, look))
    assert picked is (flow if expected == "flow" else loop)


@pytest.mark.parametrize("select", ["iou", "flow"])
def test_flow_candidates_of_all_objects_are_one_batch(select):
    segmenter = Recorder()
    passes = DecodePasses(segmenter, DecodeConfig(use_negative_pass=False, refine_iters=0), lambda name: nullcontext())
    objects = {}
    for obj_id, x in ((1, 2), (2, 20)):
        prior = np.zeros((4, 4), np.float32)
        objects[obj_id] = ObjectPrompt(np.array([[x, 12.0]], np.float32), np.array([1]),
                                       flow=FlowCandidate(_square(x, x + 10), None, prior, select))
    out = passes.run(ImageEmbedding(None, (40, 40), (40, 40)), objects)
    if select == "flow":  # the candidate is taken whatever the loop gives: its passes are skipped
        assert [len(c) for c in segmenter.calls] == [2]
    else:  # the loop's pass, then both candidates
        assert [len(c) for c in segmenter.calls] == [2, 2]
    assert all(p.mask_input is not None for p in segmenter.calls[-1])
    assert set(out) == {1, 2}


def test_worst_inside_finds_background_cells_the_mask_covers():
    score = np.ones((4, 4), np.float32)
    score[1, 2] = -0.5  # a hole the mask filled
    score[3, 3] = -0.9  # background outside the mask
    scores = ScoreMap(score=score, cell=(10.0, 10.0))
    mask = np.zeros((40, 40), bool)
    mask[0:30, 0:30] = True
    np.testing.assert_allclose(scores.worst_inside(mask, 2), [[25.0, 15.0]])
    assert len(scores.worst_inside(mask, 2, margin=0.6)) == 0
    assert scores.mean_inside(mask) == pytest.approx((8 * 1.0 - 0.5) / 9)


def test_oracle_prompt_variants():
    truth, before = _square(5, 15), _square(0, 10)
    xy, labels = np.array([[8.0, 12.0], [30.0, 30.0]], np.float32), np.array([1, 0])
    embedding = ImageEmbedding(np.zeros((1, 256, 4, 4), np.float32), (40, 40), (64, 64))
    box = _oracle_prompt("box", xy, labels, truth, before, embedding)
    assert len(box.xy) == 0 and box.box.tolist() == [5, 10, 14, 19] and box.prior is None
    both = _oracle_prompt("box+points", xy, labels, truth, before, embedding)
    assert len(both.xy) == 2 and both.box is not None
    masked = _oracle_prompt("points+mask", xy, labels, truth, before, embedding)
    assert masked.box is None and masked.prior.shape == (16, 16)
    # The previous frame's truth (columns 0-9 of 40 -> 0-3 of the 16 low-res cells) is the prompt.
    assert (masked.prior[:, :4] > 0).any() and (masked.prior[:, 6:] < 0).all()


def test_oracle_prompt_needs_the_oracle(tmp_path, capsys):
    from samtrack.cli import main

    code = main(["eval", "davis", "--root", str(tmp_path), "--split", "val", "--out", str(tmp_path / "out"),
                 "--oracle-prompt", "box"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == ["samtrack: error: --oracle-prompt box needs --method oracle"]
