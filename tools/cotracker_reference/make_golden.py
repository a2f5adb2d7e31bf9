"""Write the CoTracker3 golden fixtures from the official co-tracker code (see README.md beside
this file): ``tests/fixtures/cotracker_golden/<case>.npz`` for every case of
``tests/cotracker_golden.py``."""
from __future__ import annotations

import argparse
import sys
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

import cotracker_golden as g  # noqa: E402


def _array(tensor) -> np.ndarray:
    """A float32 copy, taken at once: the offline predictor edits the model's outputs in place."""
    return tensor.detach().to("cpu").float().numpy().copy()


class CallRecorder:
    """Wraps ``predictor.model.forward`` and records every raw call (the offline predictor calls
    ``model.forward`` for the forward pass and ``model(...)`` for the backward one: both land here)."""

    def __init__(self, model) -> None:
        self.calls: list[dict[str, np.ndarray]] = []
        self._forward = model.forward
        model.forward = self

    def __call__(self, video, queries, *args, **kwargs):
        import torch

        call = {
            "T": np.array(video.shape[1]),
            "video_shape": np.array(video.shape),
            "video_checksum": np.array([video.double().sum().item(), (video.double() ** 2).sum().item()]),
            "queries": _array(queries),
            "iters": np.array(kwargs.get("iters", -1)),
        }
        out = self._forward(video, queries, *args, **kwargs)
        coords, vis, conf = out[:3]
        assert isinstance(conf, torch.Tensor)
        call.update(coords=_array(coords), vis=_array(vis), conf=_array(conf))
        self.calls.append(call)
        return out


def run_case(case: g.Case) -> dict[str, np.ndarray]:
    import torch
    from cotracker.predictor import CoTrackerOnlinePredictor, CoTrackerPredictor

    if case.mode == "offline":
        predictor = CoTrackerPredictor(checkpoint=None, window_len=g.OFFLINE_WINDOW)
    else:
        predictor = CoTrackerOnlinePredictor(checkpoint=None, window_len=g.ONLINE_WINDOW)
    template = predictor.model.state_dict()
    weights = g.random_cotracker_state_dict(template)
    predictor.model.load_state_dict(weights, strict=True)
    predictor.eval()
    recorder = CallRecorder(predictor.model)

    clip = g.clip(case)
    out: dict[str, np.ndarray] = {
        "seed": np.array(g.SEED),
        "weights_checksum": g.weights_checksum(weights),
        "time_emb_checksum": g.checksum(template["time_emb"].numpy()),
        "video_crc": np.array(zlib.crc32(clip.tobytes()), np.int64),
        "queries": np.asarray(case.queries, np.float32),
    }
    video = torch.from_numpy(clip).permute(0, 3, 1, 2)[None].float()  # B T 3 H W
    queries = torch.from_numpy(np.array(case.queries, np.float32))[None]
    T = video.shape[1]
    with torch.no_grad():
        if case.mode == "offline":
            tracks, visibility = predictor(video, queries=queries, backward_tracking=case.backward)
            out["tracks"] = _array(tracks[0])
            out["visibility"] = visibility[0].numpy().astype(bool)
        else:
            step = predictor.step
            assert step == g.ONLINE_STEP
            first = predictor(video[:, : 2 * step], is_first_step=True, queries=queries, add_support_grid=case.support_grid)
            assert first == (None, None)
            k = 0
            for ind in range(0, T, step):
                tracks, visibility = predictor(video[:, ind : ind + 2 * step], add_support_grid=case.support_grid)
                out[f"step{k}_tracks"] = _array(tracks[0])
                out[f"step{k}_visibility"] = visibility[0].numpy().astype(bool)
                k += 1
                if ind + 2 * step >= T:
                    break
            out["n_steps"] = np.array(k)
            out["tracks"] = out[f"step{k - 1}_tracks"]
            out["visibility"] = out[f"step{k - 1}_visibility"]
    out["n_calls"] = np.array(len(recorder.calls))
    for i, call in enumerate(recorder.calls):
        for name, value in call.items():
            out[f"call{i}_{name}"] = value
    return out


def sanity(case: g.Case, out: dict[str, np.ndarray]) -> str:
    """One line of statistics showing that the random-weight outputs are informative."""
    tracks, visibility = out["tracks"], out["visibility"]
    motion = np.abs(tracks - tracks[:1]).max(axis=(0, 2))  # per point (from the clip's frame 0)
    vis = np.concatenate([out[f"call{i}_vis"].ravel() for i in range(int(out["n_calls"]))])
    conf = np.concatenate([out[f"call{i}_conf"].ravel() for i in range(int(out["n_calls"]))])
    coords = np.concatenate([out[f"call{i}_coords"].ravel() for i in range(int(out["n_calls"]))])
    return (
        f"{case.name}: calls={int(out['n_calls'])} tracks {tuple(tracks.shape)} "
        f"motion/pt px min={motion.min():.2f} max={motion.max():.2f} "
        f"| visible {visibility.mean():.2f} | vis [{vis.min():.3f}, {vis.max():.3f}] mean {vis.mean():.3f} "
        f"| conf [{conf.min():.3f}, {conf.max():.3f}] mean {conf.mean():.3f} "
        f"| raw coords [{coords.min():.1f}, {coords.max():.1f}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--official", type=Path, help="the co-tracker checkout (else it must be on PYTHONPATH)")
    parser.add_argument("--out", type=Path, default=g.FIXTURE_DIR, help="output folder (default: the fixture folder)")
    args = parser.parse_args()
    if args.official is not None:
        sys.path.insert(0, str(args.official.resolve()))
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for case in g.CASES:
        out = run_case(case)
        path = args.out / g.case_path(case).name
        np.savez_compressed(path, **out)
        total += path.stat().st_size
        print(sanity(case, out))
        print(f"  wrote {path} ({path.stat().st_size} bytes)")
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
