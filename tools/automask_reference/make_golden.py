"""Run the official SamAutomaticMaskGenerator (facebookresearch/segment-anything) on the fake SAM
of tests/automask_fake.py and save what it returns as the golden fixture of tests/test_automask.py.

    python tools/automask_reference/make_golden.py --sam /work/ref/segment-anything \
        --torchvision-shim /work/ref/shims_amg --out tests/fixtures/automask_golden/cases.npz

--sam: a checkout of segment-anything (not committed). The official generator imports
torchvision only for batched_nms and box_area; where torchvision is not installed,
--torchvision-shim names a folder with a stand-in (see README.md here).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

# (name, scene (height, width, seed), generator keyword arguments); every branch of the
# generator: defaults, a ragged last batch, crop layers with downscaled grids (crop-edge filter,
# cross-crop NMS), hole/island removal with its second NMS, and thresholds switched off.
CASES = [
    ("defaults", (120, 160, 0), {}),
    ("small_regions", (120, 160, 1), {"points_per_side": 24, "points_per_batch": 50, "min_mask_region_area": 40}),
    ("crops", (130, 170, 2), {"points_per_side": 16, "crop_n_layers": 1, "crop_n_points_downscale_factor": 2,
                              "min_mask_region_area": 20}),
    ("two_layers", (140, 150, 3), {"points_per_side": 12, "crop_n_layers": 2, "pred_iou_thresh": 0.85,
                                   "stability_score_thresh": 0.9, "box_nms_thresh": 0.5, "crop_nms_thresh": 0.6}),
    ("no_thresholds", (90, 110, 4), {"points_per_side": 8, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0,
                                     "stability_score_offset": 0.5}),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sam", required=True, help="segment-anything checkout")
    parser.add_argument("--torchvision-shim", help="folder holding a torchvision stand-in package")
    parser.add_argument("--out", default=str(ROOT / "tests/fixtures/automask_golden/cases.npz"))
    args = parser.parse_args()
    if args.torchvision_shim:
        sys.path.insert(0, args.torchvision_shim)
    sys.path.insert(0, args.sam)
    sys.path.insert(0, str(ROOT / "tests"))
    from types import SimpleNamespace

    from segment_anything import SamAutomaticMaskGenerator
    from automask_fake import FakePredictor, make_scene

    arrays = {}
    summary = {}
    for name, (h, w, seed), kwargs in CASES:
        image = make_scene(h, w, seed)
        gen = SamAutomaticMaskGenerator(SimpleNamespace(image_encoder=SimpleNamespace(img_size=1024)), **kwargs)
        gen.predictor = FakePredictor()
        records = gen.generate(image)
        arrays[f"{name}/image"] = image
        arrays[f"{name}/config"] = np.array(json.dumps(kwargs))
        masks = np.stack([r["segmentation"] for r in records]) if records else np.zeros((0, h, w), bool)
        arrays[f"{name}/masks"] = np.packbits(masks, axis=-1)
        for key in ("area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"):
            values = [r[key][0] if key == "point_coords" else r[key] for r in records]
            arrays[f"{name}/{key}"] = np.asarray(values, np.float64)
        summary[name] = len(records)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
