"""Schedule many videos' jobs: in this process, on local worker processes, or on a Ray cluster.

This module only schedules. What a video's job does is :attr:`runner.Job.task`, the same function
whatever the runner: it segments the video into a staging folder and renames it into place with
its record (:func:`runner.run_staged`), so a worker killed mid-video never leaves a half-written
folder, and the driver then merges the finished folders into CSVs, zips and reports exactly as a
local run does. Inputs and outputs must be on a filesystem every worker sees.

Runners (:class:`Runner`):

- in-process (``workers=1``, the default): today's behaviour, the model loaded once here;
- ``workers=N``: N local worker processes (spawned, so none inherits a model or threads);
- ``ray=ADDRESS``: one Ray task per video on the cluster at ``ADDRESS`` (``"auto"``: the one
  this machine belongs to; ``None``: a new local cluster, stopped at the end; a Ray session
  already open in this process is used as it is). ``workers`` then caps the tasks in flight
  [the cluster's CPUs].

Each worker process loads the model once, on its first video, and keeps it for the next ones
(:func:`predictor_for`). Faults: a job that raises a :class:`~samtrack.errors.SamtrackError` (bad
input: the same video fails the same way every time) fails at once; any other error, or a
worker that dies (killed, out of memory), is retried up to ``retries`` times. Failed jobs are
reported by name in :attr:`Outcome.failed` and the rest of the run completes. Ctrl-C cancels the
jobs in flight and removes their staging folders, so only finished videos remain.
"""
from __future__ import annotations

import signal
import sys
import time
from collections import deque
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

import yaml
from tqdm import tqdm

from ..config import Config
from ..errors import SamtrackError
from .runner import Job, SequenceRun, finished_run, staging_folder

RAY_EXTRA = "pip install 'samtrack[ray]'"


@dataclass(frozen=True)
class Runner:
    """Where jobs run.

    Attributes:
        workers: local worker processes (1: this process); with ``ray``, the most tasks in
            flight (None: the cluster's CPUs).
        ray: use Ray; ``ray_address`` is then passed to ``ray.init``.
        ray_address: ``None`` (a new local cluster), ``"auto"``, or ``host:port`` / ``ray://...``.
        retries: how many times a job that failed other than by bad input is run again.
    """

    workers: int | None = 1
    ray: bool = False
    ray_address: str | None = None
    retries: int = 2

    def describe(self) -> str:
        if self.ray:
            return f"Ray ({self.ray_address or 'local cluster'})"
        return "this process" if (self.workers or 1) == 1 else f"{self.workers} local worker processes"


@dataclass
class Outcome:
    """What a run of jobs gave, in job order.

    Attributes:
        runs: the record of every finished job (run now or finished earlier and resumed).
        failed: job name -> the last failure's reason (one line), for jobs that did not finish.
        attempts: job name -> how many times it was started.
        model_loads: how many times a worker loaded the model (at most one per worker process).
        seconds: wall time of the run.
    """

    runs: list[SequenceRun] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    model_loads: int = 0
    seconds: float = 0.0


# ---------------------------------------------------------------------- the worker side
# One model per worker process, kept between its videos: loading it costs seconds, a video
# on CPU about a minute, so a cluster that reloaded it per video would waste a few percent.
_PREDICTORS: dict[str, Any] = {}


def predictor_for(config: Config | None, log: Callable[[str], None] | None = None) -> tuple[Any, bool]:
    """This process's predictor for ``config`` (None: no model), and whether it was loaded now."""
    if config is None:
        return None, False
    key = yaml.safe_dump(config.to_dict(), sort_keys=True)
    if key in _PREDICTORS:
        return _PREDICTORS[key], False
    from ..api import VideoPredictor

    _PREDICTORS.clear()  # one model per worker: a new config replaces the old one
    _PREDICTORS[key] = VideoPredictor.from_config(config, log=log or (lambda message: None))
    return _PREDICTORS[key], True


@dataclass(frozen=True)
class _Failure:
    """A job that raised; ``retry`` is False for bad input, which fails the same way again."""

    reason: str
    retry: bool


def execute(config: Config | None, task: Callable[[Any], SequenceRun]) -> tuple[SequenceRun | _Failure, bool]:
    """Run one job's task with this process's predictor: ``(record or failure, model loaded now)``.

    Errors are returned, not raised, so that they cross process boundaries as plain values
    whatever their type (a library's exception may not pickle).
    """
    loaded = False
    try:
        predictor, loaded = predictor_for(config)
        return task(predictor), loaded
    except SamtrackError as exc:
        return _Failure(str(exc), retry=False), loaded
    except Exception as exc:  # anything else may be transient (memory, a flaky disk): retried
        return _Failure(_one_line(f"{type(exc).__name__}: {exc}"), retry=True), loaded


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group; the driver alone decides what stops (and cleans).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ---------------------------------------------------------------------- backends
class _Backend(Protocol):
    capacity: int

    def submit(self, job: Job) -> Any: ...

    def wait(self, handles: Sequence[Any], timeout: float) -> list[Any]: ...

    def result(self, handle: Any) -> tuple[SequenceRun | _Failure, bool]: ...

    def cancel(self, handles: Sequence[Any]) -> None: ...

    def close(self) -> None: ...


class _InProcess:
    """Runs each job at submission, here: the local run as it always was."""

    capacity = 1

    def __init__(self, config: Config | None, log: Callable[[str], None]) -> None:
        self.config = config
        # Loaded before the first video, with its messages shown; counted with the first video.
        _, self._loaded = predictor_for(config, log)
        self._results: dict[int, tuple[SequenceRun | _Failure, bool]] = {}
        self._next = 0

    def submit(self, job: Job) -> int:
        handle, self._next = self._next, self._next + 1
        result, loaded = execute(self.config, job.task)
        self._results[handle] = result, loaded or self._loaded
        self._loaded = False
        return handle

    def wait(self, handles, timeout):
        return list(handles)

    def result(self, handle):
        return self._results.pop(handle)

    def cancel(self, handles) -> None:
        pass

    def close(self) -> None:
        _PREDICTORS.clear()  # the caller's process keeps no model once the run is over


class _ProcessPool:
    """N spawned worker processes; a pool broken by a dead worker is replaced."""

    def __init__(self, config: Config | None, workers: int) -> None:
        self.config = config
        self.capacity = workers
        self._pool = None
        self._owner: dict[Any, Any] = {}  # future -> the pool it ran on

    def _executor(self):
        from concurrent.futures import ProcessPoolExecutor
        import multiprocessing

        if self._pool is None:
            # spawn, not fork: a forked child would share the parent's thread pools and locks.
            self._pool = ProcessPoolExecutor(self.capacity, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_worker_init)
        return self._pool

    def submit(self, job: Job):
        pool = self._executor()
        future = pool.submit(execute, self.config, job.task)
        self._owner[future] = pool
        return future

    def wait(self, handles, timeout):
        from concurrent.futures import FIRST_COMPLETED, wait

        done, _ = wait(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        return list(done)

    def result(self, handle):
        from concurrent.futures.process import BrokenProcessPool

        pool = self._owner.pop(handle, None)
        try:
            return handle.result()
        except BrokenProcessPool:
            # A worker died (killed, out of memory): every job then in flight on that pool fails
            # with it, and the next submission starts a new pool.
            if pool is self._pool:
                self._discard()
            return _Failure("a worker process died (killed, or out of memory)", retry=True), False

    def _discard(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def cancel(self, handles) -> None:
        if self._pool is None:
            return
        # The workers ignore SIGINT; the jobs in flight stop only when their processes do.
        processes = list(getattr(self._pool, "_processes", {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.kill()
        for process in processes:
            process.join(timeout=10)
        self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class _Ray:
    """One Ray task per job; retries are the driver's, so that every runner counts them alike."""

    def __init__(self, config: Config | None, address: str | None, max_in_flight: int | None) -> None:
        ray = import_ray()
        self.ray = ray
        self._owned = not ray.is_initialized()
        if self._owned:
            # Failures come back as values (see execute), so the workers' own logs stay on the nodes.
            options: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False}
            if address is None:
                options["include_dashboard"] = False  # a new local cluster: nobody looks at it
            try:
                # "local": always a new cluster, never one that `ray start` left running here.
                ray.init(address=address or "local", **options)
            except (ConnectionError, RuntimeError, ValueError) as exc:  # no cluster there, or a bad address
                option = f"--ray {address}" if address else "--ray"
                raise SamtrackError(f"{option}: cannot start or reach a Ray cluster ({_one_line(exc)[:200]})") from None
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.capacity = max(1, max_in_flight or cpus)
        self._remote = ray.remote(num_cpus=1, max_retries=0)(execute)
        self._config = ray.put(config)

    def submit(self, job: Job):
        return self._remote.remote(self._config, job.task)

    def wait(self, handles, timeout):
        ready, rest = self.ray.wait(list(handles), num_returns=1, timeout=timeout)
        if ready and rest:
            more, _ = self.ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        return ready

    def result(self, handle):
        try:
            return self.ray.get(handle)
        except self.ray.exceptions.RayError as exc:  # the worker died, ran out of memory, was cancelled
            return _Failure(_one_line(f"{type(exc).__name__}: {exc}")[:300], retry=True), False

    def cancel(self, handles) -> None:
        for handle in handles:
            self.ray.cancel(handle, force=True)
        # Wait for the killed tasks to be gone before their staging folders are removed.
        self.ray.wait(list(handles), num_returns=len(handles), timeout=30)

    def close(self) -> None:
        if self._owned:
            self.ray.shutdown()


def import_ray():
    """The ``ray`` module, or a one-line error naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise SamtrackError(f"--ray needs Ray: {RAY_EXTRA}") from None
    return ray


def _backend(runner: Runner, config: Config | None, log: Callable[[str], None]) -> _Backend:
    if runner.ray:
        return _Ray(config, runner.ray_address, runner.workers)
    if (runner.workers or 1) > 1:
        return _ProcessPool(config, runner.workers)
    return _InProcess(config, log)


# ---------------------------------------------------------------------- the driver
def run_jobs(
    jobs: Sequence[Job],
    config: Config | None,
    runner: Runner = Runner(),
    resume: bool = False,
    log: Callable[[str], None] = print,
    quiet: bool = False,
) -> Outcome:
    """Run ``jobs`` on ``runner``; each job's task gets the predictor of ``config`` (None: none).

    With ``resume``, jobs whose folder holds a record with their fingerprint are not run again
    (whichever runner finished them); a record with another fingerprint is refused
    (:func:`runner.finished_run` raises, before anything runs). One progress bar on stderr
    counts videos done, running and failed, with frames per second of wall time.

    Returns:
        The :class:`Outcome`; ``runs`` in job order. Failed jobs are in ``failed`` (none raises).

    Raises:
        KeyboardInterrupt: (or any exception in the driver) after the jobs in flight were
            cancelled and their staging folders removed.
    """
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError("job names must be unique")
    started = time.perf_counter()
    outcome = Outcome()
    finished: dict[str, SequenceRun] = {}
    pending: deque[Job] = deque()
    for job in jobs:
        done = finished_run(job.folder, job.fingerprint, resume)
        if done is not None:
            log(f"{job.name}: finished earlier, skipped (--resume)")
            finished[job.name] = done
        else:
            pending.append(job)
    bar = tqdm(total=len(jobs), initial=len(finished), unit="video", desc="videos", file=sys.stderr,
               disable=quiet or not pending, dynamic_ncols=True)
    # Lines go above the bar while it shows (and, like the bar, to stderr).
    say = (lambda message: bar.write(message, file=sys.stderr)) if not bar.disable else log
    frames_done = 0
    in_flight: dict[Any, Job] = {}
    backend = _backend(runner, config, log) if pending else None
    try:
        while pending or in_flight:
            while pending and len(in_flight) < backend.capacity:
                job = pending.popleft()
                outcome.attempts[job.name] = outcome.attempts.get(job.name, 0) + 1
                in_flight[backend.submit(job)] = job
                _show(bar, in_flight, outcome, frames_done, started)
            for handle in backend.wait(list(in_flight), timeout=0.5):
                job = in_flight.pop(handle)
                result, loaded = backend.result(handle)
                outcome.model_loads += loaded
                if isinstance(result, SequenceRun):
                    finished[job.name] = result
                    frames_done += result.frames
                    bar.update(1)
                    say(f"{job.name}: {result.frames} frames, {result.fps:.2f} fps, peak {result.peak_rss_mb:.0f} MB")
                else:
                    # A dead worker leaves its staging folder; on a shared drive the retry may run on
                    # another host, which cannot tell that its owner is gone: the driver can.
                    _remove_staging([job])
                    if result.retry and outcome.attempts[job.name] <= runner.retries:
                        say(f"{job.name}: failed ({result.reason}); retrying")
                        pending.appendleft(job)
                    else:
                        outcome.failed[job.name] = result.reason
                        bar.update(1)
                        say(f"{job.name}: FAILED: {result.reason}")
            _show(bar, in_flight, outcome, frames_done, started)
    except BaseException:  # Ctrl-C, SIGTERM (the CLI raises it), or a bug: stop what runs first
        if backend is not None and in_flight:
            backend.cancel(list(in_flight))
        _remove_staging(in_flight.values())
        raise
    finally:
        bar.close()
        if backend is not None:
            backend.close()
    # Records carry their folder's name; rows of a batch are named by their whole relative path.
    outcome.runs = [dataclasses.replace(finished[name], sequence=name) for name in names if name in finished]
    outcome.failed = {name: outcome.failed[name] for name in names if name in outcome.failed}
    outcome.seconds = round(time.perf_counter() - started, 3)
    if outcome.attempts:
        log(f"{len(outcome.attempts)} video(s) run on {runner.describe()} in {outcome.seconds:.1f} s, "
            f"{sum(outcome.attempts.values())} attempt(s), model loaded {outcome.model_loads} time(s)")
    return outcome


def _show(bar: tqdm, in_flight: dict, outcome: Outcome, frames: int, started: float) -> None:
    if bar.disable:
        return
    elapsed = max(time.perf_counter() - started, 1e-9)
    bar.set_postfix({"running": len(in_flight), "failed": len(outcome.failed), "frames/s": f"{frames / elapsed:.2f}"})


def _remove_staging(jobs: Iterable[Job]) -> None:
    """Delete what cancelled jobs were writing: only finished folders stay."""
    import shutil

    for job in jobs:
        shutil.rmtree(staging_folder(Path(job.folder)), ignore_errors=True)


def summary(outcome: Outcome) -> str:
    """One line: finished / failed counts, wall time, and the failed jobs by name."""
    line = f"{len(outcome.runs)} finished, {len(outcome.failed)} failed in {outcome.seconds:.1f} s"
    if outcome.failed:
        line += ": " + "; ".join(f"{name} ({reason})" for name, reason in outcome.failed.items())
    return line


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def add_runner_args(p) -> None:
    """``--workers``, ``--ray [ADDRESS]``, ``--retries`` for a command that runs many videos."""
    p.add_argument("--workers", type=int, metavar="N",
                   help="local worker processes [1: this process]; with --ray, the most tasks in flight "
                        "[the cluster's CPUs]")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="one task per video on a Ray cluster: 'auto' (the cluster this machine is in), "
                        "host:port or ray://host:port; without ADDRESS, a local cluster for this run "
                        f"(needs {RAY_EXTRA}; inputs and outputs on a filesystem every node sees)")
    p.add_argument("--retries", type=int, default=2, metavar="N",
                   help="times a video that failed other than by bad input (a worker killed, out of memory) "
                        "is run again [2]")


def runner_from_args(args) -> Runner:
    """The :class:`Runner` that :func:`add_runner_args`' options ask for (checked)."""
    workers = args.workers
    if workers is not None and workers < 1:
        raise SamtrackError(f"--workers must be at least 1, got {workers}")
    if args.retries < 0:
        raise SamtrackError(f"--retries must be at least 0, got {args.retries}")
    if args.ray is None:
        return Runner(workers=workers or 1, retries=args.retries)
    import_ray()  # the missing extra is said before any work
    return Runner(workers=workers, ray=True, ray_address=args.ray or None, retries=args.retries)
