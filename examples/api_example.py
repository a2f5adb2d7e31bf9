"""Embed samtrack in an editor: clicks on one frame, a correction later, per-frame results.

    python examples/api_example.py examples/bear.mp4 out_api/
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from samtrack import VideoPredictor
from samtrack.outputs import write_label_png


def main(video: str, out: str) -> None:
    predictor = VideoPredictor.from_config("fast")
    state = predictor.init_state(video)

    # Two positive clicks and one negative click on the bear, on frame 0. The call returns that
    # frame's mask at once, so an editor can show it while the user is still clicking.
    preview = predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=[[311, 290], [380, 300], [600, 200]], labels=[1, 1, 0], name="bear")
    print(f"frame 0: bear covers {preview.mask(1).mean():.1%} of the frame")

    # A correction: one more positive click on frame 20 restarts the bear's points there.
    predictor.add_new_points_or_box(state, frame_idx=20, obj_id=1, points=[[300, 300]], labels=[1])

    Path(out).mkdir(parents=True, exist_ok=True)
    for result in predictor.propagate_in_video(state):
        points = result.points[1]
        print(f"frame {result.frame_index:3d}: area {result.mask(1).sum():6d} px, "
              f"{int(points.visible.sum())}/{len(points.visible)} points visible, "
              f"IoU score {result.scores.get(1, float('nan')):.2f}")
        write_label_png(Path(out) / f"{result.frame_index:05d}.png", result.label_map)
    print("ms/frame:", {k: round(v) for k, v in predictor.timings.per_frame(len(state.frame_indices)).items()})


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
