"""Benchmark loops: run the pipeline over a dataset's sequences, resumably, with speed and memory.

A sequence's results are written into a hidden staging folder and renamed into place only once
every PNG is there, together with a ``run.json`` record (frames, seconds, peak memory, the
config's fingerprint). ``--resume`` trusts exactly those records and nothing else.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from functools import partial
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import yaml

from ..config import Config
from ..timing import PeakMemory, Timings
from ..errors import InputError
from ..outputs import StagedOutputDir, atomic_write, write_label_png
from . import davis

RUN_RECORD = "run.json"


@dataclass
class SequenceRun:
    """What one sequence's run cost."""

    sequence: str
    frames: int
    seconds: float
    peak_rss_mb: float
    config_fingerprint: str
    stages_ms_per_frame: dict[str, float] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


@dataclass(frozen=True)
class Job:
    """One video's unit of work, as :mod:`.jobs` schedules it on any runner.

    Attributes:
        name: the video's name (progress, summary, CSV rows); unique within a run.
        folder: the results folder ``task`` commits with :func:`run_staged`; a finished one
            (its record with ``fingerprint``) is skipped by ``--resume``.
        fingerprint: what the results are made with (:func:`config_fingerprint`).
        task: ``task(predictor) -> SequenceRun``, the very function a local run calls. It is
            sent to worker processes, so it must pickle: a :func:`functools.partial` of a
            module-level function over plain values.
    """

    name: str
    folder: Path
    fingerprint: str
    task: Callable[[Any], SequenceRun]


def staging_folder(folder: Path) -> Path:
    """Where :func:`run_staged` builds ``folder``: a fixed name, so that what a killed run left
    is reclaimed by the next one (and found by a scheduler that cancels the run)."""
    return folder.with_name(f".{folder.name}.partial")


def config_fingerprint(config: Config, protocol: str = "") -> str:
    """A short hash of everything that changes results: the config (not where the weights are)
    and the ``protocol`` (e.g. ``davis2016``), so that results of one are never resumed as another's."""
    data = config.to_dict()
    data["protocol"] = protocol
    data["segmenter"].pop("checkpoint", None)
    data["segmenter"].pop("threads", None)
    data["segmenter"].pop("embedding_cache", None)
    data.pop("output", None)
    return hashlib.sha256(yaml.safe_dump(data, sort_keys=True).encode()).hexdigest()[:16]


def read_run(folder: Path) -> SequenceRun | None:
    """The record of a finished sequence folder, or None when it is not finished."""
    path = folder / RUN_RECORD
    if not path.is_file():
        return None
    try:
        return SequenceRun(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None  # unreadable (edited by hand, older format): not finished, run it again


def run_davis(
    predictor,
    root: str | Path,
    sequences: Sequence[str],
    year: int,
    results_dir: str | Path,
    resume: bool = False,
    log: Callable[[str], None] = print,
    progress: Callable[[str, int], Iterator[None]] | None = None,
    method: str = "samtrack",
) -> list[SequenceRun]:
    """Run the semi-supervised protocol: each sequence prompted by its first-frame annotation.

    Args:
        predictor: a :class:`samtrack.api.VideoPredictor` (None for ``method="copy"``).
        root: DAVIS root (official layout).
        sequences: names to run.
        year: 2016 or 2017 (which sets how the first annotation is read).
        results_dir: ``<results_dir>/<seq>/%05d.png`` are written, palette PNGs of object ids.
        resume: skip sequences already finished with the same config; without it they are redone.
        progress: optional ``progress(sequence, n_frames)`` returning a callable ticked per frame.
        method: ``samtrack`` (the pipeline), or a reference point from :mod:`.baselines`:
            ``oracle`` (prompts sampled from every frame's ground truth) or ``copy`` (the first
            mask on every frame); or ``everything`` (the unsupervised protocol: no annotation
            used, the objects are the automatic masks of the first frame).
    """
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = davis_fingerprint(predictor.config if predictor else None, year, method)
    runs = []
    for seq in sequences:
        done = finished_run(results_dir / seq, fingerprint, resume)
        if done is not None:
            log(f"{seq}: finished earlier, skipped (--resume)")
            runs.append(done)
            continue
        runs.append(run_davis_sequence(predictor, root, seq, year, results_dir, fingerprint, method, progress))
        run = runs[-1]
        log(f"{seq}: {run.frames} frames, {run.fps:.2f} fps, peak {run.peak_rss_mb:.0f} MB")
    return runs


def finished_run(folder: Path, fingerprint: str, resume: bool) -> SequenceRun | None:
    """The record of ``folder`` when ``--resume`` lets it be skipped, else None (run it again).

    Raises:
        InputError: with ``resume``, the folder was finished with another config, whose results
            must not be mixed with this one's.
    """
    done = read_run(folder) if resume else None
    if done is not None and done.config_fingerprint != fingerprint:
        raise InputError(
            f"{folder.name} was run with another config ({done.config_fingerprint}, now {fingerprint}); "
            "use another --out or run without --resume",
            folder.parent,
        )
    return done


def run_staged(timings: Timings, folder: Path, fingerprint: str, segment: Callable[[Path], int]) -> SequenceRun:
    """Run one sequence into a staging folder, then move it into place as ``folder`` with its record.

    ``segment(staging)`` segments the sequence, writes its files into ``staging`` and returns
    the number of frames it processed. It is timed and its peak memory sampled; the record
    (:data:`RUN_RECORD`) is added and the staging folder replaces ``folder`` only once it
    returns, so that a folder with a record is always complete. On failure the staging folder is
    deleted and ``folder`` is left as it was.
    """
    timings.reset()
    # A fixed staging name: a run killed mid-sequence leaves it, and the next run reclaims it.
    with StagedOutputDir(folder, staging_name=staging_folder(folder).name) as staging:
        start = time.perf_counter()
        with PeakMemory() as memory:
            frames = segment(staging)
        run = SequenceRun(
            sequence=folder.name,
            frames=frames,
            seconds=round(time.perf_counter() - start, 3),
            peak_rss_mb=round(memory.peak_mb, 1),
            config_fingerprint=fingerprint,
            stages_ms_per_frame={k: round(v, 1) for k, v in timings.per_frame(frames).items()},
        )
        with atomic_write(staging / RUN_RECORD, "w") as f:
            json.dump(asdict(run), f, indent=1)
    return run


def davis_fingerprint(config: Config | None, year: int, method: str) -> str:
    """The fingerprint of a DAVIS run; the copy baseline depends on no config."""
    return config_fingerprint(config, f"davis{year}-{method}") if method != "copy" else f"davis{year}-copy"


def davis_jobs(root: str | Path, sequences: Sequence[str], year: int, results_dir: str | Path, fingerprint: str,
               method: str = "samtrack") -> list[Job]:
    """One :class:`Job` per sequence of :func:`run_davis`, for :func:`samtrack.eval.jobs.run_jobs`."""
    results_dir = Path(results_dir)
    return [Job(seq, results_dir / seq, fingerprint,
                partial(run_davis_sequence, root=Path(root), seq=seq, year=year, results_dir=results_dir,
                        fingerprint=fingerprint, method=method))
            for seq in sequences]


def run_davis_sequence(predictor, root: str | Path, seq: str, year: int, results_dir: Path, fingerprint: str,
                       method: str = "samtrack", progress=None) -> SequenceRun:
    """Run one DAVIS sequence into ``<results_dir>/<seq>`` (staged, with its record); see :func:`run_davis`."""
    from . import baselines

    frame_paths = davis.frame_paths(root, seq)
    # the unsupervised protocol reads no annotation (the test split has none)
    annotations = davis.annotation_paths(root, seq) if method != "everything" else []
    labels = _objects_only(davis.read_label_png(annotations[0]), year) if method != "everything" else None
    object_ids = [int(i) for i in np.unique(labels) if i != 0] if labels is not None else [0]
    if not object_ids:
        raise InputError("first annotation has no object", annotations[0])
    tick = progress(seq, len(frame_paths)) if progress else (lambda: None)

    def segment(staging: Path) -> int:
        if method == "copy":
            frames = baselines.copy_first_mask(labels, len(frame_paths))
        elif method.split("-", 1)[0] == "oracle":
            ground_truth = (_objects_only(davis.read_label_png(p), year) for p in annotations)
            frames = baselines.oracle(predictor.pipeline, davis.images_dir(root) / seq, ground_truth,
                                      prompt=method.partition("-")[2] or "points")
        elif method == "everything":
            state = predictor.init_state(davis.images_dir(root) / seq)
            if predictor.add_everything(state, log=lambda m: None):
                frames = ((r.frame_index, r.label_map) for r in predictor.segment_video(state))
            else:  # nothing found: every frame empty
                frames = baselines.copy_first_mask(np.zeros(state.reader.read(0).shape[:2], np.uint8), len(frame_paths))
        else:
            state = predictor.init_state(davis.images_dir(root) / seq)
            state.add_objects([mask_prompt(labels == obj_id, obj_id) for obj_id in object_ids], annotations[0])
            frames = ((r.frame_index, r.label_map) for r in predictor.segment_video(state))
        for index, label_map in frames:
            write_label_png(staging / f"{frame_paths[index].stem}.png", label_map)
            tick()
        return len(frame_paths)

    timings = predictor.timings if predictor is not None else Timings()
    return run_staged(timings, results_dir / seq, fingerprint, segment)


def _objects_only(labels: np.ndarray, year: int) -> np.ndarray:
    """Object ids of an annotation: 2016 masks are binary; 2017's void (255) is no object."""
    if year == 2016:
        return (labels > 0).astype(np.uint8)
    return np.where(labels == davis.VOID_LABEL, 0, labels).astype(np.uint8)


def mask_prompt(mask: np.ndarray, obj_id: int, frame: int = 0):
    """An object given by its mask (bool ``[H, W]`` at the frame size) on ``frame``."""
    from ..prompts import FramePrompt, ObjectPrompts

    prompt = FramePrompt(frame=frame, points=np.zeros((0, 2), np.float32), labels=np.zeros(0, np.int32), mask=mask)
    return ObjectPrompts(obj_id=obj_id, name=None, prompts=[prompt])


def write_runs_csv(runs: Sequence[SequenceRun], path: str | Path, failed: Mapping[str, str] | None = None) -> None:
    """Per-sequence speed and memory, plus the stage split, as a CSV (written atomically).

    The last column, ``Status``, is ``done``; sequences in ``failed`` (name -> reason) follow
    as rows with ``failed`` and no numbers (the reasons are in the report and the summary).
    """
    stages = sorted({s for r in runs for s in r.stages_ms_per_frame})
    header = ["Sequence", "Frames", "Seconds", "FPS", "PeakRSS-MB", *[f"{s}-ms/frame" for s in stages], "Status"]
    lines = [",".join(header)]
    for r in runs:
        values = [r.sequence, str(r.frames), f"{r.seconds:.2f}", f"{r.fps:.3f}", f"{r.peak_rss_mb:.0f}"]
        values += [f"{r.stages_ms_per_frame.get(s, 0.0):.1f}" for s in stages]
        lines.append(",".join([*values, "done"]))
    for name in failed or {}:
        lines.append(",".join([name, *[""] * (len(header) - 2), "failed"]))
    with atomic_write(Path(path), "w") as f:
        f.write("\n".join(lines) + "\n")
