"""The oracle and copy-first-mask reference points of `samtrack eval davis --method`."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from samtrack.api import VideoPredictor
from samtrack.cli import main

from .fakes import COLOURS, BlobSegmenter, ColourTracker

N, H, W = 8, 48, 64


def make_davis(root, occluded=range(0)):
    """One 2017-style sequence: two squares moving apart; an optional grey band hides square 1."""
    for sub in ("JPEGImages/480p/pair", "Annotations/480p/pair"):
        (root / sub).mkdir(parents=True)
    for t in range(N):
        frame = np.full((H, W, 3), 30, np.uint8)
        labels = np.zeros((H, W), np.uint8)
        for obj_id, (x, y) in {1: (4 + 2 * t, 10), 2: (40 - 2 * t, 26)}.items():
            frame[y : y + 12, x : x + 12] = COLOURS[obj_id]
            labels[y : y + 12, x : x + 12] = obj_id
        if t in occluded:
            frame[:, :30] = 128
        # PNG frames: lossless, so the colour-keyed fakes see exact colours.
        Image.fromarray(frame).save(root / "JPEGImages/480p/pair" / f"{t:05d}.png")
        png = Image.fromarray(labels, mode="P")
        png.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9))
        png.save(root / "Annotations/480p/pair" / f"{t:05d}.png")
    (root / "seqs.txt").write_text("pair\n")
    return root


@pytest.fixture
def fake_models(monkeypatch):
    monkeypatch.setattr(
        VideoPredictor, "from_config",
        classmethod(lambda cls, config, overrides=(), log=print: cls(config, BlobSegmenter(), ColourTracker())),
    )


def scores(out):
    with open(out / "per-sequence_results-seqs.csv") as f:
        rows = [line.strip().split(",") for line in f][1:]
    return {name: (float(j), float(fm)) for name, j, fm in rows}


def run_method(root, out, method):
    return main(["eval", "davis", "--root", str(root), "--year", "2017", "--split", str(root / "seqs.txt"),
                 "--out", str(out), "--quiet", "--method", method, "--set", "sampling.n_positive=3",
                 "--set", "decode.refine_iters=0"])


def test_oracle_is_perfect_with_an_exact_segmenter_and_copy_is_not(tmp_path, fake_models):
    root = make_davis(tmp_path / "davis")
    assert run_method(root, tmp_path / "oracle", "oracle") == 0
    assert run_method(root, tmp_path / "copy", "copy") == 0
    oracle, copy = scores(tmp_path / "oracle"), scores(tmp_path / "copy")
    assert oracle == {"pair_1": (1.0, 1.0), "pair_2": (1.0, 1.0)}
    assert all(j < 0.5 for j, _ in copy.values())  # the squares move 2 px a frame, 12 px wide


def test_oracle_does_not_see_the_future_of_an_object_that_disappears(tmp_path, fake_models):
    # With square 1 hidden on frames 3-5 the oracle has no ground truth for it there (DAVIS
    # annotations still mark it): its masks are empty, so J drops, proving it decodes per frame.
    root = make_davis(tmp_path / "davis", occluded=range(3, 6))
    assert run_method(root, tmp_path / "oracle", "oracle") == 0
    j1, _ = scores(tmp_path / "oracle")["pair_1"]
    assert j1 < 0.7
    assert scores(tmp_path / "oracle")["pair_2"][0] == 1.0


def test_methods_do_not_resume_each_other(tmp_path, fake_models, capsys):
    root = make_davis(tmp_path / "davis")
    assert run_method(root, tmp_path / "out", "copy") == 0
    code = main(["eval", "davis", "--root", str(root), "--year", "2017", "--split", str(root / "seqs.txt"),
                 "--out", str(tmp_path / "out"), "--quiet", "--method", "oracle", "--resume"])
    assert code == 2 and "another config" in capsys.readouterr().err
