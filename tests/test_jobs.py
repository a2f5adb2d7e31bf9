"""Many videos on any runner (samtrack.eval.jobs): in-process, --workers N, --ray on a local cluster.

`eval davis` runs three real DAVIS 2016 sequences cut to their first frames (symlinks into
../shared) with the real MobileSAM weights; every runner must give the very bytes of the
in-process run: the official CSVs and every PNG. The Ray cluster is started by this module on
this machine (ray.init with 2 CPUs, no dashboard) and shut down at its end; every test here is
bounded by an alarm.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import sys
import threading
import time
from functools import partial
from pathlib import Path

import pytest

from samtrack.cli import main
from samtrack.eval import jobs, runner

from .conftest import davis_slice

SEQUENCES = ("bear", "boat", "bus")
N_FRAMES = 4
SPLIT = "three"
TIME_LIMIT_S = 240  # per test: a hung cluster must fail the test, not the CI job


@pytest.fixture(autouse=True)
def time_limit():
    def expired(signum, frame):
        raise TimeoutError(f"test ran past {TIME_LIMIT_S} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TIME_LIMIT_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory, davis16: Path) -> Path:
    return davis_slice(tmp_path_factory.mktemp("davis"), davis16, SEQUENCES, N_FRAMES, SPLIT)


def eval_args(root: Path, out: Path, checkpoint: Path, *extra: str, quiet: bool = True) -> list[str]:
    return ["eval", "davis", "--root", str(root), "--year", "2016", "--split", str(root / f"{SPLIT}.txt"),
            "--out", str(out), "--config", "fast", "--checkpoint", str(checkpoint), *(["--quiet"] if quiet else []),
            *extra]


def outputs(out: Path) -> dict[str, bytes]:
    """What must not depend on the runner: the scores and every result PNG."""
    files = {name: (out / name).read_bytes() for name in (f"global_results-{SPLIT}.csv", f"per-sequence_results-{SPLIT}.csv")}
    files.update({str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "results").rglob("*.png"))})
    return files


def leftovers(results: Path) -> list[str]:
    return sorted(p.name for p in results.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def local_run(davis_root: Path, mobilesam_checkpoint: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    assert main(eval_args(davis_root, out, mobilesam_checkpoint)) == 0
    assert len(outputs(out)) == 2 + len(SEQUENCES) * N_FRAMES
    return out


def test_workers_2_gives_the_bytes_of_workers_1(local_run: Path, davis_root: Path, mobilesam_checkpoint: Path,
                                               tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(eval_args(davis_root, out, mobilesam_checkpoint, "--workers", "2", quiet=False)) == 0
    assert outputs(out) == outputs(local_run)
    assert leftovers(out / "results") == []
    err = capsys.readouterr().err
    assert "on 2 local worker processes" in err and "model loaded 2 time(s)" in err, err  # once per worker


def test_worker_process_killed_mid_sequence_is_retried(local_run: Path, davis_root: Path, mobilesam_checkpoint: Path,
                                                       tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    staging = runner.staging_folder(out / "results" / "boat")
    killed: list[int] = []

    def kill_workers_mid_boat() -> None:
        # From outside, as the OOM killer would: every worker dies while boat is half written.
        deadline = time.monotonic() + TIME_LIMIT_S
        while time.monotonic() < deadline:
            if staging.is_dir() and len(list(staging.glob("*.png"))) >= 2:
                for process in multiprocessing.active_children():
                    os.kill(process.pid, signal.SIGKILL)
                    killed.append(process.pid)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_workers_mid_boat, daemon=True)
    watcher.start()
    assert main(eval_args(davis_root, out, mobilesam_checkpoint, "--workers", "2", quiet=False)) == 0
    watcher.join(timeout=1)
    err = capsys.readouterr().err
    assert killed, err
    assert "boat: failed (a worker process died (killed, or out of memory)); retrying" in err, err
    assert outputs(out) == outputs(local_run)
    assert leftovers(out / "results") == []


def test_ctrl_c_on_the_driver_leaves_only_finished_sequences(davis_root: Path, mobilesam_checkpoint: Path,
                                                            tmp_path: Path) -> None:
    from samtrack.config import load_config

    config = load_config("fast", [f"segmenter.checkpoint={mobilesam_checkpoint}"])
    fingerprint = runner.davis_fingerprint(config, 2016, "samtrack")
    results = tmp_path / "results"
    work = runner.davis_jobs(davis_root, SEQUENCES, 2016, results, fingerprint)

    def interrupt(message: str) -> None:
        if "frames" in message:  # the first sequence has finished: Ctrl-C while others run
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        jobs.run_jobs(work, config, jobs.Runner(workers=2), log=interrupt, quiet=True)
    finished = [p.name for p in results.iterdir()]
    assert 1 <= len(finished) < len(SEQUENCES) and leftovers(results) == [], finished
    assert all(runner.read_run(results / name) is not None for name in finished)


def test_bad_runner_options_are_one_line(davis_root: Path, mobilesam_checkpoint: Path, tmp_path: Path,
                                         monkeypatch, capsys) -> None:
    assert main(eval_args(davis_root, tmp_path / "o", mobilesam_checkpoint, "--workers", "0")) == 2
    assert capsys.readouterr().err.strip() == "samtrack: error: --workers must be at least 1, got 0"
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    assert main(eval_args(davis_root, tmp_path / "o", mobilesam_checkpoint, "--ray")) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["samtrack: error: --ray needs Ray: pip install 'samtrack[ray]'"]
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of this machine for the module: 2 CPUs, stopped at the end."""
    if os.environ.get("SAMTRACK_REQUIRE_RAY") == "1":
        import ray
    else:
        ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    signal.alarm(TIME_LIMIT_S)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    signal.alarm(0)
    try:
        yield ray
    finally:
        ray.shutdown()


def test_ray_gives_the_bytes_of_the_local_run(ray_cluster, local_run: Path, davis_root: Path,
                                              mobilesam_checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(eval_args(davis_root, out, mobilesam_checkpoint, "--ray", quiet=False)) == 0
    assert outputs(out) == outputs(local_run)
    assert leftovers(out / "results") == []
    err = capsys.readouterr().err
    assert "run on Ray (local cluster)" in err and "3 attempt(s)" in err, err
    # --resume across runners: what the cluster finished is not redone here, and vice versa.
    (out / "global_results-three.csv").unlink()
    stamps = {p: p.stat().st_mtime_ns for p in (out / "results").rglob("*.png")}
    assert main([*eval_args(davis_root, out, mobilesam_checkpoint), "--resume"]) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "results").rglob("*.png")} == stamps
    assert outputs(out) == outputs(local_run)


def test_ray_task_killed_mid_sequence_is_retried(ray_cluster, local_run: Path, davis_root: Path,
                                                 mobilesam_checkpoint: Path, tmp_path: Path, monkeypatch,
                                                 capsys) -> None:
    killed = tmp_path / "killed"

    def die_once(task, marker: Path, predictor):
        # Runs on a Ray worker: on the first attempt, SIGKILL itself after the 3rd PNG.
        import samtrack.eval.runner as worker_runner

        if marker.exists():
            return task(predictor)
        write, count = worker_runner.write_label_png, []

        def write_then_die(path, label_map):
            write(path, label_map)
            count.append(path)
            if len(count) == 3:
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)

        worker_runner.write_label_png = write_then_die
        try:
            return task(predictor)
        finally:
            worker_runner.write_label_png = write

    real_jobs = runner.davis_jobs

    def jobs_with_a_fault(*args, **kwargs):
        return [dataclasses.replace(j, task=partial(die_once, j.task, killed)) if j.name == "boat" else j
                for j in real_jobs(*args, **kwargs)]

    monkeypatch.setattr(runner, "davis_jobs", jobs_with_a_fault)
    out = tmp_path / "out"
    assert main(eval_args(davis_root, out, mobilesam_checkpoint, "--ray", quiet=False)) == 0
    err = capsys.readouterr().err
    assert killed.exists(), err  # the worker was killed mid-sequence ...
    assert "boat: failed (" in err and "retrying" in err and "4 attempt(s)" in err, err
    assert outputs(out) == outputs(local_run)  # ... and the retry gave the same bytes
    assert leftovers(out / "results") == []


def test_ray_batch_reports_a_bad_video_and_finishes_the_others(ray_cluster, local_run: Path, davis_root: Path,
                                                               mobilesam_checkpoint: Path, tmp_path: Path,
                                                               capsys) -> None:
    (tmp_path / "broken.mp4").write_bytes(os.urandom(4096))
    annotation = davis_root / "Annotations" / "480p"
    frames = davis_root / "JPEGImages" / "480p"
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(
        f'{{"video": "{frames / "bear"}", "mask": "{annotation / "bear" / "00000.png"}", "out": "bear"}}\n'
        f'{{"video": "broken.mp4", "mask": "{annotation / "bear" / "00000.png"}", "out": "broken"}}\n'
        f'{{"video": "{frames / "boat"}", "mask": "{annotation / "boat" / "00000.png"}", "out": "boat"}}\n')
    out = tmp_path / "out"
    code = main(["batch", str(manifest), "--out", str(out), "--ray", "--config", "fast", "--checkpoint",
                 str(mobilesam_checkpoint), "--set", "output.overlay=false"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"broken ({tmp_path / 'broken.mp4'}: cannot be opened as a video" in err.splitlines()[-1], err
    assert sorted(p.name for p in out.iterdir()) == ["batch-runs.csv", "bear", "boat"]
    rows = [line.split(",") for line in (out / "batch-runs.csv").read_text().splitlines()]
    assert [(r[0], r[-1]) for r in rows[1:]] == [("bear", "done"), ("boat", "done"), ("broken", "failed")]
    for seq in ("bear", "boat"):
        assert sorted(p.name for p in (out / seq).iterdir()) == ["config.yaml", "masks", "run.json", "tracks.json"]
        # A batch row prompted by the first annotation is segmented as eval davis segments it.
        for i in range(N_FRAMES):
            assert (out / seq / "masks" / f"{i:05d}.png").read_bytes() == \
                (local_run / "results" / seq / f"{i:05d}.png").read_bytes()
