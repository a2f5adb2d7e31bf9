"""Dense flow (samtrack.flow) on synthetic motion: a textured square moved by a known step."""
from __future__ import annotations

import numpy as np
import pytest

from samtrack.config import FlowConfig
from samtrack.flow import DenseFlow, FramePairFlow, consistent, mask_to_low_res


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return np.count_nonzero(a & b) / np.count_nonzero(a | b)


def _scene(step: tuple[int, int], size=(240, 320), box=(60, 80, 140, 160)) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two RGB frames: a textured square on a textured background, moved by ``step`` (dx, dy);
    and its masks on both frames."""
    rng = np.random.default_rng(0)
    import cv2

    background = cv2.GaussianBlur(rng.integers(0, 255, (*size, 3), dtype=np.uint8), (7, 7), 2)
    texture = cv2.GaussianBlur(rng.integers(0, 255, (box[2] - box[0], box[3] - box[1], 3), dtype=np.uint8), (5, 5), 1.5)
    frames, masks = [], []
    for dx, dy in ((0, 0), step):
        frame = background.copy()
        y0, x0 = box[0] + dy, box[1] + dx
        frame[y0 : y0 + texture.shape[0], x0 : x0 + texture.shape[1]] = texture
        mask = np.zeros(size, bool)
        mask[y0 : y0 + texture.shape[0], x0 : x0 + texture.shape[1]] = True
        frames.append(frame)
        masks.append(mask)
    return frames[0], frames[1], masks[0], masks[1]


def test_warping_by_the_true_flow_moves_the_mask_exactly():
    prev, cur, prev_mask, cur_mask = _scene((9, -6))
    backward = np.zeros((*cur_mask.shape, 2), np.float32)
    backward[cur_mask] = (-9, 6)
    forward = np.zeros_like(backward)
    forward[prev_mask] = (9, -6)
    pair = FramePairFlow(backward=backward, forward=forward, reliable=consistent(backward, forward, 1.0))
    assert _iou(pair.warp_mask(prev_mask), cur_mask) >= 0.99
    # The background the square uncovers fails the round trip (its backward flow, the
    # background's, lands on the square, which moved away).
    uncovered = prev_mask & ~cur_mask
    assert not pair.reliable[uncovered].any()


# Measured IoU of the DIS-warped mask on this scene (854x480, a 240x200 square moved by (9, -6)):
# ultrafast 0.950, fast 0.945, medium 0.967; the unmoved mask 0.876. DIS smooths the flow across
# the square's edges (a band of a few pixels), which is what keeps it under 1.
@pytest.mark.parametrize("preset, floor", [("ultrafast", 0.94), ("fast", 0.935), ("medium", 0.955)])
def test_warped_mask_follows_a_moved_square(preset, floor):
    prev, cur, prev_mask, cur_mask = _scene((9, -6), size=(480, 854), box=(120, 200, 320, 440))
    pair = DenseFlow(FlowConfig(enabled=True, preset=preset))(prev, cur)
    assert _iou(pair.warp_mask(prev_mask), cur_mask) >= floor
    # Not moving the mask scores far lower: the test can fail.
    assert _iou(prev_mask, cur_mask) < 0.88


FLOOR_HALF = 0.9


def test_flow_on_shrunk_frames_is_scaled_back():
    prev, cur, prev_mask, cur_mask = _scene((12, 8), size=(480, 854), box=(120, 200, 320, 440))
    pair = DenseFlow(FlowConfig(enabled=True, longest_side=427))(prev, cur)
    assert pair.backward.shape == (*cur.shape[:2], 2)
    assert _iou(pair.warp_mask(prev_mask), cur_mask) >= FLOOR_HALF


def test_points_move_with_the_square_and_occlusion_is_unreliable():
    prev, cur, prev_mask, cur_mask = _scene((10, 0), size=(480, 854), box=(120, 200, 320, 440))
    pair = DenseFlow(FlowConfig(enabled=True, preset="medium"))(prev, cur)
    moved, ok = pair.move_points(np.array([[300.0, 200.0], [400.0, 250.0]], np.float32))
    assert ok.all()
    np.testing.assert_allclose(moved, [[310.0, 200.0], [410.0, 250.0]], atol=1.0)
    # The background uncovered behind the square has no source on the previous frame: most of
    # that strip fails the round trip, while the square's inside passes it.
    strip = np.zeros_like(cur_mask)
    strip[120:320, 200:210] = True
    assert pair.reliable[strip].mean() < 0.5
    assert pair.reliable[cur_mask].mean() > 0.9


def test_low_res_logits_move_with_the_mask():
    # Measured: 0.893 moved, 0.812 unmoved (cells where the flow fails the round trip are left
    # at 0, "unsure", which counts as background here).
    prev, cur, prev_mask, cur_mask = _scene((16, 8), size=(576, 1024), box=(120, 160, 320, 400))
    pair = DenseFlow(FlowConfig(enabled=True))(prev, cur)
    input_size, shape = (576, 1024), (144, 256)  # the 1024-side frame, 16:9: no padding
    low = mask_to_low_res(prev_mask, input_size, shape)
    moved = pair.warp_low_res(low, input_size) > 0
    target = mask_to_low_res(cur_mask, input_size, shape) > 0
    assert _iou(moved, target) >= 0.88
    assert _iou(low > 0, target) < 0.83


def test_mask_to_low_res_pads_with_background():
    mask = np.ones((100, 200), bool)
    low = mask_to_low_res(mask, (512, 1024), (256, 256))
    assert (low[:128] > 0).all() and (low[128:] < 0).all()
