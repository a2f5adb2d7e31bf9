"""``samtrack batch``: many videos, each with its prompts, from a manifest.

A manifest is JSON Lines (``.jsonl``, ``.ndjson``: one JSON object per line, blank lines
skipped) or CSV (``.csv``, a header row naming the columns, empty cells are absent). Each row is
one video::

    {"video": "clips/bear.mp4", "points": "clicks/bear.json", "out": "bear"}
    {"video": "frames/boat", "mask": "masks/boat.png", "mask_frame": 0, "out": "boat"}

- ``video`` (required): a video file or a folder of frames, as ``samtrack run`` takes.
- exactly one of ``points`` (a clicks.json) and ``mask`` (a mask PNG); ``mask_frame`` (an
  integer >= 0, default 0) only with ``mask``.
- ``out`` (required): the video's results folder, relative to ``--out``; unique, not inside
  another row's, no ``..``, not hidden.

Relative paths are relative to the manifest's folder. Every row is checked (files exist, the
clicks.json or mask is valid) before anything runs; a problem is one line naming the manifest,
the line and the field. What only the video shows (unreadable, prompts off the frame) fails that
row alone, reported by name, while the others finish.

Each row's folder holds what ``samtrack run`` writes (masks/, overlay.mp4, tracks.json,
config.yaml; see :mod:`samtrack.results`) plus ``run.json``, its record for ``--resume``.
"""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

from ..errors import InputError, SamtrackError
from ..prompts import ObjectPrompts, load_clicks, load_mask_prompt
from .runner import Job, SequenceRun, config_fingerprint, run_staged

KEYS = ("video", "points", "mask", "mask_frame", "out")
REQUIRED = ("video", "out")


@dataclass(frozen=True)
class BatchItem:
    """One manifest row, checked.

    Attributes:
        line: its line in the manifest (1-based), for messages.
        video: the video file or frame folder (absolute).
        prompt: the clicks.json or mask PNG it was prompted with (absolute).
        objects: the prompts read from it (shipped to the worker: only the video is read there).
        out: its results folder, relative to the batch's ``--out``.
    """

    line: int
    video: Path
    prompt: Path
    objects: tuple[ObjectPrompts, ...]
    out: str


def load_manifest(path: str | Path) -> list[BatchItem]:
    """Read and check a manifest (see the module docstring).

    Raises:
        InputError: ``<manifest>: line N: <field>: <problem>`` for the first problem found.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file (the batch manifest)", path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = _jsonl_rows(path)
    elif suffix == ".csv":
        rows = _csv_rows(path)
    else:
        raise InputError("a manifest is .jsonl (JSON Lines) or .csv", path)
    if not rows:
        raise InputError("no rows", path)
    items = [_item(path, line, row) for line, row in rows]
    _check_outs(path, items)
    return items


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", path) from None
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror})", path) from None


def _jsonl_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, text in enumerate(_read_text(path).splitlines(), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"line {number}: not valid JSON: {exc.msg} at column {exc.colno}", path) from None
        if not isinstance(row, dict):
            raise InputError(f"line {number}: must be a JSON object, got {json.dumps(row)[:40]}", path)
        rows.append((number, row))
    return rows


def _csv_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.reader(_read_text(path).splitlines())
    header = next(reader, None)
    if not header:
        raise InputError("no header row (expected columns video, points or mask, out)", path)
    header = [h.strip() for h in header]
    unknown = [h for h in header if h not in KEYS]
    if unknown:
        raise InputError(f"line 1: unknown column '{unknown[0]}' (allowed: {', '.join(KEYS)})", path)
    if len(set(header)) != len(header):
        raise InputError("line 1: a column appears twice", path)
    rows = []
    for values in reader:
        number = reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            raise InputError(f"line {number}: {len(values)} cells, the header has {len(header)}", path)
        row: dict[str, Any] = {k: v.strip() for k, v in zip(header, values) if v.strip()}
        if "mask_frame" in row:
            text = row["mask_frame"]
            row["mask_frame"] = int(text) if text.isdigit() else text  # a bad one is reported below
        rows.append((number, row))
    return rows


def _item(manifest: Path, line: int, row: dict[str, Any]) -> BatchItem:
    def fail(field: str, problem: str) -> InputError:
        return InputError(f"line {line}: {field}: {problem}", manifest)

    unknown = sorted(set(row) - set(KEYS))
    if unknown:
        raise InputError(f"line {line}: unknown key '{unknown[0]}' (allowed: {', '.join(KEYS)})", manifest)
    for key in REQUIRED:
        if key not in row:
            raise InputError(f"line {line}: missing key '{key}'", manifest)
    for key in ("video", "points", "mask", "out"):
        if key in row and not (isinstance(row[key], str) and row[key]):
            raise fail(key, f"must be a non-empty string, got {json.dumps(row[key])[:40]}")
    if ("points" in row) == ("mask" in row):
        raise InputError(f"line {line}: needs exactly one of 'points' (a clicks.json) and 'mask' (a PNG)", manifest)
    frame = row.get("mask_frame", 0)
    if "mask_frame" in row and "mask" not in row:
        raise fail("mask_frame", "goes with 'mask'; a clicks.json gives each prompt's frame itself")
    if not (isinstance(frame, int) and not isinstance(frame, bool) and frame >= 0):
        raise fail("mask_frame", f"must be an integer >= 0, got {json.dumps(frame)[:40]}")
    base = manifest.parent
    video = (base / row["video"]).absolute()
    if not video.exists():
        raise fail("video", f"no such file or folder: {video}")
    key = "points" if "points" in row else "mask"
    prompt = (base / row[key]).absolute()
    if not prompt.is_file():
        raise fail(key, f"no such file: {prompt}")
    try:
        objects = load_clicks(prompt) if key == "points" else load_mask_prompt(prompt, frame)
    except InputError as exc:
        raise fail(key, str(exc)) from None
    out = PurePosixPath(row["out"])
    if out.is_absolute() or any(part in ("..", "") or part.startswith(".") for part in out.parts) or "\\" in row["out"]:
        raise fail("out", f"must be a relative folder name without '..' or hidden parts, got {row['out']!r}")
    return BatchItem(line=line, video=video, prompt=prompt, objects=tuple(objects), out=out.as_posix())


def _check_outs(manifest: Path, items: Sequence[BatchItem]) -> None:
    seen: dict[str, int] = {}
    for item in items:
        if item.out in seen:
            raise InputError(f"line {item.line}: out: {item.out!r} is also line {seen[item.out]}'s", manifest)
        seen[item.out] = item.line
    for item in items:
        for parent in PurePosixPath(item.out).parents:
            if parent.as_posix() in seen and parent.as_posix() != ".":
                raise InputError(f"line {item.line}: out: {item.out!r} is inside line {seen[parent.as_posix()]}'s "
                                 f"{parent.as_posix()!r}", manifest)


def item_fingerprint(config, item: BatchItem) -> str:
    """What a row's results are made with: the config, the video's path and the prompt file's
    bytes, so that ``--resume`` never passes results made from other prompts for these (it
    refuses them, as it refuses another config's)."""
    digest = hashlib.sha256(config_fingerprint(config, "batch").encode())
    digest.update(str(item.video).encode())
    digest.update(item.prompt.read_bytes())
    return digest.hexdigest()[:16]


def batch_jobs(items: Sequence[BatchItem], out_dir: str | Path, config) -> list[Job]:
    """One :class:`~.runner.Job` per row, named by its ``out``."""
    out_dir = Path(out_dir)
    jobs = []
    for item in items:
        fingerprint = item_fingerprint(config, item)
        folder = out_dir / item.out
        jobs.append(Job(item.out, folder, fingerprint, partial(run_item, item=item, folder=folder, fingerprint=fingerprint)))
    return jobs


def run_item(predictor, item: BatchItem, folder: Path, fingerprint: str) -> SequenceRun:
    """Segment one row's video into ``folder`` (staged, with its record), as ``samtrack run`` does."""
    from ..results import open_state, write_results

    try:
        state = open_state(item.video, predictor.config)
    except SamtrackError:
        raise
    except Exception as exc:  # a decoder's own error on a file that is no video
        raise InputError(f"cannot read the video ({' '.join(str(exc).split())[:160]})", item.video) from None
    state.add_objects(list(item.objects), item.prompt)
    names = {o.obj_id: o.name for o in item.objects}
    return run_staged(predictor.timings, folder, fingerprint, partial(write_results, predictor, state, names))
