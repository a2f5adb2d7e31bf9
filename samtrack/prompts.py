"""User prompts: clicks and boxes from ``clicks.json``, or object masks from a PNG.

Coordinates are ``(x, y)`` float32 pixels of the *original* video frames (x to the right, y
down, origin at the top-left corner of the top-left pixel); frame numbers are 0-based indices
into the input video, before ``--start``/``--stride`` are applied.

Checking happens in two steps. :func:`load_clicks` and :func:`load_mask_prompt` check everything
the file alone can tell (syntax, keys, types, ids, frame order, value ranges that need no
video); :func:`validate_prompts` adds the checks that need the opened video (frame count and
size). Every failure is one :class:`~samtrack.errors.InputError` line that names the file and
the place in it, e.g. ``clicks.json: objects[1].prompts[0].positive[2]: negative coordinate``.

The clicks.json format (version 1; ``samtrack/schemas/clicks.schema.json`` describes it too)::

    {
      "version": 1,
      "objects": [
        {"id": 1, "name": "bear",
         "prompts": [
           {"frame": 0, "positive": [[412, 230], [450, 260]], "negative": [[100, 50]]},
           {"frame": 40, "positive": [[300, 240]], "box": [250, 150, 420, 330]}
         ]}
      ]
    }

Rules beyond the types: ids are unique integers in 1..254 (0 is background, 255 is DAVIS'
void label); an object's prompts are listed in increasing frame order, one entry per frame
(put every click for a frame in one entry); every prompt has a positive point or a box, since
negative points alone do not say where the object is.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import InputError, one_line, show
from .fileio import read_input_text
from .outputs import read_label_png

# The keys clicks.json accepts at each level (tests check that the JSON schema lists the same).
TOP_KEYS = {"version": False, "objects": True}  # key -> required
OBJECT_KEYS = {"id": True, "name": False, "prompts": True}
PROMPT_KEYS = {"frame": True, "positive": False, "negative": False, "box": False}

CLICKS_VERSION = 1
VOID_ID = 255

# Limits on what a prompt file may hold, checked before any work that grows with them, so
# that a huge or hostile file is refused at once instead of taking minutes. Real prompts are
# a few clicks per object on a few frames.
MAX_CLICKS_BYTES = 16 * 2**20
MAX_OBJECTS = 254  # ids are 1..254
MAX_PROMPTS_PER_OBJECT = 10_000
MAX_POINTS_PER_PROMPT = 1_000
# Larger than any frame, small enough for float32: a bigger number is a mistake, not a pixel.
MAX_COORDINATE = 1e9


@dataclass
class FramePrompt:
    """What the user gave for one object on one frame.

    Attributes:
        frame: index of the frame in the input video (0-based, before ``--start``/``--stride``).
        points: float32 ``[N, 2]``, (x, y) pixels of the original frame; may be ``[0, 2]``.
        labels: int32 ``[N]``: 1 positive, 0 negative.
        box: float32 ``[4]``: x0, y0, x1, y1 with x0 < x1 and y0 < y1, or None.
        mask: bool ``[H, W]`` at the original frame size, or None.
    """

    frame: int
    points: np.ndarray
    labels: np.ndarray
    box: np.ndarray | None = None
    mask: np.ndarray | None = None


@dataclass
class ObjectPrompts:
    """One object and its prompts.

    Attributes:
        obj_id: 1..254; the value of the object's pixels in the output label maps.
        name: a label for humans, or None.
        prompts: sorted by frame, at most one entry per frame.
    """

    obj_id: int
    name: str | None
    prompts: list[FramePrompt]

    @property
    def first_frame(self) -> int:
        return self.prompts[0].frame

    def at(self, frame: int) -> FramePrompt | None:
        """The prompt on ``frame``, or None."""
        return next((p for p in self.prompts if p.frame == frame), None)


# ---------------------------------------------------------------------- clicks.json
def load_clicks(path: str | Path) -> list[ObjectPrompts]:
    """Read and check a clicks.json file (see the module docstring for the format).

    Returns the objects in file order. Raises :class:`InputError` for any problem the file
    alone shows; call :func:`validate_prompts` once the video is open for the rest.
    """
    path = Path(path)
    data = _read_json(path)
    _check_keys(data, "top level", TOP_KEYS, path)
    version = data.get("version", CLICKS_VERSION)
    if not _is_int(version) or version != CLICKS_VERSION:
        _fail(path, "version", f"unsupported version {json.dumps(version)} (this samtrack reads version {CLICKS_VERSION})")
    raw_objects = data["objects"]
    if not isinstance(raw_objects, list) or not raw_objects:
        _fail(path, "objects", f"must be a non-empty array of objects, got {_describe(raw_objects)}")
    if len(raw_objects) > MAX_OBJECTS:
        _fail(path, "objects", f"{len(raw_objects)} objects; at most {MAX_OBJECTS} (ids 1..{MAX_OBJECTS})")
    objects = [_parse_object(raw, f"objects[{i}]", path) for i, raw in enumerate(raw_objects)]
    check_prompts(objects, path)
    return objects


def _read_json(path: Path) -> Any:
    text = read_input_text(path, MAX_CLICKS_BYTES, "clicks file")
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}", path) from None
    except _DuplicateKey as exc:
        # json keeps the last of two equal keys silently; a user who wrote both meant something.
        raise InputError(f"key {show(exc.args[0])} appears twice in one JSON object", path) from None
    except (ValueError, RecursionError) as exc:  # an integer of thousands of digits; absurd nesting
        raise InputError(f"not usable JSON ({show(' '.join(str(exc).split()), 120)})", path) from None


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _parse_object(raw: Any, where: str, path: Path) -> ObjectPrompts:
    _check_keys(raw, where, OBJECT_KEYS, path)
    obj_id = raw["id"]
    if not _is_int(obj_id):
        _fail(path, f"{where}.id", f"must be an integer, got {_describe(obj_id)}")
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        _fail(path, f"{where}.name", f"must be a string or null, got {_describe(name)}")
    raw_prompts = raw["prompts"]
    if not isinstance(raw_prompts, list):
        _fail(path, f"{where}.prompts", f"must be an array, got {_describe(raw_prompts)}")
    if len(raw_prompts) > MAX_PROMPTS_PER_OBJECT:
        _fail(path, f"{where}.prompts", f"{len(raw_prompts)} prompts; at most {MAX_PROMPTS_PER_OBJECT} per object")
    prompts = [_parse_prompt(p, f"{where}.prompts[{j}]", path) for j, p in enumerate(raw_prompts)]
    return ObjectPrompts(obj_id=obj_id, name=name, prompts=prompts)


def _parse_prompt(raw: Any, where: str, path: Path) -> FramePrompt:
    _check_keys(raw, where, PROMPT_KEYS, path)
    frame = raw["frame"]
    if not _is_int(frame):
        _fail(path, f"{where}.frame", f"must be an integer, got {_describe(frame)}")
    positive = _parse_points(raw.get("positive", []), f"{where}.positive", path)
    negative = _parse_points(raw.get("negative", []), f"{where}.negative", path)
    if len(positive) + len(negative) > MAX_POINTS_PER_PROMPT:
        _fail(path, where, f"{len(positive) + len(negative)} points; at most {MAX_POINTS_PER_PROMPT} per prompt")
    box = None
    if "box" in raw:
        box = _parse_numbers(raw["box"], 4, lambda: f"{where}.box", "a [x0, y0, x1, y1] array of numbers", path)
    return FramePrompt(
        frame=frame,
        points=np.array(positive + negative, np.float32).reshape(-1, 2),
        labels=np.array([1] * len(positive) + [0] * len(negative), np.int32),
        box=None if box is None else np.array(box, np.float32),
    )


def _parse_points(raw: Any, where: str, path: Path) -> list[list[float]]:
    if not isinstance(raw, list):
        _fail(path, where, f"must be an array of [x, y] points, got {_describe(raw)}")
    if len(raw) > MAX_POINTS_PER_PROMPT:  # before any per-point work
        _fail(path, where, f"{len(raw)} points; at most {MAX_POINTS_PER_PROMPT} per prompt")
    # The place is named only on failure: building it for every point is most of the work.
    return [_parse_numbers(p, 2, lambda k=k: f"{where}[{k}]", "an [x, y] pair of numbers", path) for k, p in enumerate(raw)]


def _parse_numbers(raw: Any, n: int, where: Callable[[], str], what: str, path: Path) -> list[float]:
    ok = isinstance(raw, list) and len(raw) == n and all(_is_number(v) for v in raw)
    if not ok:
        _fail(path, where(), f"must be {what}, got {_describe(raw)}")
    # Checked before any cast: 1e400 reads as inf, and a huge integer would overflow float32
    # with a numpy warning and then be called infinite.
    # (Python's json reads NaN, Infinity and 1e400, which fail here too.)
    if not all(-MAX_COORDINATE <= v <= MAX_COORDINATE for v in raw):
        bad = next(v for v in raw if not -MAX_COORDINATE <= v <= MAX_COORDINATE)
        if isinstance(bad, float) and not math.isfinite(bad):
            _fail(path, where(), f"coordinates must be finite, got {_describe(raw)}")
        _fail(path, where(), f"{_describe(bad)} is too large for a pixel coordinate (at most {MAX_COORDINATE:g})")
    return [float(v) for v in raw]


def _check_keys(node: Any, where: str, keys: dict[str, bool], path: Path) -> None:
    if not isinstance(node, dict):
        _fail(path, where, f"must be a JSON object, got {_describe(node)}")
    unknown = sorted(set(node) - set(keys))
    if unknown:
        _fail(path, where, f"unknown key {show(unknown[0])} (allowed: {', '.join(keys)})")
    missing = [key for key, required in keys.items() if required and key not in node]
    if missing:
        _fail(path, where, f"missing key {show(missing[0])}")


# ---------------------------------------------------------------------- mask prompts
def load_mask_prompt(path: str | Path, frame: int) -> list[ObjectPrompts]:
    """Read object masks for ``frame`` from a PNG.

    The PNG's pixel values are object ids, read as :func:`samtrack.outputs.read_label_png`
    does: an indexed (mode P) PNG gives each pixel's palette index as its id (the DAVIS
    convention: 0 background, 255 void, which is ignored here); a grey PNG (mode 1, L, LA, or
    RGB/RGBA whose channels are equal) is a binary mask, any nonzero value being object 1. Alpha
    is ignored. A colour RGB PNG is refused: its colours have no defined ids.

    Returns one :class:`ObjectPrompts` per id present, in id order, each with a single
    mask-only :class:`FramePrompt` (no points) and no name.
    """
    path = Path(path)
    if not _is_int(frame) or frame < 0:
        raise InputError(f"the mask's frame must be an integer >= 0, got {frame!r}", path)
    labels = read_label_png(path)
    ids = [int(i) for i in np.unique(labels) if i not in (0, VOID_ID)]
    if not ids:
        raise InputError("the mask has no object pixels (0 is background, 255 is void)", path)
    return [
        ObjectPrompts(
            obj_id=obj_id,
            name=None,
            prompts=[
                FramePrompt(frame, np.zeros((0, 2), np.float32), np.zeros(0, np.int32), mask=labels == obj_id)
            ],
        )
        for obj_id in ids
    ]


# ---------------------------------------------------------------------- checks
def check_prompts(objects: Sequence[ObjectPrompts], source: str | Path | None = None) -> None:
    """Check prompts as far as possible without the video; raises :class:`InputError`.

    Applies to prompts however they were made (file or code), so that the pipeline can rely on
    them: ids, frame order, array shapes and dtypes, finite non-negative coordinates, boxes with
    x0 < x1 and y0 < y1, non-empty masks, and a positive point, a box or a mask in every prompt.
    Locations are reported as ``objects[i].prompts[j]``, the positions in the given sequences,
    which for a loaded clicks.json are the positions in the file.
    """
    if not objects:
        _fail(source, "objects", "no objects to track")
    seen: dict[int, int] = {}
    for i, obj in enumerate(objects):
        where = f"objects[{i}]"
        if not _is_int(obj.obj_id) or not 1 <= obj.obj_id <= 254:
            _fail(source, f"{where}.id", f"must be an integer in 1..254 (0 is background, 255 is void), got {obj.obj_id!r}")
        if obj.obj_id in seen:
            _fail(source, f"{where}.id", f"id {obj.obj_id} is already used by objects[{seen[obj.obj_id]}]")
        seen[obj.obj_id] = i
        if not obj.prompts:
            _fail(source, f"{where}.prompts", "must not be empty")
        previous: int | None = None
        for j, prompt in enumerate(obj.prompts):
            at = f"{where}.prompts[{j}]"
            if not _is_int(prompt.frame) or prompt.frame < 0:
                _fail(source, f"{at}.frame", f"must be an integer >= 0, got {prompt.frame!r}")
            if previous is not None and prompt.frame == previous:
                _fail(source, f"{at}.frame", f"frame {prompt.frame} already has a prompt; put all of a frame's clicks in one entry")
            if previous is not None and prompt.frame < previous:
                _fail(source, f"{at}.frame", f"frame {prompt.frame} is listed after frame {previous}; list prompts in increasing frame order")
            previous = prompt.frame
            _check_frame_prompt(prompt, at, source)


def _check_frame_prompt(prompt: FramePrompt, where: str, source: str | Path | None) -> None:
    points, labels, box, mask = prompt.points, prompt.labels, prompt.box, prompt.mask
    if not isinstance(points, np.ndarray) or points.dtype != np.float32 or points.ndim != 2 or points.shape[1] != 2:
        _fail(source, f"{where}.points", f"must be a float32 [N, 2] array, got {_array_kind(points)}")
    if not isinstance(labels, np.ndarray) or labels.dtype != np.int32 or labels.shape != (len(points),):
        _fail(source, f"{where}.labels", f"must be an int32 [{len(points)}] array, got {_array_kind(labels)}")
    if not np.isin(labels, (0, 1)).all():
        _fail(source, f"{where}.labels", "must be 1 (positive) or 0 (negative)")
    bad_value = ~np.isfinite(points).all(axis=1)
    negative = (points < 0).any(axis=1) & ~bad_value
    if bad_value.any() or negative.any():
        index = int(np.argmax(bad_value | negative))
        at = f"{where}.{_point_name(labels, index)}"
        if bad_value[index]:
            _fail(source, at, f"coordinates must be finite, got {_fmt(points[index])}")
        _fail(source, at, f"negative coordinate in {_fmt(points[index])} (pixels from the top-left corner)")
    if box is not None:
        if not isinstance(box, np.ndarray) or box.dtype != np.float32 or box.shape != (4,):
            _fail(source, f"{where}.box", f"must be a float32 [4] array, got {_array_kind(box)}")
        if not np.isfinite(box).all() or (box < 0).any():
            _fail(source, f"{where}.box", f"coordinates must be finite and >= 0, got {_fmt(box)}")
        if not (box[0] < box[2] and box[1] < box[3]):
            _fail(source, f"{where}.box", f"must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1, got {_fmt(box)}")
    if mask is not None:
        if not isinstance(mask, np.ndarray) or mask.dtype != bool or mask.ndim != 2:
            _fail(source, f"{where}.mask", f"must be a bool [H, W] array, got {_array_kind(mask)}")
        if not mask.any():
            _fail(source, f"{where}.mask", "is empty")
    if not (labels == 1).any() and box is None and mask is None:
        _fail(source, where, "needs a positive point or a box (negative points alone do not locate the object)")


def validate_prompts(objects: Sequence[ObjectPrompts], source: str | Path, n_frames: int, size: tuple[int, int]) -> None:
    """Check prompts against the opened video; raises :class:`InputError` naming ``source``.

    Runs :func:`check_prompts`, then checks that every frame exists, that points lie on the
    frame (x in [0, W), y in [0, H)), that box corners lie in [0, W] x [0, H], and that masks
    have the frame's size.

    Args:
        objects: the prompts, from a file or built in code.
        source: the file they came from, for error messages.
        n_frames: frames in the input video.
        size: ``(H, W)`` of the original frames.
    """
    check_prompts(objects, source)
    height, width = size
    frame_size = f"{width}x{height} frame"
    for i, obj in enumerate(objects):
        for j, prompt in enumerate(obj.prompts):
            where = f"objects[{i}].prompts[{j}]"
            if prompt.frame >= n_frames:
                _fail(source, f"{where}.frame", f"frame {prompt.frame} is past the end of the video ({n_frames} frames)")
            outside = (prompt.points[:, 0] >= width) | (prompt.points[:, 1] >= height)
            if outside.any():
                index = int(np.argmax(outside))
                _fail(
                    source,
                    f"{where}.{_point_name(prompt.labels, index)}",
                    f"{_fmt(prompt.points[index])} is outside the {frame_size} (x must be < {width}, y < {height})",
                )
            box = prompt.box
            if box is not None and not (box[2] <= width and box[3] <= height):
                _fail(source, f"{where}.box", f"{_fmt(box)} is outside the {frame_size} (x <= {width}, y <= {height})")
            if prompt.mask is not None and prompt.mask.shape != (height, width):
                h, w = prompt.mask.shape
                _fail(source, f"{where}.mask", f"the mask is {w}x{h} but the video frames are {width}x{height}")


# ---------------------------------------------------------------------- helpers
def _fail(source: str | Path | None, where: str, message: str) -> None:
    raise InputError(f"{where}: {message}", source)


def _is_int(value: Any) -> bool:
    # bool is an int subclass in Python, but `true` is no id or frame number.
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _point_name(labels: np.ndarray, index: int) -> str:
    """``positive[k]`` / ``negative[k]``: the point's place in clicks.json, where positives
    and negatives are separate arrays (points holds the positives first)."""
    label = labels[index]
    k = int(np.count_nonzero(labels[:index] == label))
    return f"{'positive' if label == 1 else 'negative'}[{k}]"


def _fmt(values: Any) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in values) + "]"


def _describe(value: Any) -> str:
    """A short, one-line rendering of a JSON value for error messages."""
    if isinstance(value, (list, dict)) and len(value) > 8:
        value = list(value)[:8] if isinstance(value, list) else dict(list(value.items())[:8])  # json.dumps of it all is O(size)
    text = one_line(json.dumps(value, ensure_ascii=True))
    return text if len(text) <= 40 else text[:37] + "..."


def _array_kind(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} {list(value.shape)}"
    return type(value).__name__
