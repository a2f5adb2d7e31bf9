"""Synthetic YouTube-VIS / UVO annotation and result files, scored by the official YTVOSeval
(youtubevos/cocoapi), for tests/test_vis_metrics.py.

    python tools/vis_reference/make_fixtures.py --ytvis /work/ref/ytvis-cocoapi --out tests/fixtures/vis_metrics

Writes gt.json, results.json and, per evaluation setting, official_<setting>.json (the 12
summary numbers and the recall array) and official_<setting>_precision.npz. The official code is
run from the checkout (never committed): its ytvos.py and ytvoseval.py are copied into a
temporary package whose `mask` module is pip's pycocotools.mask (the same C code as the
checkout's _mask.pyx). The official code was written for old NumPy: while it runs, `np.float`
is `float` and `np.linspace` takes its integral float `num` (np.round(...) + 1) as an int, so the
thresholds are the values it was written to use (NumPy 1.17 and older did the same).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

# name -> (useCats, area ranges): per-category (YouTube-VIS), class-agnostic (UVO) with the
# YouTube-VIS ranges and with COCO's.
SETTINGS = {
    "ytvis": (1, [[0, 1e5**2], [0, 128**2], [128**2, 256**2], [256**2, 1e5**2]]),
    "agnostic": (0, [[0, 1e5**2], [0, 128**2], [128**2, 256**2], [256**2, 1e5**2]]),
    "agnostic_coco_areas": (0, [[0, 1e5**2], [0, 32**2], [32**2, 96**2], [96**2, 1e5**2]]),
}


def rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode()
    return r


def box_mask(h: int, w: int, x0: float, y0: float, bw: float, bh: float) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[max(0, int(y0)):max(0, int(y0 + bh)), max(0, int(x0)):max(0, int(x0 + bw))] = True
    return m


def make(rng: np.random.Generator) -> tuple[dict, list]:
    # (id, height, width, frames)
    videos = [(1, 200, 260, 6), (2, 320, 400, 5), (3, 120, 160, 4), (4, 150, 150, 4), (5, 100, 100, 3)]
    gt = {"videos": [{"id": v, "height": h, "width": w, "length": n} for v, h, w, n in videos],
          "categories": [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)], "annotations": []}
    results = []
    tubes = {}  # gt id -> list of masks (None where absent)
    next_id = 1

    def add_gt(video, cat, masks, crowd=0, fmt="rle"):
        nonlocal next_id
        h, w = next((v[1], v[2]) for v in videos if v[0] == video)
        segs = []
        for m in masks:
            if m is None:
                segs.append(None)
            elif fmt == "polygon":  # a box as a polygon
                ys, xs = np.nonzero(m)
                x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
                segs.append([[float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1)]])
            elif fmt == "uncompressed":
                flat = m.flatten(order="F").astype(np.uint8)
                change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
                counts = np.diff(np.concatenate([[0], change])).tolist()
                segs.append({"size": [h, w], "counts": [int(c) for c in counts]})
            else:
                segs.append(rle(m))
        areas = []
        for s in segs:
            if s is None:
                areas.append(None)
            else:
                r = s if isinstance(s, dict) and isinstance(s["counts"], str) else None
                if r is None:
                    r = mask_utils.merge(mask_utils.frPyObjects(s, h, w)) if isinstance(s, list) else mask_utils.frPyObjects(s, h, w)
                areas.append(int(mask_utils.area(r)))
        gt["annotations"].append({"id": next_id, "video_id": video, "category_id": cat, "iscrowd": crowd,
                                  "segmentations": segs, "areas": areas, "height": h, "width": w})
        tubes[next_id] = masks
        next_id += 1
        return next_id - 1

    def moving(h, w, n, x, y, bw, bh, dx=3, dy=2, missing=()):
        return [None if f in missing else box_mask(h, w, x + dx * f, y + dy * f, bw, bh) for f in range(n)]

    def add_dt(video, cat, masks, score):
        results.append({"video_id": video, "category_id": cat, "score": float(score),
                        "segmentations": [None if m is None else rle(m) for m in masks]})

    # video 1: small and medium objects, a missing frame, a crowd region, polygon / uncompressed formats
    a = add_gt(1, 1, moving(200, 260, 6, 10, 10, 40, 30, missing=(2,)))
    b = add_gt(1, 2, moving(200, 260, 6, 60, 40, 160, 140, dx=1, dy=0), fmt="polygon")
    c = add_gt(1, 1, moving(200, 260, 6, 150, 120, 25, 20, dx=-2, dy=1), fmt="uncompressed")
    add_gt(1, 3, moving(200, 260, 6, 0, 160, 260, 40, dx=0, dy=0), crowd=1)
    add_gt(1, 2, [None] * 6)  # an object never visible: mean area 0
    # a small crowd region beside an object of its category: a prediction overlapping both, more
    # the crowd, must still match the object (the matcher stops before ignored objects)
    add_gt(1, 3, moving(200, 260, 6, 200, 100, 50, 50, dx=0, dy=0), crowd=1)
    g3 = add_gt(1, 3, moving(200, 260, 6, 190, 95, 50, 50, dx=0, dy=0))
    # video 2: large objects, appearing late
    d = add_gt(2, 1, moving(320, 400, 5, 20, 20, 300, 250, dx=2, dy=1))
    e = add_gt(2, 3, moving(320, 400, 5, 300, 10, 60, 50, missing=(0, 1)))
    # a tube shorter than its object (frames past its end are not counted), and a prediction on
    # frames where its object is absent (they count in the union)
    short = add_gt(2, 2, moving(320, 400, 5, 50, 250, 60, 50, dx=1, dy=0))
    late = add_gt(2, 2, moving(320, 400, 5, 200, 200, 40, 40, dx=0, dy=0, missing=(0, 1)))
    # video 3: ground truth, no results
    add_gt(3, 2, moving(120, 160, 4, 30, 30, 50, 40))
    # video 5: a few small objects and more than 100 predictions
    f5 = [add_gt(5, 1, moving(100, 100, 3, 10 + 25 * k, 20 + 10 * k, 15, 15, dx=1, dy=1)) for k in range(3)]

    def jitter(masks, shift, drop=(), crop=None):
        out = []
        for i, m in enumerate(masks):
            if m is None or i in drop:
                out.append(None)
                continue
            m = np.roll(m, shift, axis=(0, 1))
            if crop is not None:
                m = m.copy()
                m[:, crop:] = False
            out.append(m)
        return out

    # good, shifted, partial and duplicate predictions of each object, with wrong categories too
    for gid, base_score in ((a, 0.9), (b, 0.8), (c, 0.6), (d, 0.95), (e, 0.7)):
        vid = next(g["video_id"] for g in gt["annotations"] if g["id"] == gid)
        cat = next(g["category_id"] for g in gt["annotations"] if g["id"] == gid)
        masks = tubes[gid]
        add_dt(vid, cat, jitter(masks, (1, 2)), base_score)
        add_dt(vid, cat, jitter(masks, (6, 9), drop=(1,)), base_score - 0.3)
        add_dt(vid, cat % 3 + 1, jitter(masks, (0, 1)), base_score - 0.1)  # the wrong category
        add_dt(vid, cat, jitter(masks, (3, -4), crop=int(masks[-1].shape[1] * 0.6)) if masks[-1] is not None else masks,
               base_score - 0.05)
    # on the crowd region (matches it: ignored, not a false positive)
    add_dt(1, 3, moving(200, 260, 6, 0, 160, 180, 40, dx=0, dy=0), 0.85)
    add_dt(1, 3, moving(200, 260, 6, 80, 160, 180, 40, dx=0, dy=0), 0.84)
    # an empty tube, a tube with empty masks on some frames, and a tube shorter than the video
    add_dt(1, 1, [None] * 6, 0.99)
    add_dt(1, 3, moving(200, 260, 6, 198, 100, 50, 50, dx=0, dy=0), 0.83)
    half = [box_mask(200, 260, 100, 10, 40, 40) if f % 2 else np.zeros((200, 260), bool) for f in range(6)]
    add_dt(1, 2, half, 0.98)
    add_dt(2, 1, jitter(tubes[d], (2, 2))[:3], 0.88)
    add_dt(2, 2, tubes[short][:3], 0.77)
    add_dt(2, 2, moving(320, 400, 5, 200, 200, 40, 40, dx=0, dy=0), 0.76)
    # score ties
    add_dt(2, 3, jitter(tubes[e], (1, 1)), 0.7)
    add_dt(2, 3, jitter(tubes[e], (20, 20)), 0.7)
    # video 4: predictions but no ground truth
    for k in range(3):
        add_dt(4, 1 + k, moving(150, 150, 4, 10 * k, 20, 50, 50), 0.3 + 0.1 * k)
    # an unknown category (dropped by the evaluation)
    add_dt(1, 9, jitter(tubes[a], (0, 0)), 0.97)
    # video 5: 110 predictions, a few of them good
    for k in range(110):
        if k % 37 == 0:
            masks = jitter(tubes[f5[k // 37]], (1, 0))
        else:
            x, y = rng.integers(0, 85, 2)
            masks = moving(100, 100, 3, x, y, 12, 12, dx=0, dy=0)
        add_dt(5, 1, masks, float(rng.uniform(0.05, 0.9)))
    return gt, results


def run_official(ytvis: Path, gt_path: Path, res_path: Path, use_cats: int, area_ranges: list) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp) / "ytvis_ref"
        pkg.mkdir()
        (pkg / "__init__.py").write_text("")
        (pkg / "mask.py").write_text("from pycocotools.mask import *\n")
        for name in ("ytvos.py", "ytvoseval.py"):
            shutil.copy(ytvis / "PythonAPI" / "pycocotools" / name, pkg / name)
        sys.path.insert(0, tmp)
        linspace = np.linspace
        np.float = float
        np.linspace = lambda start, stop, num=50, **kw: linspace(start, stop, int(num) if float(num).is_integer() else num, **kw)
        try:
            from ytvis_ref.ytvos import YTVOS
            from ytvis_ref.ytvoseval import YTVOSeval

            with contextlib.redirect_stdout(io.StringIO()) as printed:
                gt = YTVOS(str(gt_path))
                dt = gt.loadRes(str(res_path))
                ev = YTVOSeval(gt, dt, "segm")
                ev.params.useCats = use_cats
                ev.params.areaRng = area_ranges
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
        finally:
            np.linspace = linspace
            del np.float
            sys.path.remove(tmp)
            for mod in [m for m in sys.modules if m.startswith("ytvis_ref")]:
                del sys.modules[mod]
    return {"stats": [float(s) for s in ev.stats], "recall": ev.eval["recall"].tolist(),
            "precision": ev.eval["precision"], "log": printed.getvalue()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ytvis", required=True, help="checkout of youtubevos/cocoapi")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gt, results = make(np.random.default_rng(0))
    (out / "gt.json").write_text(json.dumps(gt))
    (out / "results.json").write_text(json.dumps(results))
    for name, (use_cats, areas) in SETTINGS.items():
        official = run_official(Path(args.ytvis), out / "gt.json", out / "results.json", use_cats, areas)
        np.savez_compressed(out / f"official_{name}_precision.npz", precision=official.pop("precision"))
        print(name, [round(s, 4) for s in official["stats"]])
        official.pop("log")
        official["settings"] = {"useCats": use_cats, "areaRng": areas}
        (out / f"official_{name}.json").write_text(json.dumps(official))


if __name__ == "__main__":
    main()
