"""samtrack.eval.vis_metrics against the official YouTube-VIS evaluation (YTVOSeval of
youtubevos/cocoapi): its numbers on synthetic files (tools/vis_reference/make_fixtures.py)
that exercise crowd regions, missing frames, empty tubes and masks, tubes shorter than the
video, unknown categories, score ties, videos without ground truth or without predictions,
more than 100 predictions, and every area range."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from samtrack.errors import InputError
from samtrack.eval import vis_metrics

FIXTURES = Path(__file__).parent / "fixtures" / "vis_metrics"


def _params(settings: dict) -> vis_metrics.VisParams:
    labels = ("all", "small", "medium", "large")
    return vis_metrics.VisParams(use_categories=bool(settings["useCats"]),
                                 area_ranges={lbl: tuple(r) for lbl, r in zip(labels, settings["areaRng"])})


@pytest.fixture(scope="module")
def files():
    return json.loads((FIXTURES / "gt.json").read_text()), json.loads((FIXTURES / "results.json").read_text())


@pytest.mark.parametrize("setting", ["ytvis", "agnostic", "agnostic_coco_areas"])
def test_equal_to_the_official_evaluation(files, setting):
    official = json.loads((FIXTURES / f"official_{setting}.json").read_text())
    ours = vis_metrics.evaluate(*files, params=_params(official["settings"]))
    np.testing.assert_allclose(list(ours.stats.values()), official["stats"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.recall, np.array(official["recall"]), rtol=0, atol=1e-6)
    precision = np.load(FIXTURES / f"official_{setting}_precision.npz")["precision"]
    np.testing.assert_allclose(ours.precision, precision, rtol=0, atol=1e-6)
    # the fixture is not degenerate: the numbers differ between ranges and are not all 0 / 1 / -1
    assert len({round(v, 6) for v in official["stats"]}) >= 6


def test_inputs_untouched_and_perfect_results(files):
    gt, _ = files
    before = json.dumps(gt)
    perfect = [{"video_id": a["video_id"], "category_id": a["category_id"], "score": 1.0,
                "segmentations": [s if isinstance(s, dict) and isinstance(s.get("counts"), str) else None
                                  for s in a["segmentations"]]}
               for a in gt["annotations"] if not a["iscrowd"] and any(isinstance(s, dict) and isinstance(s.get("counts"), str)
                                                                        for s in a["segmentations"])]
    kept = {(p["video_id"], p["category_id"]) for p in perfect}
    sub = {**gt, "annotations": [a for a in gt["annotations"] if any(isinstance(s, dict) and isinstance(s.get("counts"), str)
                                                                      for s in a["segmentations"]) and not a["iscrowd"]]}
    stats = vis_metrics.evaluate(sub, perfect).stats
    assert kept and stats["AP"] == pytest.approx(1.0) and stats["AR100"] == pytest.approx(1.0)
    assert json.dumps(gt) == before


def test_tube_iou_sums_over_frames():
    from pycocotools import mask as mask_utils

    def enc(m):
        r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        r["counts"] = r["counts"].decode()
        return r

    a = np.zeros((10, 10), bool)
    a[:5, :5] = True  # 25 px
    b = np.zeros((10, 10), bool)
    b[:5, :4] = True  # 20 px, inside a
    gt = {"videos": [{"id": 1, "height": 10, "width": 10}], "categories": [{"id": 1}],
          "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0, "areas": [25, None, 25],
                           "segmentations": [enc(a), None, enc(a)]}]}
    res = [{"video_id": 1, "category_id": 1, "score": 0.5, "segmentations": [enc(b), enc(b), None]}]
    _, gts, _ = vis_metrics._ground_truth(gt, "gt")
    dts = vis_metrics._results(res, {1: (10, 10)}, "res")
    # frame 0: 20 / 25; frame 1: prediction only (+20 union); frame 2: object only (+25)
    assert vis_metrics.tube_ious(dts, gts)[0, 0] == pytest.approx(20 / 70)


def test_bad_files_are_one_line_errors(files):
    gt, results = files
    with pytest.raises(InputError, match="video_id 99"):
        vis_metrics.evaluate(gt, [{**results[0], "video_id": 99}], results_source="res.json")
    with pytest.raises(InputError, match="annotation file"):
        vis_metrics.evaluate({"videos": []}, results, gt_source="gt.json")
