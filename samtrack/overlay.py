"""Overlay video: masks and tracked points drawn over the frames, saved as a portable mp4.

The mp4 is H.264 (libx264) in yuv420p with the index at the front of the file ("faststart"),
the combination that browsers, players and video editors all accept.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Mapping

import av
import cv2
import numpy as np

from .errors import SamtrackError
from .palette import davis_palette

# Pixels within this many pixels of another label are drawn in the object's full colour,
# outlining each mask on its inside.
CONTOUR_WIDTH = 2
_CONTOUR_KERNEL = np.ones((2 * CONTOUR_WIDTH + 1, 2 * CONTOUR_WIDTH + 1), np.uint8)
# OpenCV draws at 1/16 pixel precision with this shift, so sub-pixel tracks do not jitter.
_SHIFT = 4
_WHITE = (255, 255, 255)
_BLACK = (0, 0, 0)


@dataclass
class PointsDrawing:
    """The points of one object on one frame.

    Attributes:
        obj_id: the object id; its colour is ``davis_palette()[obj_id]``.
        xy: float32 ``[N, 2]``, ``(x, y)`` in pixels of the frame (integer values are pixel
            centres). Non-finite rows are skipped.
        visible: bool ``[N]``, False where the tracker reports the point occluded.
        positive: bool ``[N]``, True for points on the object, False for negative points.
    """

    obj_id: int
    xy: np.ndarray
    visible: np.ndarray
    positive: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.xy)
        if np.shape(self.xy) != (n, 2) or np.shape(self.visible) != (n,) or np.shape(self.positive) != (n,):
            raise ValueError(
                f"points of object {self.obj_id}: xy must be [N, 2] and visible, positive [N]; got "
                f"{np.shape(self.xy)}, {np.shape(self.visible)}, {np.shape(self.positive)}"
            )


def render_overlay(
    frame: np.ndarray,
    label_map: np.ndarray,
    points: list[PointsDrawing] | None = None,
    alpha: float = 0.5,
    radius: int = 4,
) -> np.ndarray:
    """Draw masks and points over one frame.

    Each object's pixels are blended with its DAVIS palette colour and outlined in that colour;
    background pixels are left as they are. Points are drawn in their object's colour:
    positive points as circles, negative points as squares; visible points filled with a white
    outline, occluded points hollow (a coloured ring on a black halo).

    Args:
        frame: RGB uint8 ``[H, W, 3]``.
        label_map: uint8 ``[H, W]``; ``0`` is background, ``k`` is object ``k``.
        points: points to draw on top, or None.
        alpha: opacity of the mask colour, in ``[0, 1]``.
        radius: point marker radius in pixels.

    Returns:
        A new RGB uint8 ``[H, W, 3]`` image; the inputs are not modified.
    """
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
    if label_map.dtype != np.uint8 or label_map.shape != frame.shape[:2]:
        raise ValueError(f"label_map must be uint8 {frame.shape[:2]}, got {label_map.dtype} {label_map.shape}")
    palette = davis_palette()
    image = frame.copy()
    foreground = label_map > 0
    if foreground.any():
        # OpenCV's table lookup and masked copies are several times faster than numpy's
        # fancy and boolean indexing at video sizes.
        colours = cv2.LUT(cv2.merge([label_map] * 3), palette.reshape(256, 1, 3))
        blended = cv2.addWeighted(frame, 1.0 - alpha, colours, alpha, 0.0)
        cv2.copyTo(blended, foreground.view(np.uint8), image)
        # A pixel is on an outline when a different label lies within CONTOUR_WIDTH of it.
        # Erosion pads the frame border with the maximum, so the border itself is no outline.
        outline = foreground & (cv2.dilate(label_map, _CONTOUR_KERNEL) != cv2.erode(label_map, _CONTOUR_KERNEL))
        cv2.copyTo(colours, outline.view(np.uint8), image)
    for drawing in points or []:
        _draw_points(image, drawing, tuple(int(c) for c in palette[drawing.obj_id]), radius)
    return image


class VideoFileWriter:
    """Encodes frames into one video file through PyAV, atomically.

    The file is written under a hidden temporary name beside ``path`` and renamed on
    :meth:`close`; :meth:`abort` (or an exception in a ``with`` block) deletes it.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        codec: str,
        pix_fmt: str,
        container: str,
        options: Mapping[str, str] | None = None,
        even: bool = False,
        container_options: Mapping[str, str] | None = None,
    ) -> None:
        """
        Args:
            path: the file to write. fps: its frame rate.
            codec, pix_fmt, container: FFmpeg encoder, stored pixel format, container format.
            options: encoder options. even: pad frames to even sides (4:2:0 formats).
            container_options: muxer options (e.g. mp4's ``movflags``).
        """
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.path = Path(path)
        self._rate = Fraction(fps).limit_denominator(1001)  # keeps NTSC rates (30000/1001) exact
        self._codec, self._pix_fmt, self._options, self._even = codec, pix_fmt, dict(options or {}), even
        self._temp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.partial")
        try:
            self._temp.open("xb").close()  # a missing or read-only folder fails before any work
        except OSError as exc:
            raise SamtrackError(f"cannot write the video: {exc.strerror}", self.path) from None
        try:
            self._container = av.open(str(self._temp), "w", format=container, options=dict(container_options or {}))
        except BaseException:
            self._temp.unlink(missing_ok=True)
            raise
        self._stream: av.VideoStream | None = None
        self._frame_size: tuple[int, int] | None = None
        self._closed = False

    def __enter__(self) -> "VideoFileWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close() if exc_type is None else self.abort()

    def write(self, image: np.ndarray, fmt: str) -> None:
        """Encode one frame: ``image`` uint8 ``[H, W]`` (``fmt="gray"``) or ``[H, W, C]``
        (``"rgb24"``, ``"rgba"``); every frame must have the first frame's size."""
        if self._closed:
            raise ValueError(f"{self.path}: write() after close")
        height, width = image.shape[:2]
        if self._frame_size is None:
            self._frame_size = (height, width)
        elif (height, width) != self._frame_size:
            first_height, first_width = self._frame_size
            raise ValueError(f"frame is {width}x{height}, but the first frame was {first_width}x{first_height}")
        if self._even and (height % 2 or width % 2):
            pad = ((0, height % 2), (0, width % 2)) + ((0, 0),) * (image.ndim - 2)
            image = np.pad(image, pad, mode="edge")
        if self._stream is None:
            stream = self._container.add_stream(self._codec, rate=self._rate, options=self._options)
            stream.height, stream.width = image.shape[:2]
            stream.pix_fmt = self._pix_fmt
            self._stream = stream
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=fmt)):
            self._container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and move the file into place (closing twice is harmless)."""
        if self._closed:
            return
        if self._stream is None:
            self.abort()
            raise ValueError(f"{self.path}: closed before any frame was written")
        try:
            for packet in self._stream.encode(None):  # flush what the encoder holds for lookahead
                self._container.mux(packet)
            self._container.close()
            os.replace(self._temp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True

    def abort(self) -> None:
        """Stop and delete the partial file."""
        self._closed = True
        try:
            self._container.close()
        except (av.FFmpegError, OSError):  # the half-written file is deleted anyway
            pass
        self._temp.unlink(missing_ok=True)


class OverlayWriter:
    """Writes overlay frames to an H.264 mp4, atomically.

    Frames are encoded into a hidden temporary file beside ``path``, which is renamed to
    ``path`` when the writer closes normally; when an exception leaves the ``with`` block (or
    encoding fails) the temporary file is deleted, so ``path`` never holds a partial video.

    H.264 in yuv420p needs an even width and height: a frame with an odd side is padded by
    repeating its last row or column, so the video is at most one pixel larger than the frames.

    Usage::

        with OverlayWriter("out/overlay.mp4", fps=24) as writer:
            for frame, labels, points in results:
                writer.write(frame, labels, points)
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        alpha: float = 0.5,
        radius: int = 4,
        crf: int = 20,
        preset: str = "veryfast",
    ) -> None:
        """
        Args:
            path: the mp4 to write (replaced if it exists).
            fps: frame rate of the video.
            alpha, radius: passed to :func:`render_overlay`.
            crf: x264 constant rate factor (lower is better quality and larger; 18-23 is the
                visually good range).
            preset: x264 speed/size trade-off.
        """
        self.path = Path(path)
        self.alpha = alpha
        self.radius = radius
        # faststart moves the index to the front so that browsers can play while downloading.
        self._video = VideoFileWriter(path, fps, "libx264", "yuv420p", "mp4", {"crf": str(crf), "preset": preset},
                                      even=True, container_options={"movflags": "+faststart"})

    def __enter__(self) -> "OverlayWriter":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._video.__exit__(exc_type, exc, traceback)

    def write(self, frame: np.ndarray, label_map: np.ndarray, points: list[PointsDrawing] | None = None) -> None:
        """Render one frame with :func:`render_overlay` and encode it.

        Args:
            frame: RGB uint8 ``[H, W, 3]``; every frame must have the size of the first.
            label_map: uint8 ``[H, W]``, ``0`` background, ``k`` object ``k``.
            points: points to draw, or None.
        """
        self._video.write(render_overlay(frame, label_map, points, self.alpha, self.radius), "rgb24")

    def close(self) -> None:
        """Finish the video and move it to ``path``. Closing twice is harmless."""
        self._video.close()


def _draw_points(image: np.ndarray, drawing: PointsDrawing, colour: tuple[int, int, int], radius: int) -> None:
    scale = 1 << _SHIFT
    r = max(1, round(radius * scale))
    for (x, y), visible, positive in zip(np.asarray(drawing.xy, dtype=np.float64), drawing.visible, drawing.positive):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        centre = (round(x * scale), round(y * scale))
        if visible:
            _draw_marker(image, centre, r, colour, -1, positive)
            _draw_marker(image, centre, r, _WHITE, 1, positive)
        else:
            _draw_marker(image, centre, r, _BLACK, 3, positive)
            _draw_marker(image, centre, r, colour, 1, positive)


def _draw_marker(
    image: np.ndarray, centre: tuple[int, int], r: int, colour: tuple[int, int, int], thickness: int, positive: bool
) -> None:
    """A circle (positive) or square (negative) of half-size ``r``, in ``_SHIFT`` fixed point."""
    if positive:
        cv2.circle(image, centre, r, colour, thickness, cv2.LINE_AA, _SHIFT)
    else:
        x, y = centre
        cv2.rectangle(image, (x - r, y - r), (x + r, y + r), colour, thickness, cv2.LINE_AA, _SHIFT)
