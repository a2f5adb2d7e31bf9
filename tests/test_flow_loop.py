"""The loop with dense flow on real frames: failure shapes of the default loop as issue 13 found
it (`before`: `samtrack` without `decode.multimask=grow`, `redetect.hide_fraction` and
`redetect.relearn_growth`) that the `quality` preset (the flow candidate, a shrink negative, the
look check, 16 positives, grow) fixes, one that the default's grow and trim fix, one that its
hiding fixes and one that its relearning fixes, with thresholds from measured numbers.

The loop feeds each mask into the next frame's points, so one trajectory on a short clip swings
with any small change (a seed, a 1e-4 difference in an upscaled logit): each slice is scored as
the mean over sampling seeds 0-2, and each docstring gives the per-seed numbers measured."""
from __future__ import annotations

import numpy as np
import pytest

from samtrack.api import VideoPredictor
from samtrack.config import load_config
from samtrack.segmenters import build_segmenter
from samtrack.segmenters.cache import EmbeddingCache
from samtrack.trackers import build_tracker

from .conftest import load_frame, load_gt
from .fakes import ArrayVideo

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def default_segmenter(mobilesam_checkpoint):
    """The default preset's segmenter (unpadded frames, the auto backend), as `eval davis` runs it:
    the loop feeds each mask into the next frame's points, so a 1e-6 difference in the
    embeddings can take it elsewhere on a long clip."""
    pytest.importorskip("torch")  # the unpadded graphs are exported from the PyTorch model
    return build_segmenter(load_config("samtrack").segmenter, log=lambda message: None)


# Label -> (preset, overrides).
CONFIGS = {"before": ("samtrack", ["decode.multimask=off", "redetect.hide_fraction=0", "redetect.relearn_growth=0",
                                   "redetect.collapse_fraction=0", "redetect.piece_ratio=0"]),
           "samtrack": ("samtrack", []), "quality": ("quality", []),
           "shown": ("samtrack", ["redetect.hide_fraction=0"]),
           "no_collapse": ("samtrack", ["redetect.collapse_fraction=0"]),
           "no_pieces": ("samtrack", ["redetect.piece_ratio=0"])}


def run_clip(davis16, segmenter, tmp_path, sequence: str, n: int, presets=("before", "quality"),
             start: int = 0) -> dict[str, np.ndarray]:
    """Per label of :data:`CONFIGS`: J ``[seed, frame]`` on frames 1..n-1 of a shared sequence's
    clip from frame ``start``, prompted by the clip's first ground truth, for each of ``SEEDS``
    (J = 1 where the truth and the mask are both empty, as DAVIS scores it)."""
    frames = [load_frame(davis16, sequence, start + t) for t in range(n)]
    truth = [load_gt(davis16, sequence, start + t) for t in range(n)]
    cached = EmbeddingCache(segmenter, tmp_path)  # every run decodes the same embeddings
    scores = {}
    for preset in presets:
        per_seed = []
        for seed in SEEDS:
            name, overrides = CONFIGS[preset]
            config = load_config(name, [*overrides, f"sampling.seed={seed}"])
            predictor = VideoPredictor(config, cached, build_tracker(config.tracker))
            state = predictor.init_state(ArrayVideo(frames))
            predictor.add_new_mask(state, 0, 1, truth[0])
            masks = {r.frame_index: r.mask(1) for r in predictor.propagate_in_video(state)}
            per_seed.append([(masks[t] & truth[t]).sum() / (masks[t] | truth[t]).sum() if (masks[t] | truth[t]).any() else 1.0
                             for t in range(1, n)])
        scores[preset] = np.array(per_seed)
    return scores


def test_a_part_without_points_is_kept_by_the_flow_mask_prompt(davis16, default_segmenter, tmp_path):
    """motocross-bumps, frames 0-58: as the bike lands from a jump (frames 40-57) the default
    loop drops its red front, which no point lands on (measured mean J there, seeds 0 / 1 / 2:
    0.621 / 0.713 / 0.620; with grow and trim: 0.608 / 0.573 / 0.569); prompting SAM with the
    previous frame's logits moved by the flow keeps it (`quality`: 0.794 / 0.800 / 0.846; before
    grow 0.689 / 0.862 / 0.858). The default now learns the look again as the bike comes closer
    (`redetect.relearn_growth`: its body, a few cells on frame 0, no longer looks like
    background) and keeps it too: 0.851 / 0.856 / 0.863. Frames 1-39 are alike for all (0.90)."""
    scores = run_clip(davis16, default_segmenter, tmp_path, "motocross-bumps", 59, ("before", "quality", "samtrack"))
    landing = {label: s[:, 39:57].mean() for label, s in scores.items()}  # frames 40-57
    assert landing["before"] < 0.70 and landing["quality"] > 0.76 and landing["samtrack"] > 0.80, landing
    assert scores["quality"][:, :38].mean() > 0.85 and scores["samtrack"][:, :38].mean() > 0.85


def test_clutter_a_small_dog_among_obstacles(davis16, default_segmenter, tmp_path):
    """dog-agility, all 25 frames: the dog runs between poles and bars; the default's mask takes
    in a bar or loses the dog's back half (measured mean J on frames 1-24, seeds 0 / 1 / 2:
    0.719 / 0.690 / 0.684, worst frames 0.48 / 0.31 / 0.00). The default's grow and trim keep the
    back half (`shown`, the default without hiding: 0.737 / 0.735 / 0.744, worst 0.54 / 0.57 /
    0.56; since far pieces are dropped, at seed 1 a background piece goes on frame 2 and the mask
    takes another path: 0.735, worst 0.45 on frame 4), `quality` too (0.763 / 0.732 / 0.755,
    worst 0.60 / 0.52 / 0.60). The default's hiding
    reports the dog hidden on frame 24 at seed 0, where the tracker kept 2 of its positives
    behind a bar and 65 % of the mask looks like it (J 0.65 -> 0, mean 0.710; DAVIS leaves the
    last frame out, so the sequence's score does not move); no other frame here."""
    scores = run_clip(davis16, default_segmenter, tmp_path, "dog-agility", 25, ("before", "shown", "samtrack", "quality"))
    assert scores["before"].mean() < 0.71
    assert scores["shown"].mean() > 0.725 and scores["quality"].mean() > 0.725
    worst = {label: s.min(axis=1).min() for label, s in scores.items()}
    assert min(worst["shown"], worst["quality"]) > 0.4 > worst["before"], worst
    hidden = np.argwhere(scores["samtrack"] != scores["shown"])
    assert len(hidden) <= 1 and (scores["samtrack"] <= scores["shown"]).all(), hidden


def test_fast_motion_in_smoke(davis16, default_segmenter, tmp_path):
    """drift-turn, frames 0-55: a drifting car in its own smoke. The default's points slide into
    the smoke as the car turns, and from frame 44 its mask keeps a shrinking piece of it
    (measured mean J on frames 44-55, seeds 0 / 1 / 2: 0.256 / 0.366 / 0.891; the default now,
    with grow and trim: 0.796 / 0.410 / 0.801); `quality` keeps the car at every seed (0.846 / 0.901 /
    0.837; before grow 0.253 / 0.657 / 0.783). The chaotic slice of the three: the seeds swing
    as much as the presets differ."""
    scores = run_clip(davis16, default_segmenter, tmp_path, "drift-turn", 56)
    late = scores["before"][:, 43:55].mean(axis=1), scores["quality"][:, 43:55].mean(axis=1)  # frames 44-55
    assert late[1].mean() > late[0].mean() + 0.04, late
    assert late[1][1] > late[0][1] + 0.2, late


def test_an_occluder_that_takes_the_points_hides_the_object(davis16, default_segmenter, tmp_path):
    """bmx-bumps, frames 48-75: a spectator walks in front of the camera and hides the rider
    (frames 60-74, the truth empty but on frame 61). LK loses the rider's points on the
    spectator, re-detection puts new ones on his dark jacket, and SAM segments a piece of it.
    Shown, those masks score 0 (measured mean J on frames 60-74, seeds 0 / 1 / 2: 0.269 / 0.469 /
    0.269); reported hidden because the tracker lost the rider and under 80 % of the mask looks
    like him (`redetect.hide_fraction`, the default): 0.736 / 0.803 / 0.803. Frames 49-59, the
    rider in view, are the same for both: hiding changes what is reported, not what is tracked."""
    scores = run_clip(davis16, default_segmenter, tmp_path, "bmx-bumps", 28, ("shown", "samtrack"), start=48)
    hidden = scores["shown"][:, 11:26].mean(axis=1), scores["samtrack"][:, 11:26].mean(axis=1)  # frames 60-74
    assert np.array_equal(scores["shown"][:, :11], scores["samtrack"][:, :11])
    assert hidden[1].mean() > hidden[0].mean() + 0.4 and (hidden[1] > hidden[0] + 0.25).all(), hidden


def test_a_mask_that_collapses_to_a_fragment_does_not_take_the_search_with_it(davis16, default_segmenter, tmp_path):
    """mallard-fly, the whole clip: at seed 1 the duck opens its wings on frame 52, their cells
    look like background, the look check drops 5 of the 6 tracked positives and SAM keeps a
    550 px fragment at the frame's edge, 235 px from the duck. Searched for around that
    fragment, the duck is never found again (measured mean J on frames 53-69, seeds 0 / 1 / 2:
    0.474 / 0.000 / 0.393). With the fragment taken as a collapse (`redetect.collapse_fraction`,
    the default), the search stays on frame 51's mask and finds the duck on frame 53: 0.474 /
    0.345 / 0.393. Seeds 0 and 2 never collapse, and their masks are the same."""
    scores = run_clip(davis16, default_segmenter, tmp_path, "mallard-fly", 70, ("no_collapse", "samtrack"))
    assert np.array_equal(scores["no_collapse"][[0, 2]], scores["samtrack"][[0, 2]])
    before, now = scores["no_collapse"][1, 52:69], scores["samtrack"][1, 52:69]  # frames 53-69
    assert before.max() < 0.05 and now.mean() > 0.25 and (now > 0.2).sum() >= 10, (before, now)


def test_a_far_look_alike_piece_is_dropped(davis16, default_segmenter, tmp_path):
    """bmx-bumps, frames 0-59: the rider leaves the frame on the left (frames 34-44), his points
    land on the red advertising banner and, at seed 2, on a red and white board; when he comes
    back (frame 45) the mask holds him and the board, 300 px apart, and the next frame's points,
    sampled from the whole mask, keep both (measured mean J on frames 46-57, seeds 0 / 1 / 2:
    0.851 / 0.846 / 0.393). The board's cells look like the rider (80 % object-like) but less so
    (mean score 0.03-0.07 against his 0.13-0.25): with the far, weaker piece dropped
    (`redetect.piece_ratio`, the default), 0.851 / 0.783 / 0.848; over frames 1-59 0.500 /
    0.471 / 0.367 -> 0.500 / 0.481 / 0.483."""
    scores = run_clip(davis16, default_segmenter, tmp_path, "bmx-bumps", 60, ("no_pieces", "samtrack"))
    assert np.array_equal(scores["no_pieces"][0], scores["samtrack"][0])
    board = scores["no_pieces"][:, 45:57].mean(axis=1), scores["samtrack"][:, 45:57].mean(axis=1)  # frames 46-57
    assert board[0][2] < 0.5 and board[1][2] > 0.75, board
    assert scores["samtrack"].mean() > scores["no_pieces"].mean() + 0.03, (scores["samtrack"].mean(axis=1),
                                                                          scores["no_pieces"].mean(axis=1))
