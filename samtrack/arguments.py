"""The Python API's argument checks: each turns what a caller passed into what the pipeline
expects, or raises ``TypeError`` (the wrong kind of value) or ``ValueError`` (the right kind,
but the wrong shape or out of range), with a message that names the argument and says what was
expected, e.g. ``points: expected an [N, 2] array of (x, y) pixels, got shape (4, 3)``.

Nothing is reshaped or cast silently: an ``[N, 3]`` array is not ``3N/2`` points.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .errors import show


def index(value: Any, name: str) -> int:
    """A non-negative integer (Python or numpy; not bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {describe(value)}")
    if value < 0:
        raise ValueError(f"{name}: expected an integer >= 0, got {value}")
    return int(value)


def obj_id(value: Any) -> int:
    """An object id: an integer in 1..254 (0 is background, 255 DAVIS' void)."""
    oid = index(value, "obj_id")
    if not 1 <= oid <= 254:
        raise ValueError(f"obj_id: expected an integer in 1..254 (0 is background, 255 is void), got {oid}")
    return oid


def flag(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {describe(value)}")
    return bool(value)


def optional_name(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"name: expected a string or None, got {describe(value)}")
    return value


def points(value: Any, size: tuple[int, int]) -> np.ndarray:
    """float32 ``[N, 2]`` (x, y) pixels on a frame of ``size`` (H, W); None is no points."""
    if value is None:
        return np.zeros((0, 2), np.float32)
    array = _numbers(value, "points", "an [N, 2] array of (x, y) pixels")
    if array.size == 0:
        return np.zeros((0, 2), np.float32)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"points: expected an [N, 2] array of (x, y) pixels, got shape {array.shape}")
    _on_frame(array, size, "points", corner_ok=False)
    return array.astype(np.float32)


def labels(value: Any, n: int) -> np.ndarray:
    """int32 ``[n]`` of 1 (positive) and 0 (negative); None means all positive."""
    if value is None:
        return np.ones(n, np.int32)
    array = _numbers(value, "labels", "one label per point (1 positive, 0 negative)", allow_bool=True)
    if array.ndim != 1 or len(array) != n:
        raise ValueError(f"labels: expected {n} labels, one per point (1 positive, 0 negative), got shape {array.shape}")
    if not np.isin(array, (0, 1)).all():
        bad = array[~np.isin(array, (0, 1))][0]
        raise ValueError(f"labels: expected 1 (positive) or 0 (negative), got {show(bad.item())}")
    return array.astype(np.int32)


def box(value: Any, size: tuple[int, int]) -> np.ndarray | None:
    """float32 ``[4]`` x0, y0, x1, y1 with x0 < x1 and y0 < y1, inside a frame of ``size``."""
    if value is None:
        return None
    array = _numbers(value, "box", "[x0, y0, x1, y1]")
    if array.shape != (4,):
        raise ValueError(f"box: expected 4 numbers [x0, y0, x1, y1], got shape {array.shape}")
    _on_frame(array.reshape(2, 2), size, "box", corner_ok=True)
    if not (array[0] < array[2] and array[1] < array[3]):
        raise ValueError(f"box: expected x0 < x1 and y0 < y1, got {array.tolist()}")
    return array.astype(np.float32)


def mask(value: Any, size: tuple[int, int]) -> np.ndarray:
    """bool ``[H, W]`` at the frame's ``size``: bool, or integers where nonzero is the object."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"mask: expected a numpy array (bool or integer, [H, W]), got {describe(value)}")
    if value.dtype != bool and not np.issubdtype(value.dtype, np.integer):
        raise TypeError(f"mask: expected a bool or integer array, got dtype {value.dtype} "
                        "(for probabilities, pass mask > 0.5)")
    if value.shape != tuple(size):
        raise ValueError(f"mask: expected shape {tuple(size)} (the video's H, W), got {value.shape}")
    result = value.astype(bool)
    if not result.any():
        raise ValueError("mask: is empty (no object pixels)")
    return result


def _numbers(value: Any, name: str, what: str, allow_bool: bool = False) -> np.ndarray:
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name}: expected {what}, got {describe(value)}")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):  # ragged nesting
        raise ValueError(f"{name}: expected {what}, got a ragged sequence") from None
    ok = np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating) or (allow_bool and array.dtype == bool)
    if array.size and not ok:
        raise TypeError(f"{name}: expected {what} as numbers, got dtype {array.dtype}")
    if array.size and np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ValueError(f"{name}: expected finite numbers, got {show(array.tolist())}")
    return array


def _on_frame(xy: np.ndarray, size: tuple[int, int], name: str, corner_ok: bool) -> None:
    """Points (x, y) on the frame: [0, W) x [0, H), or [0, W] x [0, H] for box corners."""
    height, width = size
    x, y = xy[:, 0], xy[:, 1]
    inside = (x >= 0) & (y >= 0) & ((x <= width) & (y <= height) if corner_ok else (x < width) & (y < height))
    if not inside.all():
        k = int(np.argmin(inside))
        place = name if name == "box" else f"{name}[{k}]"
        raise ValueError(f"{place}: {show(xy[k].tolist())} is outside the {width}x{height} frame")


def describe(value: Any) -> str:
    """A short phrase for what the caller passed: ``None``, ``str 'abc'``, an array's dtype."""
    if value is None:
        return "None"
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype}"
    return f"{type(value).__name__} {show(value, 40)}"
