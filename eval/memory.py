"""Memory against video length: `samtrack run` on the same scene at several lengths.

    python -m samtrack.eval.memory --frames ../shared/data/davis2016/JPEGImages/480p/bear \\
        --mask ../shared/data/davis2016/Annotations/480p/bear/00000.png --lengths 200 2000

A long video is made from a short frame folder by playing it forwards and backwards (a folder of
symbolic links, so nothing is copied and the motion stays continuous). Each length runs as its
own ``samtrack run`` process with every output on (masks, overlay, tracks.json), and its peak
resident memory is read from the operating system when it ends. The pipeline keeps no per-frame
state beyond its tracking window, so the peaks should agree; the difference left is what the
outputs still hold while running (tracks.json's points, a few hundred bytes a frame).

``--embedding-cache DIR`` serves the encoder's output from disk after its first sight of a frame
(the ping-pong video repeats frames), which turns a 2,000-frame run from half an hour into
minutes without changing what the pipeline holds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..cli import run_command
from ..errors import InputError, SamtrackError
from ..outputs import atomic_write
from ..video import FrameFolderReader


def ping_pong_folder(source: list[Path], length: int, folder: Path) -> None:
    """Fill ``folder`` with ``length`` links to the frames ``source``, played back and forth."""
    cycle = source + source[-2:0:-1]
    for i in range(length):
        target = cycle[i % len(cycle)].resolve()
        (folder / f"{i:06d}{target.suffix}").symlink_to(target)


def peak_rss_mb(command: list[str]) -> tuple[float, float]:
    """Run ``command`` to completion; its peak resident memory (MB) and wall time (s)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:  # its own error line is already on stderr
        raise SamtrackError(f"samtrack run failed (exit code {process.returncode})")
    return usage.ru_maxrss / 1024, time.perf_counter() - started  # ru_maxrss is in KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samtrack.eval.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", required=True, type=Path, help="a folder of frames to loop")
    parser.add_argument("--mask", required=True, help="the object's mask on the first frame")
    parser.add_argument("--lengths", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--config", default=None, help="preset or YAML (default: the samtrack preset)")
    parser.add_argument("--embedding-cache", help="serve repeated frames' embeddings from this folder")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if not args.frames.is_dir():
        raise InputError("not a folder of frames", args.frames)
    source = FrameFolderReader(args.frames).files
    if len(source) < 2:
        raise InputError("needs at least 2 frames", args.frames)

    rows = []
    with tempfile.TemporaryDirectory(prefix="samtrack-memory-") as tmp:
        for length in args.lengths:
            video, out = Path(tmp) / f"video{length}", Path(tmp) / f"out{length}"
            video.mkdir()
            ping_pong_folder(source, length, video)
            command = [sys.executable, "-m", "samtrack.cli", "run", str(video), "--mask", args.mask,
                       "--out", str(out), "--quiet"]
            if args.config:
                command += ["--config", args.config]
            if args.embedding_cache:
                command += ["--set", f"segmenter.embedding_cache={args.embedding_cache}"]
            peak, seconds = peak_rss_mb(command)
            written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
            rows.append({"frames": length, "peak_rss_mb": round(peak, 1), "seconds": round(seconds, 1),
                         "outputs_mb": round(written, 1)})
            print(f"{length:6d} frames: peak RSS {peak:7.1f} MB, {seconds:6.1f} s, {written:6.1f} MB written")
    growth = rows[-1]["peak_rss_mb"] - rows[0]["peak_rss_mb"]
    print(f"peak RSS at {rows[-1]['frames']} frames minus at {rows[0]['frames']}: {growth:+.1f} MB")
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump({"runs": rows, "growth_mb": round(growth, 1)}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main, prog="samtrack.eval.memory"))
