"""Track everything: automatic masks -> objects, instances.json (COCO RLE, YouTube-VIS style),
`samtrack run --everything` end to end on a clip of coloured squares with exact fakes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from samtrack.automask import AutoMask
from samtrack.cli import main
from samtrack.errors import ConfigError
from samtrack.everything import InstanceRecorder, objects_from_masks
from samtrack.outputs import read_label_png
from samtrack.pipeline import FrameResult

from .fakes import COLOURS, BlobSegmenter, ColourTracker


def _auto(mask: np.ndarray, iou: float) -> AutoMask:
    return AutoMask(segmentation=mask, area=int(mask.sum()), bbox=[0, 0, 0, 0], predicted_iou=iou, point=[0.0, 0.0],
                    stability_score=1.0, crop_box=[0, 0, 0, 0])


def test_objects_from_masks_are_disjoint_ranked_and_capped():
    whole = np.zeros((50, 50), bool)
    whole[5:45, 5:45] = True
    part = np.zeros((50, 50), bool)
    part[10:20, 10:20] = True
    speck = np.zeros((50, 50), bool)
    speck[47:49, 47:49] = True
    found = objects_from_masks([_auto(whole, 0.9), _auto(part, 0.95), _auto(speck, 0.99)], frame=3,
                               max_objects=10, min_area=20)
    assert [f.predicted_iou for f in found] == [0.95, 0.9]  # the speck is too small
    masks = [f.prompt.prompts[0].mask for f in found]
    assert [f.prompt.obj_id for f in found] == [1, 2] and found[0].prompt.prompts[0].frame == 3
    assert np.array_equal(masks[0], part) and np.array_equal(masks[1], whole & ~part)  # the part stays on top
    assert len(objects_from_masks([_auto(whole, 0.9), _auto(part, 0.95)], 0, max_objects=1, min_area=1)) == 1
    with pytest.raises(ConfigError):
        objects_from_masks([], 0, max_objects=255, min_area=1)


def test_instance_recorder_scores_and_rle():
    a = np.zeros((8, 8), np.uint8)
    a[1:3, 1:3] = 1
    a[5:7, 5:7] = 2
    b = np.zeros((8, 8), np.uint8)
    b[2:4, 2:4] = 1
    rec = InstanceRecorder([1, 2, 3], first_scores={1: 0.8, 2: 0.6, 3: 0.9})
    rec.add(FrameResult(frame_index=0, label_map=a, points={}, scores={}))
    rec.add(FrameResult(frame_index=1, label_map=b, points={}, scores={1: 0.9, 2: 0.1}))
    assert rec.score(1) == pytest.approx(0.85) and rec.score(2) == pytest.approx(0.6)  # 2 is absent on frame 1
    results = rec.results(video_id=7)
    assert [r["obj_id"] for r in results] == [1, 2]  # object 3 never appears
    seg = results[0]["segmentations"]
    assert np.array_equal(mask_utils.decode(seg[1]).astype(bool), b == 1) and results[1]["segmentations"][1] is None
    assert results[0]["video_id"] == 7 and results[0]["category_id"] == 1


@pytest.fixture()
def squares(tmp_path, monkeypatch):
    from samtrack.api import VideoPredictor

    frames = tmp_path / "frames"
    frames.mkdir()
    truth = []
    for t in range(5):
        frame = np.full((48, 64, 3), 30, np.uint8)
        frame[10:22, 5 + 2 * t:17 + 2 * t] = COLOURS[1]
        frame[28:44, 40 - t:56 - t] = COLOURS[2]
        Image.fromarray(frame).save(frames / f"{t:05d}.png")
        truth.append([np.all(frame == COLOURS[k], axis=-1) for k in (1, 2)])
    monkeypatch.setattr(VideoPredictor, "from_config",
                        classmethod(lambda cls, config, overrides=(), log=print: cls(config, BlobSegmenter(), ColourTracker())))
    return frames, truth


def test_run_everything_end_to_end(squares, tmp_path):
    frames, truth = squares
    out = tmp_path / "out"
    assert main(["run", str(frames), "--everything", "--out", str(out), "--quiet", "--no-overlay",
                 "--set", "everything.automask.points_per_side=8", "--set", "redetect.enabled=false"]) == 0
    instances = json.loads((out / "instances.json").read_text())
    assert instances["frames"] == [0, 1, 2, 3, 4] and len(instances["results"]) == 2
    for r in instances["results"]:
        assert r["score"] == pytest.approx(0.95)
        masks = [mask_utils.decode(s).astype(bool) for s in r["segmentations"]]
        k = int(np.argmax([np.logical_and(masks[0], t).sum() for t in truth[0]]))
        assert all(np.array_equal(m, truth[f][k]) for f, m in enumerate(masks))  # tracked exactly
        assert np.array_equal(read_label_png(out / "masks" / "00004.png") == r["obj_id"], masks[4])
    # scored by the YouTube-VIS metric against the squares: perfect
    from samtrack.eval import vis_metrics
    from samtrack.everything import encode_rle

    gt = {"videos": [{"id": 1, "height": 48, "width": 64}], "categories": [{"id": 1}],
          "annotations": [{"id": k + 1, "video_id": 1, "category_id": 1, "iscrowd": 0,
                           "segmentations": [encode_rle(truth[f][k]) for f in range(5)],
                           "areas": [int(truth[f][k].sum()) for f in range(5)]} for k in range(2)]}
    stats = vis_metrics.evaluate(gt, instances["results"]).stats
    assert stats["AP"] == pytest.approx(1.0) and stats["AR100"] == pytest.approx(1.0)


def test_bench_everything(squares, capsys):
    frames, _ = squares
    assert main(["bench", str(frames), "--everything", "--max-objects", "1",
                 "--set", "everything.automask.points_per_side=8", "--set", "redetect.enabled=false"]) == 0
    out = capsys.readouterr().out
    assert "automatic masks:" in out and "5 frames, 1 object(s)" in out


def test_max_objects_needs_everything(squares, tmp_path, capsys):
    frames, _ = squares
    assert main(["run", str(frames), "--mask", str(frames / "00000.png"), "--max-objects", "3",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--max-objects goes with --everything" in capsys.readouterr().err


def test_davis_unsupervised_writes_results_without_annotations_used(squares, tmp_path):
    """`eval davis --method everything`: objects from the automatic masks; the first annotation
    is not read (it is absent here), at most 20 objects, PNGs per frame."""
    frames, truth = squares
    root = tmp_path / "davis"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations" / "sq").mkdir(parents=True)
    frames.rename(root / "JPEGImages" / "sq")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("sq\n")
    out = tmp_path / "out"
    assert main(["eval", "davis", "--root", str(root), "--year", "2017", "--method", "everything", "--out", str(out),
                 "--quiet", "--set", "everything.automask.points_per_side=8", "--set", "redetect.enabled=false"]) == 0
    pngs = sorted((out / "results" / "sq").glob("*.png"))
    assert [p.stem for p in pngs] == [f"{t:05d}" for t in range(5)]
    last = read_label_png(pngs[-1])
    assert sorted(np.unique(last).tolist()) == [0, 1, 2]
    assert np.array_equal(last > 0, truth[4][0] | truth[4][1])
    assert main(["eval", "davis", "--root", str(root), "--year", "2016", "--method", "everything",
                 "--out", str(out)]) == 2


def test_api_add_everything(squares):
    from samtrack.api import VideoPredictor
    from samtrack.config import load_config

    frames, truth = squares
    config = load_config("everything", ["everything.automask.points_per_side=8", "redetect.enabled=false"])
    predictor = VideoPredictor.from_config(config)
    state = predictor.init_state(frames)
    scores = predictor.add_everything(state)
    assert sorted(scores) == [1, 2] and all(s == pytest.approx(0.95) for s in scores.values())
    last = list(predictor.segment_video(state))[-1]
    assert np.array_equal(last.label_map > 0, truth[4][0] | truth[4][1])
    with pytest.raises(ValueError, match="frame_idx"):
        predictor.add_everything(state, frame_idx=99)
    with pytest.raises(TypeError, match="state"):
        predictor.add_everything("not a state")
