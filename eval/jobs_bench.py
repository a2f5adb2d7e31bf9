"""Benchmark of the job runners (samtrack.eval.jobs): wall time of ``samtrack eval davis`` per
runner, and the Ray runner's scheduling overhead per video.

    python -m samtrack.eval.jobs_bench --root ../shared/data/davis2016 --split ../shared/data/davis2016/dev.txt \\
        --out /tmp/jobs_bench --config fast [--runners workers1 workers2 ray] [--empty 200]

1. Each runner runs the same ``samtrack eval davis`` command in a fresh process (so none starts
   with a loaded model or a warm cluster); the wall time includes starting workers or the local
   Ray cluster and loading the model. The official CSVs of every runner are compared byte for
   byte with the first runner's.
2. Scheduling overhead: ``--empty N`` jobs of empty videos (each commits an empty staged folder
   with its record, no model) go through :func:`~samtrack.eval.jobs.run_jobs` on a local Ray
   cluster, one task in flight at a time, so each job's wall time is its full round trip
   (submit, schedule, run, fetch the record). It is compared with a 50-frame sequence's time at
   the in-process runner's measured seconds per frame.

Not a test: the numbers depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

RUNNERS = {"workers1": [], "workers2": ["--workers", "2"], "ray": ["--ray"]}


def empty_video(predictor, folder: Path) -> "SequenceRun":
    """An empty video's job: a staged folder with nothing in it but its record."""
    from ..timing import Timings
    from .runner import run_staged

    return run_staged(Timings(), folder, "empty", lambda staging: 0)


def scheduling_overhead(n: int, folder: Path) -> float:
    """Seconds per empty-video job on a local Ray cluster, one task in flight (after a warm-up)."""
    import ray

    from .jobs import Runner, run_jobs
    from .runner import Job

    def jobs(prefix: str, count: int) -> list[Job]:
        return [Job(f"{prefix}{i}", folder / f"{prefix}{i}", "empty", partial(empty_video, folder=folder / f"{prefix}{i}"))
                for i in range(count)]

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        runner = Runner(workers=1, ray=True)
        run_jobs(jobs("warm", 10), None, runner, log=lambda m: None, quiet=True)  # workers started
        started = time.perf_counter()
        outcome = run_jobs(jobs("empty", n), None, runner, log=lambda m: None, quiet=True)
        seconds = time.perf_counter() - started
        assert len(outcome.runs) == n and not outcome.failed, outcome.failed
    finally:
        ray.shutdown()
    return seconds / n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, help="DAVIS 2016 root")
    p.add_argument("--split", required=True, help="split file (e.g. dev.txt: the 14 shared sequences)")
    p.add_argument("--sequences", nargs="+", help="only these sequences")
    p.add_argument("--out", required=True, help="one results folder per runner goes here")
    p.add_argument("--config", default="fast")
    p.add_argument("--runners", nargs="+", choices=list(RUNNERS), default=list(RUNNERS))
    p.add_argument("--empty", type=int, default=200, help="empty-video jobs for the overhead (0: skip)")
    args = p.parse_args(argv)

    out = Path(args.out)
    walls: dict[str, float] = {}
    reference: dict[str, bytes] | None = None
    per_frame = None
    for name in args.runners:
        folder = out / name
        command = [sys.executable, "-m", "samtrack.cli", "eval", "davis", "--root", args.root, "--year", "2016",
                   "--split", args.split, "--out", str(folder), "--config", args.config, "--quiet", *RUNNERS[name]]
        if args.sequences:
            command += ["--sequences", *args.sequences]
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        walls[name] = time.perf_counter() - started
        split = Path(args.split).stem
        csvs = {f: (folder / f).read_bytes() for f in (f"global_results-{split}.csv", f"per-sequence_results-{split}.csv")}
        same = "reference" if reference is None else ("identical" if csvs == reference else "DIFFERENT")
        reference = reference or csvs
        runs = [line.split(",") for line in (folder / f"runs-{split}.csv").read_text().splitlines()[1:]]
        frames = sum(int(r[1]) for r in runs)
        if name == "workers1":
            per_frame = sum(float(r[2]) for r in runs) / frames
        print(f"{name:9s} {len(runs)} sequences, {frames} frames: wall {walls[name]:.1f} s "
              f"({frames / walls[name]:.2f} frames/s), CSVs {same}", flush=True)
    if args.empty:
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            overhead = scheduling_overhead(args.empty, Path(tmp))
        line = f"Ray scheduling overhead: {overhead * 1000:.1f} ms per video ({args.empty} empty videos, one in flight)"
        if per_frame is not None:
            fifty = 50 * per_frame
            line += f" = {100 * overhead / fifty:.2f} % of a 50-frame sequence ({fifty:.1f} s at {per_frame:.3f} s/frame in-process)"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
