"""samtrack.automask against the official SamAutomaticMaskGenerator (golden fixture made by
tools/automask_reference/make_golden.py on the fake SAM of automask_fake.py), its pieces on
their own, and a real frame with the MobileSAM weights."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from samtrack import automask
from samtrack.config import AutoMaskConfig
from .automask_fake import FakeSegmenter, make_scene

GOLDEN = Path(__file__).parent / "fixtures" / "automask_golden" / "cases.npz"
CASES = ("defaults", "small_regions", "crops", "two_layers", "no_thresholds")


@pytest.fixture(scope="module")
def golden():
    return np.load(GOLDEN)


@pytest.mark.parametrize("case", CASES)
def test_same_masks_as_the_official_generator(golden, case):
    image = golden[f"{case}/image"]
    assert np.array_equal(image, make_scene(*image.shape[:2], seed=CASES.index(case)))
    config = AutoMaskConfig(**json.loads(str(golden[f"{case}/config"])))
    masks = automask.AutoMaskGenerator(FakeSegmenter(), config, log=lambda m: None).generate(image)
    want = np.unpackbits(golden[f"{case}/masks"], axis=-1, count=image.shape[1]).astype(bool)
    assert len(masks) == len(want) > 0
    for i, m in enumerate(masks):
        assert np.array_equal(m.segmentation, want[i]), (case, i)
    assert [m.area for m in masks] == golden[f"{case}/area"].tolist()
    assert [m.bbox for m in masks] == golden[f"{case}/bbox"].tolist()
    assert [m.crop_box for m in masks] == golden[f"{case}/crop_box"].tolist()
    np.testing.assert_array_equal([m.predicted_iou for m in masks], golden[f"{case}/predicted_iou"])
    np.testing.assert_array_equal([m.stability_score for m in masks], golden[f"{case}/stability_score"])
    np.testing.assert_array_equal([m.point for m in masks], golden[f"{case}/point_coords"])


def test_every_branch_is_exercised(golden):
    """The fixture's cases must each make the filters do something (else equality proves
    little)."""
    image = golden["crops/image"]
    config = AutoMaskConfig(**json.loads(str(golden["crops/config"])))
    seg = FakeSegmenter()
    masks = automask.AutoMaskGenerator(seg, config, log=lambda m: None).generate(image)
    assert len(seg.encoded) == 5 and len({tuple(m.crop_box) for m in masks}) > 1  # masks from crops too
    # holes filled / islands dropped: some output differs from the raw region of its point
    cleaned = automask.AutoMaskGenerator(FakeSegmenter(), AutoMaskConfig(**{**json.loads(str(golden["small_regions/config"])), "min_mask_region_area": 0}),
                                         log=lambda m: None).generate(golden["small_regions/image"])
    assert {m.area for m in cleaned} != set(golden["small_regions/area"].tolist())


def test_one_mask_per_point_segmenter_is_said_and_works():
    lines = []
    image = make_scene(80, 100, seed=5)
    masks = automask.AutoMaskGenerator(FakeSegmenter(multimask=False), AutoMaskConfig(points_per_side=8),
                                       log=lines.append).generate(image)
    assert len(lines) == 1 and "one mask per point" in lines[0]
    assert masks and all(m.segmentation.shape == (80, 100) for m in masks)


def test_point_grid_and_crops_match_sam_geometry():
    grid = automask.point_grid(4)
    assert grid.shape == (16, 2) and np.allclose(grid[:4, 0], [0.125, 0.375, 0.625, 0.875]) and np.all(grid[:4, 1] == 0.125)
    boxes = automask.crop_boxes((480, 854), 1, 512 / 1500)
    assert boxes[0] == ([0, 0, 854, 480], 0) and len(boxes) == 5 and all(layer == 1 for _, layer in boxes[1:])
    assert boxes[1][0][:2] == [0, 0] and boxes[-1][0][2:] == [854, 480]


def test_box_nms():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    scores = np.array([0.5, 0.9, 0.8, 0.5])
    assert automask.box_nms(boxes, scores, 0.7).tolist() == [1, 2]
    assert automask.box_nms(boxes, scores, 0.95).tolist() == [1, 2, 0]  # ties: input order
    assert automask.box_nms(np.zeros((0, 4)), np.zeros(0), 0.7).tolist() == []


def test_remove_small_regions():
    mask = np.zeros((20, 20), bool)
    mask[2:15, 2:15] = True
    mask[5, 5] = False  # a 1-px hole
    mask[18, 18] = True  # a 1-px island
    filled, changed = automask.remove_small_regions(mask, 4, "holes")
    assert changed and filled[5, 5] and filled[18, 18]
    cut, changed = automask.remove_small_regions(filled, 4, "islands")
    assert changed and not cut[18, 18] and cut.sum() == 13 * 13
    assert automask.remove_small_regions(cut, 4, "islands") == (cut, False)
    tiny = np.zeros((10, 10), bool)
    tiny[1, 1] = tiny[5, 5] = tiny[5, 6] = True
    kept, _ = automask.remove_small_regions(tiny, 10, "islands")  # all small: the largest stays
    assert kept.sum() == 2 and kept[5, 5]


def test_real_frame_mobilesam(segmenter, davis16):
    """MobileSAM (ONNX) on examples/bear.mp4's first frame: the bear (DAVIS's mask) is among
    the masks."""
    from .conftest import REPO, load_gt
    from samtrack.video import open_video

    frame = open_video(REPO / "examples" / "bear.mp4").read(0)
    bear = load_gt(davis16, "bear", 0)
    assert frame.shape[:2] == bear.shape
    masks = automask.AutoMaskGenerator(segmenter, AutoMaskConfig(points_per_side=8), log=lambda m: None).generate(frame)
    assert 3 <= len(masks) <= 64
    best = max(np.count_nonzero(m.segmentation & bear) / np.count_nonzero(m.segmentation | bear) for m in masks)
    assert best > 0.7  # measured 0.787 (8 x 8 grid; the DAVIS mask is not drawn on the mp4 frame)
    assert all(m.predicted_iou > 0.88 and m.stability_score >= 0.95 for m in masks)


def test_real_frame_pytorch_mobilesam_all_three_outputs(mobilesam_torch_checkpoint, davis16):
    """The PyTorch MobileSAM gives all three multimask outputs per point (the official path):
    at least as many masks as the one-per-point ONNX decoder, the bear among them."""
    import os

    if os.environ.get("SAMTRACK_REQUIRE_TORCH") != "1":
        pytest.importorskip("torch", reason="the torch extra is not installed")
    from samtrack.segmenters.sam.build import build_sam
    from samtrack.segmenters.sam_torch import SamTorch

    from .conftest import REPO, load_gt
    from samtrack.video import open_video

    frame = open_video(REPO / "examples" / "bear.mp4").read(0)
    bear = load_gt(davis16, "bear", 0)
    lines = []
    seg = SamTorch(build_sam("mobilesam", mobilesam_torch_checkpoint), "mobilesam", max_batch=64)
    masks = automask.AutoMaskGenerator(seg, AutoMaskConfig(points_per_side=8), log=lines.append).generate(frame)
    assert not lines  # no one-mask-per-point notice
    best = max(np.count_nonzero(m.segmentation & bear) / np.count_nonzero(m.segmentation | bear) for m in masks)
    assert best > 0.7 and len(masks) >= 3


def test_real_frame_unpadded_onnx_all_three_outputs(davis16):
    """mobilesam-onnx on unpadded frames (the default where the torch extra exports its graphs)
    gives all of SAM's outputs, so the generator keeps three per point as the official one: no
    one-mask-per-point notice, more masks than points, the bear among them."""
    pytest.importorskip("torch", reason="the unpadded graphs are exported from the PyTorch model")
    from samtrack.config import load_config
    from samtrack.segmenters import build_segmenter
    from samtrack.segmenters.base import gives_all_outputs

    from .conftest import REPO, load_gt
    from samtrack.video import open_video

    segmenter = build_segmenter(load_config("samtrack", ["segmenter.unpadded=true"]).segmenter, log=lambda m: None)
    assert gives_all_outputs(segmenter)
    frame = open_video(REPO / "examples" / "bear.mp4").read(0)
    bear = load_gt(davis16, "bear", 0)
    lines = []
    config = AutoMaskConfig(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    masks = automask.AutoMaskGenerator(segmenter, config, log=lines.append).generate(frame)
    assert not lines and len(masks) > 64  # up to 3 per point with nothing filtered
    best = max(np.count_nonzero(m.segmentation & bear) / np.count_nonzero(m.segmentation | bear) for m in masks)
    assert best > 0.7
