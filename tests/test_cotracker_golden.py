"""Our CoTracker3 against the official code: the fixtures hold what Meta's predictors and model
computed (``tools/cotracker_reference/make_golden.py``, official code beside ours) with seeded
random weights; ours, rebuilt from the same seed, must give the same tracks, visibility and
confidence, every raw model call and the predictors' final outputs, within 1e-4.

Tracks are compared in pixels of the clip (48x64), raw model calls' too (their 384x512
coordinates scaled back as the predictors do): at the model's resolution a coordinate of ~400
carries float32 rounding of 3e-5, and six refinement iterations with random weights amplify it
to a few 1e-4 there. ``pytest -s`` prints the largest differences per case."""
from __future__ import annotations

import os
import zlib

import numpy as np
import pytest

from . import cotracker_golden as g

if os.environ.get("SAMTRACK_REQUIRE_TORCH") == "1":
    import torch  # noqa: F401  (CI installs the torch extra: a missing torch must fail here)
torch = pytest.importorskip("torch", reason="the torch extra is not installed")

from samtrack.torch_models import load_state_dict  # noqa: E402
from samtrack.trackers.cotracker.modeling import CoTrackerThree  # noqa: E402
from samtrack.trackers.cotracker.predictor import OFFLINE_THRESHOLD, ONLINE_THRESHOLD, OfflinePredictor, OnlineSession  # noqa: E402

TOL = 1e-4  # tracks in pixels; visibility and confidence probabilities


def model_for(case: g.Case, golden: dict) -> CoTrackerThree:
    model = CoTrackerThree(window_len=g.OFFLINE_WINDOW if case.mode == "offline" else g.ONLINE_WINDOW).eval()
    np.testing.assert_allclose(g.checksum(model.time_emb.numpy()), golden["time_emb_checksum"], rtol=1e-12)
    weights = g.random_cotracker_state_dict(model.state_dict())
    np.testing.assert_allclose(g.weights_checksum(weights), golden["weights_checksum"], rtol=1e-12)
    load_state_dict(model, weights)
    return model


def close(ours: torch.Tensor | np.ndarray, theirs: np.ndarray, what: str) -> float:
    ours = ours.numpy() if isinstance(ours, torch.Tensor) else ours
    assert ours.shape == theirs.shape, what
    diff = float(np.abs(ours.astype(np.float64) - theirs).max()) if ours.size else 0.0
    assert diff <= TOL, f"{what}: max |ours - official| = {diff:.3g}"
    return diff


def same_visibility(ours: np.ndarray, theirs: np.ndarray, score: np.ndarray, threshold: float, what: str) -> None:
    # A probability within the tolerance of the threshold may fall either side of it.
    differ = ours != theirs
    assert not (differ & (np.abs(score - threshold) > TOL)).any(), what


@pytest.fixture(params=[c for c in g.CASES], ids=[c.name for c in g.CASES])
def case(request) -> tuple[g.Case, dict]:
    case = request.param
    with np.load(g.case_path(case)) as data:
        golden = dict(data)
    clip = g.clip(case)
    assert zlib.crc32(clip.tobytes()) == int(golden["video_crc"]), "the synthetic clip drifted"
    np.testing.assert_array_equal(case.queries, golden["queries"])
    return case, golden


def test_matches_the_official_predictor(case):
    case, golden = case
    model = model_for(case, golden)
    video = torch.from_numpy(g.clip(case)).permute(0, 3, 1, 2)[None].float()
    queries = torch.from_numpy(case.queries.copy())[None]
    to_clip = torch.tensor([(g.WIDTH - 1) / (model.model_resolution[1] - 1), (g.HEIGHT - 1) / (model.model_resolution[0] - 1)])
    diffs = {}
    if case.mode == "offline":
        calls = []
        forward = model.forward
        model.forward = lambda v, q, iters: calls.append((v, q, forward(v, q, iters=iters))) or calls[-1][2]
        out = OfflinePredictor(model)(video, queries, backward=case.backward)
        assert len(calls) == int(golden["n_calls"])
        for i, (v, q, raw) in enumerate(calls):
            np.testing.assert_allclose(g.checksum(v.numpy()), golden[f"call{i}_video_checksum"], rtol=1e-6)
            close(q, golden[f"call{i}_queries"], f"call {i} queries")
            diffs[f"call{i}"] = (
                close(raw.coords * to_clip, golden[f"call{i}_coords"] * to_clip.numpy(), f"call {i} tracks"),
                close(raw.vis, golden[f"call{i}_vis"], f"call {i} visibility"),
                close(raw.conf, golden[f"call{i}_conf"], f"call {i} confidence"),
            )
        diffs["tracks"] = close(out.coords[0], golden["tracks"], "tracks")
        same_visibility(out.visible[0].numpy(), golden["visibility"], out.vis[0].numpy(), OFFLINE_THRESHOLD, "visibility")
        print(f"\n{case.name}: max |ours - official| (tracks px, vis, conf) {diffs}")
        return

    steps = []
    online_step = model.online_step
    model.online_step = lambda state, chunk, iters: steps.append((state.start, online_step(state, chunk, iters=iters))) or steps[-1][1]
    session = OnlineSession(model, queries, video.shape[-2:], support_grid=6 if case.support_grid else 0)
    results = []
    for t in range(video.shape[1]):
        results += session.push(video[:, t])
    results += session.finish()
    assert [index for index, _ in results] == list(range(case.num_frames))
    assert len(steps) == int(golden["n_calls"])
    for i, (start, raw) in enumerate(steps):
        n = raw.coords.shape[1]
        diffs[f"window{i}"] = (
            close(raw.coords * to_clip, golden[f"call{i}_coords"][:, start : start + n] * to_clip.numpy(), f"window {i} tracks"),
            close(raw.vis, golden[f"call{i}_vis"][:, start : start + n], f"window {i} visibility"),
            close(raw.conf, golden[f"call{i}_conf"][:, start : start + n], f"window {i} confidence"),
        )
    tracks = torch.cat([out.coords[0] for _, out in results])
    visible = torch.cat([out.visible[0] for _, out in results]).numpy()
    score = torch.cat([(out.vis * out.conf)[0] for _, out in results]).numpy()
    diffs["tracks"] = close(tracks, golden["tracks"], "tracks")
    same_visibility(visible, golden["visibility"], score, ONLINE_THRESHOLD, "visibility")
    print(f"\n{case.name}: max |ours - official| (tracks px, vis, conf) {diffs}")


def test_fixtures_stay_small():
    assert sum(g.case_path(c).stat().st_size for c in g.CASES) < 1_000_000
