"""Per-click latency of the web app: a click's HTTP round trip on a live server, and the
decoder time inside it (``python -m samtrack.eval.app_bench examples/bear.mp4``).

The server runs in-process on a loopback port with the given config; each click is a POST to
``/clicks`` (the frame's embedding is cached after the first click on it, as in the page), timed
from request to response, then the overlay PNG the page fetches next.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from ..api import VideoPredictor
from ..config import load_config


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def main(argv: list[str] | None = None) -> int:
    from ..app.server import BackgroundServer, create_app

    parser = argparse.ArgumentParser(prog="python -m samtrack.eval.app_bench", description=__doc__)
    parser.add_argument("video")
    parser.add_argument("--frame", type=int, default=0)
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--config", default="samtrack")
    parser.add_argument("--point", type=float, nargs=2, default=(311, 290), metavar=("X", "Y"))
    args = parser.parse_args(argv)

    predictor = VideoPredictor.from_config(load_config(args.config), log=lambda m: None)
    predictor.keep_recent_embeddings(4)
    with tempfile.TemporaryDirectory() as out, BackgroundServer(create_app(predictor, out, [args.video])) as url:
        with urllib.request.urlopen(url + "api/sessions") as response:
            sid = json.load(response)["sessions"][0]["id"]
        base = f"{url}api/sessions/{sid}"
        obj = _post(base + "/objects", {"name": "bench"})["id"]
        round_trips, with_mask = [], []
        for k in range(args.clicks + 1):
            # Alternate a positive click near the point with a negative one far off, so each
            # request decodes a new prompt set.
            x, y = args.point
            label = 1 if k % 2 == 0 else 0
            body = {"frame": args.frame, "obj_id": obj, "x": x + (k % 5) if label else 20.0, "y": y if label else 20.0, "label": label}
            t0 = time.perf_counter()
            _post(base + "/clicks", body)
            t1 = time.perf_counter()
            with urllib.request.urlopen(f"{base}/masks/{args.frame}.png") as response:
                response.read()
            t2 = time.perf_counter()
            if k == 0:
                first = (t1 - t0) * 1e3
                first_stages = predictor.timings.per_frame(1)
                predictor.timings.reset()
                continue
            round_trips.append((t1 - t0) * 1e3)
            with_mask.append((t2 - t0) * 1e3)
        stages = predictor.timings.per_frame(args.clicks)
        print(f"first click on frame {args.frame}: {first:.0f} ms round trip; inside it "
              + ", ".join(f"{k} {v:.0f}" for k, v in first_stages.items()) + " ms")
        print(f"next {args.clicks} clicks, embedding cached: POST /clicks median {statistics.median(round_trips):.0f} ms "
              f"(min {min(round_trips):.0f}, max {max(round_trips):.0f}); with the overlay PNG fetch "
              f"median {statistics.median(with_mask):.0f} ms")
        print("  inside a cached click, ms: "
              + ", ".join(f"{k} {v:.0f}" for k, v in stages.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
