"""`samtrack eval uvo` end to end on a synthetic UVO-format video built from DAVIS bear (its
mask the only annotated instance), with the real MobileSAM weights; and its input checks."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from samtrack.cli import main
from samtrack.eval import vis_metrics
from samtrack.outputs import encode_rle

from .conftest import load_frame, load_gt

N_FRAMES = 3
SIZE = (427, 240)  # half of DAVIS's 480p: less to write and decode


def make_uvo(root, davis16):
    frames = root / "frames"
    (frames / "bear").mkdir(parents=True)
    names, segs, areas = [], [], []
    for t in range(N_FRAMES):
        Image.fromarray(load_frame(davis16, "bear", t)).resize(SIZE, Image.BILINEAR).save(frames / "bear" / f"{t}.png")
        mask = np.asarray(Image.fromarray(load_gt(davis16, "bear", t)).resize(SIZE, Image.NEAREST))
        names.append(f"bear/{t}.png")
        segs.append(encode_rle(mask))
        areas.append(int(mask.sum()))
    data = {"videos": [{"id": 7, "width": SIZE[0], "height": SIZE[1], "length": N_FRAMES, "file_names": names}],
            "categories": [{"id": 1, "name": "other"}],
            "annotations": [{"id": 1, "video_id": 7, "category_id": 1, "iscrowd": 0, "segmentations": segs,
                             "areas": areas, "width": SIZE[0], "height": SIZE[1]}]}
    (root / "uvo.json").write_text(json.dumps(data))
    return root / "uvo.json", frames


SMALL = ["--set", "everything.automask.points_per_side=6", "--max-objects", "4", "--quiet"]


def test_eval_uvo_end_to_end(tmp_path, davis16, mobilesam_checkpoint, capsys):
    annotations, frames = make_uvo(tmp_path, davis16)
    out = tmp_path / "out"
    assert main(["eval", "uvo", "--annotations", str(annotations), "--frames", str(frames), "--out", str(out), *SMALL]) == 0
    printed = capsys.readouterr().out
    assert "AR100" in printed
    results = json.loads((out / "results.json").read_text())
    assert 1 <= len(results) <= 4 and all(r["video_id"] == 7 and len(r["segmentations"]) == N_FRAMES for r in results)
    metrics = json.loads((out / "metrics.json").read_text())
    # the numbers are what vis_metrics gives on the written files
    again = vis_metrics.evaluate({**json.loads(annotations.read_text())}, results).stats
    assert metrics["stats"] == pytest.approx(again)
    # the bear is found and tracked: its tube overlaps one result by more than IoU 0.5
    assert metrics["stats"]["AR100"] > 0.0 and metrics["stats"]["AP"] > 0.0
    assert (out / "runs.csv").is_file() and (out / "videos" / "7" / "run.json").is_file()
    # Worker processes give the same bytes (the same task runs there).
    pooled = tmp_path / "pooled"
    assert main(["eval", "uvo", "--annotations", str(annotations), "--frames", str(frames), "--out", str(pooled), *SMALL,
                 "--workers", "2"]) == 0
    assert (pooled / "results.json").read_bytes() == (out / "results.json").read_bytes()
    assert json.loads((pooled / "metrics.json").read_text())["stats"] == metrics["stats"]  # the rest is timings
    # --resume reuses the finished video, and a changed config is refused
    assert main(["eval", "uvo", "--annotations", str(annotations), "--frames", str(frames), "--out", str(out), *SMALL,
                 "--resume"]) == 0
    assert json.loads((out / "results.json").read_text()) == results
    assert main(["eval", "uvo", "--annotations", str(annotations), "--frames", str(frames), "--out", str(out), *SMALL,
                 "--resume", "--set", "everything.min_area=5"]) == 2


def test_eval_uvo_bad_inputs(tmp_path, capsys):
    (tmp_path / "bad.json").write_text('{"videos": [{"id": 1}], "annotations": []}')
    assert main(["eval", "uvo", "--annotations", str(tmp_path / "bad.json"), "--frames", str(tmp_path),
                 "--out", str(tmp_path / "o")]) == 2
    assert "videos[0] has no 'width'" in capsys.readouterr().err
    good = {"videos": [{"id": 1, "width": 4, "height": 4, "file_names": ["v/0.png"]}], "annotations": []}
    (tmp_path / "good.json").write_text(json.dumps(good))
    assert main(["eval", "uvo", "--annotations", str(tmp_path / "good.json"), "--frames", str(tmp_path),
                 "--out", str(tmp_path / "o"), "--videos", "9"]) == 2
    assert "video '9' is not in the annotations" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
