"""Point trackers side by side in one process (these machines are noisy): frames per second and
peak memory while tracking ``N`` points through a clip.

    python -m samtrack.eval.tracker_bench --frames ../shared/data/davis2016/JPEGImages/480p/bear \\
        --n-frames 24 --points 8 32 128 --trackers lk cotracker3 cotracker3-online

The points are seeded random places on the first frame. CoTracker3 runs with random weights
unless its checkpoint is cached (``--weights cached``): the compute is the same either way. Peak
memory is the process's resident memory above what it held before the run (sampled every 20 ms)
and, on CUDA, the peak of allocated device memory. fps counts the clip's frames over the wall
time of one ``track()`` call (offline CoTracker3 makes two passes when a query is not on frame 0;
here all are, so one).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..config import TrackerConfig
from ..errors import InputError, SamtrackError
from ..outputs import atomic_write
from ..timing import PeakMemory
from ..video import FrameFolderReader


def build(name: str, weights: str, device: str):
    """The tracker ``name``; CoTracker3 with random weights unless ``weights == "cached"``."""
    from ..trackers import build_tracker

    config = TrackerConfig(name=name)
    config.cotracker.device = device
    if name == "lk" or weights == "cached":
        return build_tracker(config, log=lambda line: print(line, file=sys.stderr))
    from ..torch_models import pick_device
    from ..trackers.cotracker.build import build_cotracker
    from ..trackers.cotracker3 import CoTracker3Tracker

    online = name == "cotracker3-online"
    model = build_cotracker("cotracker3-online" if online else "cotracker3-offline")
    return CoTracker3Tracker(model, online, config.cotracker, pick_device(device, "--device"))


def queries_for(n: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    height, width = size
    xy = rng.uniform([0, 0], [width - 1, height - 1], (n, 2))
    return np.column_stack([np.zeros(n), xy]).astype(np.float32)


def run_one(tracker, frames: list[np.ndarray], n_points: int) -> dict:
    cuda = getattr(tracker, "device", "cpu") == "cuda"
    if cuda:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    queries = queries_for(n_points, frames[0].shape[:2])
    started = time.perf_counter()
    with PeakMemory() as memory:
        tracks = tracker.track(frames, queries)
        if cuda:
            torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    row = {"tracker": tracker.name, "points": n_points, "frames": len(frames), "seconds": round(seconds, 2),
           "fps": round(len(frames) / seconds, 3), "peak_rss_mb": round(memory.peak_mb - memory.start_mb, 1),
           "visible": round(float(tracks.visible.mean()), 3)}
    if cuda:
        row["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samtrack.eval.tracker_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", required=True, type=Path, help="a folder of frames (480p for the README numbers)")
    parser.add_argument("--n-frames", type=int, default=24)
    parser.add_argument("--points", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--trackers", nargs="+", default=["lk", "cotracker3", "cotracker3-online"])
    parser.add_argument("--weights", choices=("random", "cached"), default="random")
    parser.add_argument("--device", default="auto", help="CoTracker3's device [auto]")
    parser.add_argument("--encode-chunks", type=int, nargs="+", default=[8],
                        help="CoTracker3: frames through its CNN at a time, each a variant [8]")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    try:
        if not args.frames.is_dir():
            raise InputError("not a folder of frames", args.frames)
        reader = FrameFolderReader(args.frames)
        frames = [reader.read(i) for i in range(min(args.n_frames, len(reader)))]
        rows = []
        for name in args.trackers:
            tracker = build(name, args.weights, args.device)
            run_one(tracker, frames[:2], 1)  # warm-up: allocator, kernels, lazy imports
            for n in args.points:
                # The variants of one tracker and point count run back to back, so they share
                # the machine's state.
                for chunk in args.encode_chunks if name != "lk" else [None]:
                    if chunk is not None:
                        tracker.model.encode_chunk = chunk
                    row = run_one(tracker, frames, n) | ({"encode_chunk": chunk} if chunk else {})
                    rows.append(row)
                    extra = f", peak CUDA {row['peak_cuda_mb']:.0f} MB" if "peak_cuda_mb" in row else ""
                    label = row["tracker"] + (f" chunk {chunk}" if chunk else "")
                    print(f"{label:27s} {n:4d} points: {row['fps']:7.2f} fps ({row['seconds']:.1f} s for "
                          f"{row['frames']} frames), peak RSS +{row['peak_rss_mb']:.0f} MB{extra}", flush=True)
    except SamtrackError as exc:
        print(f"tracker_bench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump({"frame_size": list(frames[0].shape[:2]), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
